"""The visit decision: grant only on agreement of several good frames of one tracked face, else deny or wait.

A frame votes only when its face passes the kiosk's quality gate. Over the last `n` votes of a track:
- **grant** when at least `k` of them name the same person at or above the 1:K (identification) threshold
  with a margin over the runner-up of at least `margin`, liveness passes (mean P(live) of those frames at or
  above the liveness model's threshold, when liveness is checked) and the active check, when one is plugged
  in, has passed;
- **deny "spoof"** when liveness (or the active check) fails once there is a full window;
- **deny "unknown"** when the window is full and no person has `k` agreeing votes;
- otherwise keep watching, until `timeout_s` after the visit's first frame: then deny ("low_quality" when
  fewer than `k` frames were good enough to vote, else "no_consensus").

Parameters come from `facerec/data/kiosk.json`, with their provenance. The active check (a head-turn
challenge, for unattended doors) is a plug-in: anything with `passed: bool | None` and
`update(landmarks, frame_id)`, fed every frame of the track (see `ActiveCheck`).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

POLICY_FILE = Path(__file__).resolve().parent.parent / "data" / "kiosk.json"

GRANT = "grant"
DENY = "deny"


@runtime_checkable
class ActiveCheck(Protocol):
    """A per-track active liveness check (e.g. "turn your head left, then right").

    `update` gets the track's five landmarks (viewer's left eye, right eye, nose, mouth left, mouth right;
    pixels) every frame the face is detected; `passed` is None while undecided, then True or False.
    """

    passed: bool | None

    def update(self, landmarks: np.ndarray, frame_id: int) -> None: ...


@dataclass(frozen=True)
class QualityGate:
    """Which frames may vote (limits on the measurements of `facerec.face.quality`)."""

    min_face_size: float
    min_detection_score: dict[str, float]  # per detector family (mtcnn, yunet): their scores differ in scale
    min_sharpness: float
    max_abs_yaw: float
    pitch_range: tuple[float, float]

    def precheck(self, score: float, size: float, detector: str) -> list[str]:
        """The checks that need no aligned crop (run before embedding, to skip hopeless faces)."""
        out = []
        family = "yunet" if detector.startswith("yunet") else detector
        if score < self.min_detection_score[family]:
            out.append("weak_detection")
        if size < self.min_face_size:
            out.append("small_face")
        return out

    def problems(self, quality, detector: str) -> list[str]:
        """Why a face (its `QualityReport`: detection score, size, sharpness, yaw, pitch) may not vote."""
        out = self.precheck(quality.detection_score, quality.face_size, detector)
        if quality.sharpness < self.min_sharpness:
            out.append("blurred")
        if abs(quality.yaw) > self.max_abs_yaw:
            out.append("turned")
        if not self.pitch_range[0] <= quality.pitch <= self.pitch_range[1]:
            out.append("tilted")
        return out


@dataclass(frozen=True)
class VisitPolicy:
    k: int
    n: int
    margin: float
    timeout_s: float
    track_max_age_s: float
    track_min_iou: float
    cooldown_s: float
    lockout_after: int  # consecutive denials on one camera before it locks
    lockout_base_s: float  # first lockout; doubles with each further denial, up to lockout_max_s
    lockout_max_s: float
    gate: QualityGate
    provenance: str

    @classmethod
    def load(cls, path: Path = POLICY_FILE, **overrides) -> "VisitPolicy":
        raw = json.loads(Path(path).read_text())
        g = raw["quality_gate"]
        gate = QualityGate(float(g["min_face_size"]), {k: float(v) for k, v in g["min_detection_score"].items()},
                           float(g["min_sharpness"]), float(g["max_abs_yaw"]),
                           (float(g["pitch_range"][0]), float(g["pitch_range"][1])))
        values = {k: raw[k] for k in ("k", "n", "margin", "timeout_s", "track_max_age_s", "track_min_iou",
                                      "cooldown_s", "lockout_after", "lockout_base_s", "lockout_max_s")}
        values.update({k: v for k, v in overrides.items() if v is not None})
        policy = cls(gate=gate, provenance=str(raw["provenance"]), **values)
        if not 1 <= policy.k <= policy.n:
            raise ValueError(f"kiosk policy: need 1 <= k <= n, got k={policy.k} n={policy.n}")
        return policy


@dataclass(frozen=True)
class Vote:
    """One good frame's evidence."""

    frame_id: int
    name: str  # the best candidate (even below threshold: agreement is counted on `accepted` votes only)
    score: float
    margin: float
    accepted: bool  # score >= threshold and margin >= policy margin
    live_score: float | None  # P(live) when liveness is checked


@dataclass
class Visit:
    """One tracked face from first sight to its decision."""

    track_id: int
    started: float  # time of the first frame
    first_frame: int
    votes: deque = field(default_factory=deque)
    frames_seen: int = 0
    frames_good: int = 0
    active: ActiveCheck | None = None


@dataclass(frozen=True)
class Verdict:
    decision: str  # "grant" or "deny"
    reason: str  # "" for a grant; "unknown", "spoof", "low_quality", "no_consensus", "left", "error"
    name: str  # the person granted, else "unknown"
    candidate: str  # the agreed or most frequent best candidate (for the audit; a denial never names anyone)
    score: float | None  # mean similarity of the deciding votes
    margin: float | None
    live_score: float | None  # mean P(live) of the deciding votes
    frame_ids: list[int]


def judge(visit: Visit, policy: VisitPolicy, live_threshold: float | None, now: float) -> Verdict | None:
    """The visit's verdict, or None to keep watching. `live_threshold` None: liveness not checked."""
    window = list(visit.votes)[-policy.n:]
    accepted: dict[str, list[Vote]] = {}
    for v in window:
        if v.accepted:
            accepted.setdefault(v.name, []).append(v)
    best_name, agreeing = max(accepted.items(), key=lambda kv: len(kv[1]), default=("unknown", []))
    full = len(window) >= policy.n
    live_votes = agreeing if len(agreeing) >= policy.k else window
    live_mean = _mean([v.live_score for v in live_votes]) if live_threshold is not None else None
    spoof = (live_mean is not None and live_mean < live_threshold) or (
        visit.active is not None and visit.active.passed is False)
    if len(agreeing) >= policy.k:
        if spoof:
            return _verdict(DENY, "spoof", best_name, agreeing, live_mean)
        if visit.active is None or visit.active.passed:
            return _verdict(GRANT, "", best_name, agreeing, live_mean)
    elif full:
        return _verdict(DENY, "spoof" if spoof else "unknown", _top(window), window, live_mean)
    if now - visit.started >= policy.timeout_s:
        reason = "low_quality" if len(window) < policy.k else ("active_check" if agreeing else "no_consensus")
        return _verdict(DENY, reason, _top(window) if window else "unknown", window, live_mean)
    return None


def _top(votes: list[Vote]) -> str:
    """The most frequent best candidate of a window (recorded for the audit; never granted)."""
    names = [v.name for v in votes]
    return max(set(names), key=names.count) if names else "unknown"


def _mean(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return float(np.mean(got)) if got else None


def _verdict(decision: str, reason: str, name: str, votes: list[Vote], live_mean: float | None) -> Verdict:
    return Verdict(decision, reason, name if decision == GRANT else "unknown", name,
                   _mean([v.score for v in votes]), _mean([v.margin for v in votes]), live_mean,
                   [v.frame_id for v in votes])
