"""YuNet through OpenCV (`cv2.FaceDetectorYN`): a fast CPU face detector with MTCNN's five landmarks.

Why: on a door camera MTCNN is most of a frame's time. YuNet is a 76k-parameter CNN (OpenCV Zoo, MIT)
returning boxes, a score and the same five landmarks in the same order as MTCNN (left eye, right eye, nose,
mouth left, mouth right as the viewer sees them), so alignment, the quality gate and liveness work unchanged.
Everything it needs is declared in `facerec/weights/yunet/model.json` (weights file + sha256, licence,
provenance, score threshold); the ONNX file is read on first use, never at import.

Its own landmarks differ from MTCNN's by about a tenth of the eye distance (mouth corners sit higher), enough
to move embeddings of faces enrolled through MTCNN (`benchmarks/kiosk_detectors.py`, BENCHMARKS.md). With
`refine=True` each YuNet box is handed to MTCNN's own last stage (O-Net, facenet-pytorch's bundled weights,
MIT), exactly as MTCNN hands it its R-Net boxes: the landmarks then come from the same network as at
enrollment, for about a millisecond per face.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import cv2
import numpy as np

from facerec.models.base import WEIGHTS_ROOT

YUNET_FOLDER = WEIGHTS_ROOT / "yunet"


class YuNetDetector:
    """Same interface as `MTCNNDetector`: `detect(rgb)` -> boxes (N,4 x1,y1,x2,y2), scores (N,), landmarks (N,5,2).

    `scale` < 1 detects on a downscaled frame (door faces are large, and YuNet is trained on faces up to
    about 300 px) and maps results back to the frame. One OpenCV net per detector, used under a lock.
    """

    def __init__(self, scale: float = 1.0, refine: bool = False, folder: Path = YUNET_FOLDER) -> None:
        if not 0.1 <= scale <= 1.0:
            raise ValueError(f"scale {scale} outside 0.1..1")
        self.scale = float(scale)
        self.folder = Path(folder)
        self.card = json.loads((self.folder / "model.json").read_text())
        self.min_score = float(self.card["score_threshold"])
        self.refine = refine
        self._onet = None
        self._net = None
        self._lock = threading.Lock()

    def _ensure(self):
        if self._net is None:
            path = self.folder / self.card["weights_file"]
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if digest != self.card["weights_sha256"]:
                raise ValueError(f"{path}: sha256 {digest} differs from model.json's {self.card['weights_sha256']}")
            # from the checked bytes, not the path: what runs is what was hashed
            self._net = cv2.FaceDetectorYN.create("onnx", np.frombuffer(data, np.uint8), np.zeros(0, np.uint8),
                                                  (320, 320), self.min_score, float(self.card["nms_threshold"]))
        return self._net

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if self.scale != 1.0:
            h, w = bgr.shape[:2]
            bgr = cv2.resize(bgr, (max(1, round(w * self.scale)), max(1, round(h * self.scale))),
                             interpolation=cv2.INTER_AREA)
        with self._lock:
            net = self._ensure()
            net.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, faces = net.detect(bgr)
        if faces is None or len(faces) == 0:
            return np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, 5, 2))
        faces = faces.astype(np.float64)
        boxes = np.concatenate([faces[:, :2], faces[:, :2] + faces[:, 2:4]], axis=1)
        points = faces[:, 4:14].reshape(-1, 5, 2)
        # pixel centres of the detection frame -> pixel centres of the full frame
        inv = 1.0 / self.scale
        boxes, points = (boxes + 0.5) * inv - 0.5, (points + 0.5) * inv - 0.5
        if self.refine:
            boxes, points = self._onet_refine(rgb, boxes)
        return boxes, faces[:, 14], points

    def _onet_refine(self, rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """MTCNN's third stage on these boxes: square them, crop, 48x48 area resample, O-Net; returns the
        regressed boxes and O-Net's landmarks (facenet-pytorch `detect_face` stage 3, without its score cut
        and NMS: YuNet already decided that these are faces)."""
        import torch
        from facenet_pytorch.models.mtcnn import ONet
        from facenet_pytorch.models.utils.detect_face import bbreg, imresample, pad, rerec

        from facerec.models.runtime import configure_torch

        with self._lock:
            if self._onet is None:
                configure_torch()
                self._onet = ONet(pretrained=True).eval()
        h, w = rgb.shape[:2]
        with torch.inference_mode():
            img = torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1)  # a writable copy
            b = rerec(torch.as_tensor(boxes, dtype=torch.float32).clone())
            y, ey, x, ex = pad(b, w, h)
            crops = torch.cat([imresample(img[:, y[k] - 1:ey[k], x[k] - 1:ex[k]].unsqueeze(0), (48, 48))
                               for k in range(len(b))])
            reg, pts, _ = self._onet((crops - 127.5) * 0.0078125)
            bw, bh = b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
            px = bw[:, None] * pts[:, :5] + b[:, 0:1] - 1
            py = bh[:, None] * pts[:, 5:] + b[:, 1:2] - 1
            refined = bbreg(torch.cat([b, torch.zeros(len(b), 1)], dim=1), reg)[:, :4]
        return refined.numpy().astype(np.float64), torch.stack([px, py], dim=2).numpy().astype(np.float64)
