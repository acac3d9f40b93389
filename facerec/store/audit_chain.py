"""The audit log as a hash chain: an edited, deleted or inserted event is found by `facerec audit verify`.

Each event stores the hash of the event before it (`prev_hash`) and its own hash over that link and its
content. `facerec_info.audit_head` holds the last event's id and hash, so deleting the newest events is found
too. Events are appended under a lock on that row (SELECT ... FOR UPDATE on PostgreSQL; the write transaction
is BEGIN IMMEDIATE on SQLite), so concurrent writers keep one chain.

What this does not do: someone with write access to the database can recompute the whole chain. Write the
head hash that `audit verify` prints somewhere they cannot reach (a ticket, a printout, another system), and
a later verify proves nothing before it was rewritten.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

GENESIS = "0" * 64
HEAD_KEY = "audit_head"


def canonical_details(details: dict | None) -> dict:
    """Details as they read back from a JSON column (tuples as lists, keys as strings)."""
    return json.loads(json.dumps(details or {}, default=str))


def canonical_time(at: datetime) -> str:
    """UTC with microseconds, whatever the database hands back (naive on SQLite, zoned on PostgreSQL)."""
    if at.tzinfo is not None:
        at = at.astimezone(timezone.utc).replace(tzinfo=None)
    return at.isoformat(timespec="microseconds")


def event_hash(prev_hash: str, at: datetime, action: str, person_name: str | None, outcome: str,
               score: float | None, threshold: float | None, model_id: str | None, details: dict) -> str:
    content = [prev_hash, canonical_time(at), action, person_name, outcome, score, threshold, model_id, details]
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                          .encode()).hexdigest()


def head_value(event_id: int, digest: str) -> str:
    return f"{event_id}:{digest}"


def parse_head(value: str | None) -> tuple[int, str]:
    if not value:
        return 0, GENESIS
    event_id, _, digest = value.partition(":")
    return int(event_id), digest


@dataclass
class ChainReport:
    """What `audit verify` found: events checked, the head, and each problem with the event id it concerns."""

    events: int = 0
    head_id: int = 0
    head_hash: str = GENESIS
    problems: list[dict] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"intact": self.intact, "events": self.events, "head_id": self.head_id, "head_hash": self.head_hash,
                "problems": self.problems}


def verify_chain(rows, head: str | None) -> ChainReport:
    """Walk events in id order: (id, at, action, person_name, outcome, score, threshold, model_id, details,
    prev_hash, hash). An edit breaks the event's own hash; a deletion or insertion breaks the next link."""
    report = ChainReport()
    previous_hash, previous_id = GENESIS, 0
    for (event_id, at, action, person, outcome, score, threshold, model_id, details, prev_hash, digest) in rows:
        report.events += 1
        if prev_hash != previous_hash:
            report.problems.append({"id": event_id, "problem": "link broken",
                                    "detail": f"events missing or inserted between id {previous_id} and {event_id}"})
        recomputed = event_hash(prev_hash or "", at, action, person, outcome, score, threshold, model_id,
                                details or {})
        if recomputed != digest:
            report.problems.append({"id": event_id, "problem": "edited",
                                    "detail": "content does not match its hash"})
        previous_hash, previous_id = digest, event_id
    report.head_id, report.head_hash = previous_id, previous_hash
    stored_id, stored_hash = parse_head(head)
    if (stored_id, stored_hash) != (previous_id, previous_hash):
        report.problems.append({"id": stored_id, "problem": "head mismatch",
                                "detail": f"the chain head records event {stored_id}, the log ends at event "
                                          f"{previous_id}: newest events deleted, or the head was altered"})
    return report
