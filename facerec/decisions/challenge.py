"""Head-turn challenge: an active liveness check the kiosk runs over a few seconds of frames.

Why: the passive model judges one frame and was tested on printed photos only; a flat photo or a screen held
still cannot turn its head on request. The kiosk asks "turn your head left, then right", feeds each frame's
five MTCNN landmarks to `HeadTurnChallenge.update`, and fuses the result with the passive score
(`combined_liveness`). A replayed video of the right head movement would pass: this raises the cost of an
attack, it does not close it.

Yaw from five landmarks (`yaw_degrees`): after undoing the roll (eye line made horizontal), the nose tip's
horizontal offset from the face's midline (the line from the eyes' midpoint to the mouth's midpoint, taken at
the nose's height), in units of the eye distance, is r ~ (nose depth / eye distance) * tan(yaw) for a face
turning about a vertical axis; with the nose tip ~0.4 eye distances in front of the eye-mouth plane
(`NOSE_DEPTH`, a rough adult average), yaw = atan(r / 0.4). It is an estimate (degrees good to perhaps 10-20%),
enough to tell a clear turn from a frontal face.

Directions are the subject's own: "left" is the person turning to their left, which moves the nose toward the
image's right in an unmirrored camera frame (pass `mirrored=True` for frames already flipped for display).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from facerec.models.liveness import SPOOF_REASON, LivenessDecision

NOSE_DEPTH = 0.4  # nose tip in front of the eye-mouth plane, in eye distances (rough adult average)
DIRECTIONS = ("left", "right")
CHALLENGE_REASON = "challenge_failed"


def yaw_degrees(landmarks: Sequence[Sequence[float]] | np.ndarray, mirrored: bool = False) -> float:
    """Estimated yaw of a face from its 5 landmarks (left eye, right eye, nose, mouth left, mouth right as
    MTCNN returns them, image pixels): positive when the subject turns to their left."""
    p = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    if not np.isfinite(p).all():
        raise ValueError("landmarks must be finite")
    eye_l, eye_r, nose, mouth_l, mouth_r = p
    d = eye_r - eye_l
    iod = float(np.hypot(*d))
    if iod < 1e-6:
        raise ValueError("the two eye landmarks coincide")
    c, s = d / iod  # rotate by -roll so the eye line is horizontal
    rot = np.array([[c, s], [-s, c]])
    eyes, mouth, nose = rot @ ((eye_l + eye_r) / 2), rot @ ((mouth_l + mouth_r) / 2), rot @ nose
    span = mouth[1] - eyes[1]
    t = (nose[1] - eyes[1]) / span if abs(span) > 1e-6 else 0.5
    midline_x = eyes[0] + t * (mouth[0] - eyes[0])
    r = (nose[0] - midline_x) / iod
    yaw = math.degrees(math.atan(r / NOSE_DEPTH))
    return -yaw if mirrored else yaw


@dataclass
class ChallengeResult:
    """Where the challenge stands: `passed` once every turn was seen in order within `max_frames`."""

    state: str  # "waiting", "passed" or "failed"
    sequence: tuple[str, ...]
    completed: int  # turns done, in order
    frames: int  # frames fed so far (frames without a face count: time passes)
    max_frames: int
    peak_yaw: dict[str, float] = field(default_factory=dict)  # strongest yaw seen per direction (degrees)

    @property
    def passed(self) -> bool:
        return self.state == "passed"

    @property
    def expected(self) -> str | None:
        """The turn the kiosk should ask for now (None once decided)."""
        return self.sequence[self.completed] if self.state == "waiting" else None

    def to_dict(self) -> dict:
        return {"state": self.state, "passed": self.passed, "sequence": list(self.sequence),
                "completed": self.completed, "expected": self.expected, "frames": self.frames,
                "max_frames": self.max_frames, "peak_yaw": {k: round(v, 1) for k, v in self.peak_yaw.items()}}


class HeadTurnChallenge:
    """State machine "turn left then right (the subject's own sides) within `max_frames` frames".

    A turn counts when the estimated yaw reaches `turn_degrees` in the asked direction; a turn the other way
    before it does not reset the progress (people overshoot) but does not count either. Once `max_frames`
    frames have been fed without completing the sequence, the challenge fails; a decided challenge ignores
    further frames. At 15 fps, 90 frames = 6 s.
    """

    def __init__(self, sequence: Sequence[str] = DIRECTIONS, max_frames: int = 90, turn_degrees: float = 20.0,
                 mirrored: bool = False) -> None:
        if not sequence or any(s not in DIRECTIONS for s in sequence):
            raise ValueError(f"sequence must be a non-empty list of {DIRECTIONS}")
        if max_frames < len(sequence) or not 0 < turn_degrees < 90:
            raise ValueError("max_frames must allow every turn and turn_degrees lie in (0, 90)")
        self.turn_degrees = float(turn_degrees)
        self.mirrored = mirrored
        self.result = ChallengeResult("waiting", tuple(sequence), 0, 0, int(max_frames),
                                      {d: 0.0 for d in DIRECTIONS})

    def update(self, landmarks: Sequence[Sequence[float]] | np.ndarray | None) -> ChallengeResult:
        """Feed one frame's 5 landmarks (None when no face was found); returns the current result."""
        r = self.result
        if r.state != "waiting":
            return r
        r.frames += 1
        if landmarks is not None:
            yaw = yaw_degrees(landmarks, self.mirrored)
            side = "left" if yaw > 0 else "right"
            r.peak_yaw[side] = max(r.peak_yaw[side], abs(yaw))
            if side == r.sequence[r.completed] and abs(yaw) >= self.turn_degrees:
                r.completed += 1
                if r.completed == len(r.sequence):
                    r.state = "passed"
                    return r
        if r.frames >= r.max_frames:
            r.state = "failed"
        return r


@dataclass(frozen=True)
class CombinedLiveness:
    """The passive score and the challenge together: live only when the passive model accepts the face and,
    where required, the challenge passed."""

    is_live: bool
    passive: LivenessDecision
    challenge: ChallengeResult | None
    reason: str | None  # None, "spoof" (passive refusal) or "challenge_failed"

    def to_dict(self) -> dict:
        return {"is_live": self.is_live, "reason": self.reason, "passive": self.passive.to_dict(),
                "challenge": self.challenge.to_dict() if self.challenge else None}


def challenge_needed(passive: LivenessDecision, margin: float = 0.2) -> bool:
    """Whether to ask for the head turn: the passive verdict is close to its threshold (within `margin` of
    P(live)), where a new camera, light or attack type is most likely to flip it."""
    return passive.score < passive.threshold + margin


def combined_liveness(passive: LivenessDecision, challenge: ChallengeResult | None,
                      require_challenge: bool = False) -> CombinedLiveness:
    """Fuse the passive decision with the challenge: a passive refusal is final; a challenge that was run
    (or is required) must have passed."""
    if not passive.is_live:
        return CombinedLiveness(False, passive, challenge, SPOOF_REASON)
    if challenge is None and not require_challenge:
        return CombinedLiveness(True, passive, None, None)
    ok = challenge is not None and challenge.passed
    return CombinedLiveness(ok, passive, challenge, None if ok else CHALLENGE_REASON)
