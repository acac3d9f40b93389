"""Face detection results as plain data, with the score/size filters and the close-up fix."""

from __future__ import annotations

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
    boxes, scores, points = detector.detect(rgb)
    if len(boxes) and _runs_past_edge(boxes, rgb.shape):
        boxes, scores, points = _detect_padded(detector, rgb)
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


def _detect_padded(detector, rgb: np.ndarray):
    pad = int(round(EDGE_PAD_FRACTION * max(rgb.shape[:2])))
    padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    boxes, scores, points = detector.detect(padded)
    return boxes - pad, scores, points - pad
