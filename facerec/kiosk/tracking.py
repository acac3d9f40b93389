"""Face tracks across frames: the same face in consecutive frames is one visitor, whose frames vote together.

Greedy matching by box IoU, best pairs first; a pair counts only at `min_iou` or more and when the faces'
landmarks (eye distance) differ in scale by less than 2x, so a second person stepping into the same spot
behind the first starts their own track. A track not seen for `max_age_s` ends (the visitor left).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Track:
    id: int
    box: np.ndarray
    landmarks: np.ndarray
    last_seen: float


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _eye_distance(landmarks: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(landmarks)[1] - np.asarray(landmarks)[0])) + 1e-6


class Tracker:
    def __init__(self, min_iou: float = 0.3, max_age_s: float = 1.5) -> None:
        self.min_iou = min_iou
        self.max_age_s = max_age_s
        self.tracks: dict[int, Track] = {}
        self._next = 1

    def update(self, detections: list, now: float) -> tuple[list[int], list[Track]]:
        """Assign each detection (anything with `box` and `landmarks`) a track id; returns the ids in
        detection order and the tracks that ended (not seen for `max_age_s`: ended before matching, so a
        face after a gap is a new visit even on the same spot)."""
        ended = [t for t in self.tracks.values() if now - t.last_seen > self.max_age_s]
        for t in ended:
            del self.tracks[t.id]
        pairs = []
        for di, det in enumerate(detections):
            for tid, track in self.tracks.items():
                overlap = box_iou(det.box, track.box)
                scale = _eye_distance(det.landmarks) / _eye_distance(track.landmarks)
                if overlap >= self.min_iou and 0.5 < scale < 2.0:
                    pairs.append((overlap, di, tid))
        ids: list[int | None] = [None] * len(detections)
        used: set[int] = set()
        for _, di, tid in sorted(pairs, reverse=True):
            if ids[di] is None and tid not in used:
                ids[di] = tid
                used.add(tid)
        for di, det in enumerate(detections):
            if ids[di] is None:
                ids[di] = self._next
                self.tracks[self._next] = Track(self._next, det.box, det.landmarks, now)
                self._next += 1
            track = self.tracks[ids[di]]
            track.box, track.landmarks, track.last_seen = det.box, det.landmarks, now
        return [int(i) for i in ids], ended

    def end_all(self) -> list[Track]:
        ended, self.tracks = list(self.tracks.values()), {}
        return ended
