"""Benchmark: deliveries per second from the ledger to the in-app inbox and to a local webhook
receiver (each delivery: claim, send, confirm, NotificationSent through the outbox).

`python -m bench.notify` runs it alone in a fresh database (bench.common.bench_run);
`STEPS` plugs it into `python -m bench`. Sizes: BENCH_NOTIFY_INBOX (default 5000) and
BENCH_NOTIFY_WEBHOOK (default 2000).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from uuid import uuid4

from aiohttp import web

from bench.common import BenchRun, Figure, Figures, Step, bench_run, describe, env_int, free_port, per_second
from services.notify.config import NotifyConfig
from services.notify.domain import Planned, RetryPolicy, delivery_id
from services.notify.ledger import insert_planned
from services.notify.worker import Dispatcher

describe(
    Figure("notify_inbox_dps", "deliveries/s", "ledger -> in-app inbox, confirmed with NotificationSent"),
    Figure("notify_webhook_dps", "deliveries/s", "ledger -> signed webhook POST to a loopback receiver, confirmed"),
)


def _planned(n: int, channel: str, address: str) -> list[Planned]:
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        event_id = uuid4()
        rid = f"bench-{i % 500}"
        out.append(
            Planned(
                delivery_id=delivery_id(event_id, rid, channel),
                event_id=event_id,
                event_type="IssueAssigned",
                rule="issue-assigned",
                rules_version=1,
                recipient_id=rid,
                channel=channel,  # type: ignore[arg-type]
                address=address if channel != "inbox" else rid,
                language="zh",
                subject="【创城交办】文泉社区03网格sanitation问题，请于2026-11-25 18:00前整改",
                body="王磊：文泉社区03网格发现一般问题：沿街垃圾未及时清运。已交办urban-management，请立即整改。",
                urgent=False,
                not_before=now,
                grid_path="changtai/wuan/c01/g03",
            )
        )
    return out


async def _drain(run: BenchRun, cfg: NotifyConfig, planned: list[Planned]) -> float:
    async with run.pool.acquire() as conn:
        for start in range(0, len(planned), 1000):
            await insert_planned(conn, planned[start : start + 1000])
    dispatcher = Dispatcher(run.settings, run.pool, cfg, policy=RetryPolicy(0.05, 0.5, 5))
    t0 = time.perf_counter()
    try:
        while await dispatcher.dispatch_once():
            pass
    finally:
        await dispatcher.channels.aclose()
    elapsed = time.perf_counter() - t0
    async with run.pool.acquire() as conn:
        sent = await conn.fetchval(
            "SELECT count(*) FROM notify_deliveries WHERE status = 'sent' AND delivery_id = ANY($1)",
            [p.delivery_id for p in planned],
        )
    if sent != len(planned):
        raise RuntimeError(f"only {sent} of {len(planned)} deliveries sent")
    return per_second(len(planned), elapsed)


async def notify_bench(run: BenchRun) -> Figures:
    n_inbox = env_int("BENCH_NOTIFY_INBOX", 5000)
    n_hook = env_int("BENCH_NOTIFY_WEBHOOK", 2000)
    cfg = NotifyConfig(claim_batch=500, concurrency=32, webhook_secret="bench-secret")
    received = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal received
        await request.read()
        received += 1
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        inbox = await _drain(run, cfg, _planned(n_inbox, "inbox", ""))
        hook = await _drain(run, cfg, _planned(n_hook, "webhook", f"http://127.0.0.1:{port}/hook"))
    finally:
        await runner.cleanup()
    run.info.update({"notify_inbox_n": n_inbox, "notify_webhook_n": n_hook, "notify_webhook_received": received})
    return {"notify_eps": round(inbox, 1), "notify_inbox_dps": round(inbox, 1), "notify_webhook_dps": round(hook, 1)}


STEPS = [Step("notify", notify_bench, "notify deliveries per second: inbox and a loopback webhook receiver")]


async def _main() -> None:
    async with bench_run() as run:
        figures = await notify_bench(run)
    for key, value in figures.items():
        print(f"{key:22} {value:>10.1f} deliveries/s   ({run.info})")


if __name__ == "__main__":
    asyncio.run(_main())
