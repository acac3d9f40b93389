"""facenet-pytorch's MTCNN with its bundled weights (MIT), loaded lazily; declared in weights/mtcnn/model.json."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

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


class MTCNNNetworks:
    """MTCNN's three networks (P-net, R-net, O-net) with the weights our card declares, loaded once on first
    use, on `device` (default: the GPU when present). Detection over them: facerec.face.mtcnn_batch."""

    def __init__(self, device: str | None = None) -> None:
        self.device_name = device
        self._net = None
        self._lock = threading.Lock()

    def load(self):
        """facenet-pytorch's MTCNN module: `.pnet`, `.rnet`, `.onet` in eval mode and `.device`."""
        with self._lock:
            if self._net is None:
                configure_torch()
                verify_package_weights()
                import torch
                from facenet_pytorch import MTCNN

                device = self.device_name or ("cuda" if torch.cuda.is_available() else "cpu")
                self._net = MTCNN(keep_all=True, post_process=False, device=device).eval()
        return self._net
