"""Per-camera diagnostics for the installer: how often a visitor's face was usable, and how large faces are.

A camera mounted too high, too far or against the light shows up as visits without a usable face and as
face sizes piled up in the small bins; the histogram says where to move it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

# Face size (shorter side of the box, pixels) bin edges; the last bin is open.
SIZE_BINS = (0, 40, 60, 80, 120, 160, 240)


@dataclass
class CameraDiagnostics:
    camera: str
    frames: int = 0
    frames_with_face: int = 0
    frames_skipped_locked: int = 0
    errors: int = 0
    visits: int = 0
    visits_with_usable_face: int = 0
    decisions: Counter = field(default_factory=Counter)
    rejections: Counter = field(default_factory=Counter)  # why faces could not vote
    size_counts: np.ndarray = field(default_factory=lambda: np.zeros(len(SIZE_BINS), dtype=np.int64))

    def face(self, size: float) -> None:
        self.size_counts[int(np.searchsorted(SIZE_BINS, size, side="right")) - 1] += 1

    def visit_ended(self, good_frames: int) -> None:
        self.visits += 1
        self.visits_with_usable_face += good_frames > 0

    def to_dict(self) -> dict:
        labels = [f"{lo}-{hi}" for lo, hi in zip(SIZE_BINS, SIZE_BINS[1:])] + [f"{SIZE_BINS[-1]}+"]
        return {
            "camera": self.camera, "frames": self.frames, "frames_with_face": self.frames_with_face,
            "frames_skipped_locked": self.frames_skipped_locked, "errors": self.errors, "visits": self.visits,
            "visits_with_usable_face": self.visits_with_usable_face,
            "usable_visit_share": round(self.visits_with_usable_face / self.visits, 4) if self.visits else None,
            "decisions": dict(self.decisions), "face_rejections": dict(self.rejections),
            "face_size_histogram": dict(zip(labels, (int(c) for c in self.size_counts))),
        }
