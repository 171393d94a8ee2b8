"""Every topic Wenming owns, in one place: logical name, partitions, key and what flows on it.

Physical name = `<settings.topic_prefix>.<logical name>`, e.g. `wenming.inspection.issue`.
Records are keyed by aggregate (stream) id, so one aggregate's events stay in order on one
partition while aggregates spread over all partitions.
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
