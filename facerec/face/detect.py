"""Face detection results as plain data, with the score/size filters and the close-up fix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

# A face whose box runs this far past the frame edge gets re-detected on a padded frame: MTCNN's
# landmarks go wrong on close-ups cut by the border.
EDGE_PAD_FRACTION = 0.25


@dataclass(frozen=True)
class Detection:
    box: np.ndarray  # x1, y1, x2, y2 (pixels, float)
    score: float
    landmarks: np.ndarray  # 5 x 2: left eye, right eye, nose, mouth left, mouth right

    @property
    def size(self) -> float:
        """The shorter side of the box, in pixels."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))

    def to_dict(self) -> dict:
        return {
            "box": [round(float(v), 1) for v in self.box],
            "score": round(self.score, 4),
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks],
        }


def detect_faces(
    detector, rgb: np.ndarray, min_score: float = 0.9, min_size: float = 20
) -> list[Detection]:
    """All faces with score >= min_score and box side >= min_size, largest first."""
    return detect_faces_many(detector, [rgb], min_score, min_size)[0]


def detect_faces_many(
    detector, images: Sequence[np.ndarray], min_score: float = 0.9, min_size: float = 20
) -> list[list[Detection]]:
    """`detect_faces` for many photos: one batch through a detector that takes many (`detect_many`, MTCNN),
    else one photo at a time; photos with a close-up cut by the border are re-detected padded, as one batch."""
    run = getattr(detector, "detect_many", None) or (lambda batch: [detector.detect(rgb) for rgb in batch])
    found = list(run(images))
    redo = [i for i, (boxes, _, _) in enumerate(found) if len(boxes) and _runs_past_edge(boxes, images[i].shape)]
    if redo:
        pads = [int(round(EDGE_PAD_FRACTION * max(images[i].shape[:2]))) for i in redo]
        padded = [cv2.copyMakeBorder(images[i], p, p, p, p, cv2.BORDER_REPLICATE) for i, p in zip(redo, pads)]
        for i, pad, (boxes, scores, points) in zip(redo, pads, run(padded)):
            found[i] = (boxes - pad, scores, points - pad)
    return [_kept(boxes, scores, points, min_score, min_size) for boxes, scores, points in found]


def _kept(boxes: np.ndarray, scores: np.ndarray, points: np.ndarray, min_score: float,
          min_size: float) -> list[Detection]:
    faces = [
        Detection(box=b, score=float(s), landmarks=p)
        for b, s, p in zip(boxes, scores, points)
        if s >= min_score
    ]
    faces = [f for f in faces if f.size >= min_size]
    return sorted(faces, key=lambda f: f.area, reverse=True)


def _runs_past_edge(boxes: np.ndarray, shape: tuple[int, ...]) -> bool:
    height, width = shape[:2]
    return bool(
        np.any(boxes[:, 0] < 0) or np.any(boxes[:, 1] < 0)
        or np.any(boxes[:, 2] > width) or np.any(boxes[:, 3] > height)
    )
