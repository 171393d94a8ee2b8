"""A subscriber's example: read Wenming's issue topic from the start and print a live problem list.

Needs only aiokafka (pip install aiokafka). Delivery is at least once, so it dedupes by event id.

    python problem_list_consumer.py --bootstrap 127.0.0.1:9092 --topic wenming.inspection.issue
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiokafka import AIOKafkaConsumer

STATUS_AFTER = {
    "IssueFound": "found",
    "IssueAssigned": "assigned",
    "AssignmentReturned": "returned",
    "RectificationReported": "reported",
    "RectificationRejected": "assigned",
    "RectificationClosed": "closed",
    "IssueBacklogged": "backlogged",
    "IssueReopened": "found",
}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="wenming.inspection.issue")
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: run until Ctrl-C)")
    args = parser.parse_args()
    consumer = AIOKafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: set[str] = set()
    issues: dict[str, dict[str, str]] = {}
    until = time.monotonic() + args.seconds if args.seconds else None
    try:
        while until is None or time.monotonic() < until:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    event = json.loads(record.value)
                    if event["event_id"] in seen:  # at least once: the same event may come twice
                        continue
                    seen.add(event["event_id"])
                    payload = event["payload"]
                    issue = issues.setdefault(payload["issue_id"], {"grid": event["grid_path"]})
                    if event["type"] == "IssueFound":
                        issue["category"] = payload["category"]
                    if event["type"] == "IssueAssigned":
                        issue["unit"] = payload["responsible_unit"]
                    if event["type"] == "IssueOverdue":
                        issue["overdue"] = f"step {payload['step']} → {payload['escalated_to']}"
                    issue["status"] = STATUS_AFTER.get(event["type"], issue.get("status", "?"))
                    print(
                        f"{event['occurred_at'][:19]}  {payload['issue_id'][:8]}  {event['type']:<22} "
                        f"{issue['grid']:<24} {issue.get('category', ''):<18} {issue['status']}",
                        flush=True,
                    )
    finally:
        await consumer.stop()
        open_ = sum(1 for i in issues.values() if i.get("status") not in ("closed", "backlogged"))
        print(f"problem list: {len(issues)} issues, {open_} open, {len(seen)} events", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
