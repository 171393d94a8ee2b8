"""Every topic Wenming owns, in one place: logical name, partitions, key and what flows on it.

Physical name = `<settings.topic_prefix>.<logical name>`, e.g. `wenming.inspection.issue`.
Records are keyed by aggregate (stream) id, so one aggregate's events stay in order on one
partition while aggregates spread over all partitions.

Partition counts live here and nowhere else (`ensure_topics` creates topics from them; on a
three-broker cluster every topic gets replication factor 3 and min.insync.replicas 2).
Rule for adding partitions (deploy/SCALING.md explains the sizes):
- Only ever increase a count, never decrease it, and only when the topic's busiest consumer
  group needs more parallel instances than partitions (one partition feeds one instance) or a
  partition exceeds about 5 MB/s; prefer multiples of 12 (12, 24, 48, 96).
- Adding partitions moves keys: `hash(key) % n` changes, so a stream's later events may land on
  another partition than its earlier ones. Do it with the writers quiesced: stop the outbox
  relay, wait until every consumer group of the topic has no lag, raise the count
  (kafka-topics --alter --partitions N, then change the number here in the same commit), then
  start the relay again. Consumers need no change: the projection runner stores offsets per
  partition and dedupes by event id, and new partitions start from their beginning.
- A new count is a contract change for subscribers that rely on per-key order: say so in the
  commit and the topic's changelog.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    key: str
    description: str
    compacted: bool = False


TOPICS: dict[str, TopicSpec] = {
    t.name: t
    for t in [
        TopicSpec("inspection.inspection", 6, "inspection id", "Inspections conducted by campaign teams."),
        TopicSpec("inspection.issue", 12, "issue id", "Issue lifecycle: found, assigned, rectified, closed, overdue."),
        TopicSpec("inspection.standards", 1, "standards table id", "Changes to the standards table (一图一标准)."),
        TopicSpec(
            "inspection.inbound", 6, "department code", "IssueFound-shaped records from departments' own systems."
        ),
        TopicSpec("scoring.results", 6, "grid path", "Published daily scores, weekly summaries, red/black lists."),
        TopicSpec("volunteer.site", 3, "site id", "Practice centres, institutes and stations."),
        TopicSpec("volunteer.volunteer", 6, "volunteer id", "Volunteer register (masked personal data)."),
        TopicSpec("volunteer.activity", 6, "activity id", "Activities: planned, held, reviewed; hours credited."),
        TopicSpec("volunteer.project", 3, "project id", "Volunteer service projects and contest rounds."),
        TopicSpec("volunteer.honour", 3, "nomination id", "Honour nominations and awards."),
        TopicSpec("volunteer.points", 6, "household id", "Village civility points awarded and redeemed."),
        TopicSpec("volunteer.title", 3, "title id", "Creation titles awarded, reviewed and revoked."),
        TopicSpec("notify.delivery", 6, "notification id", "Notification deliveries: sent and failed."),
        TopicSpec("deadletter", 3, "source topic", "Records a consumer could not use, with the reason in headers."),
        TopicSpec("test.events", 6, "stream id", "Events of the platform's own tests and benchmarks."),
    ]
}
