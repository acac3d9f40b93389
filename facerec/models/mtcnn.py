"""facenet-pytorch's MTCNN with its bundled weights (MIT), loaded lazily; declared in weights/mtcnn/model.json."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from facerec.models.base import WEIGHTS_ROOT, read_card, verify_weights
from facerec.models.runtime import configure_torch

CARD = WEIGHTS_ROOT / "mtcnn" / "model.json"


def verify_package_weights() -> None:
    """Check facenet-pytorch's bundled files against the sha256 our card declares (a replaced file fails)."""
    card = read_card(CARD, "detector")
    spec = importlib.util.find_spec("facenet_pytorch")
    data = Path(spec.origin).parent / "data"
    for name, sha256 in card["files"].items():
        verify_weights(data / name, sha256, card["id"])


class MTCNNDetector:
    """Returns boxes (N,4 x1,y1,x2,y2), scores (N,) and landmarks (N,5,2) as float arrays."""

    def __init__(self, min_face_size: int = 20, device: str | None = None) -> None:
        self.min_face_size = int(min_face_size)
        self.device = device
        self._net = None
        self._lock = threading.Lock()

    def _ensure(self):
        with self._lock:
            if self._net is None:
                configure_torch()
                verify_package_weights()
                import torch
                from facenet_pytorch import MTCNN

                device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
                self._net = MTCNN(
                    keep_all=True, min_face_size=self.min_face_size, post_process=False, device=device
                )
        return self._net

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if min(rgb.shape[:2]) < self.min_face_size:
            # no face of the minimum size fits, and facenet-pytorch's image pyramid would be empty (torch.cat error)
            return np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, 5, 2))
        net = self._ensure()
        import torch

        with torch.inference_mode():
            boxes, probs, points = net.detect(rgb, landmarks=True)
        if boxes is None:
            return np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, 5, 2))
        # facenet-pytorch 2.6.0 with numpy 2 can return dtype=object arrays.
        return (
            np.asarray(boxes.tolist(), dtype=np.float64).reshape(-1, 4),
            np.asarray(probs.tolist(), dtype=np.float64).reshape(-1),
            np.asarray(points.tolist(), dtype=np.float64).reshape(-1, 5, 2),
        )
