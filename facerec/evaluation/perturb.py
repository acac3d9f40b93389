"""Whole-frame photometric and camera perturbations (lighting, white balance, blur, JPEG) for liveness
stress tests (`benchmarks/liveness_stress.py`) and for choosing MiniFASNet's colour normalisation on
calibration data (`scripts/minifasnet_calibrate.py`). Each takes and returns an RGB uint8 frame."""

from __future__ import annotations

import cv2
import numpy as np


def _lut(rgb: np.ndarray, f) -> np.ndarray:
    table = np.clip(f(np.arange(256, dtype=np.float64) / 255.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(rgb, table)


def _gains(rgb: np.ndarray, gains: tuple[float, float, float]) -> np.ndarray:
    return np.clip(rgb.astype(np.float32) * np.float32(gains) + 0.5, 0, 255).astype(np.uint8)


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


PERTURBATIONS = {
    "clean": lambda x: x,
    "brightness x0.5": lambda x: _lut(x, lambda v: v * 0.5),
    "brightness x0.7": lambda x: _lut(x, lambda v: v * 0.7),
    "brightness x1.3": lambda x: _lut(x, lambda v: v * 1.3),
    "brightness x1.6": lambda x: _lut(x, lambda v: v * 1.6),
    "gamma 0.6": lambda x: _lut(x, lambda v: v ** 0.6),
    "gamma 1.5": lambda x: _lut(x, lambda v: v ** 1.5),
    "gamma 2.0": lambda x: _lut(x, lambda v: v ** 2.0),
    "white balance warm (R x1.2, B x0.8)": lambda x: _gains(x, (1.2, 1.0, 0.8)),
    "white balance cool (R x0.8, B x1.2)": lambda x: _gains(x, (0.8, 1.0, 1.2)),
    "white balance green (G x1.2)": lambda x: _gains(x, (0.9, 1.2, 0.9)),
    "blur sigma 1": lambda x: cv2.GaussianBlur(x, (0, 0), 1.0),
    "blur sigma 2": lambda x: cv2.GaussianBlur(x, (0, 0), 2.0),
    "blur sigma 4": lambda x: cv2.GaussianBlur(x, (0, 0), 4.0),
    "JPEG quality 50": lambda x: _jpeg(x, 50),
    "JPEG quality 20": lambda x: _jpeg(x, 20),
    "JPEG quality 10": lambda x: _jpeg(x, 10),
}

# The lighting changes a colour normalisation should withstand (used to choose it on calibration data).
LIGHTING = ("white balance warm (R x1.2, B x0.8)", "white balance cool (R x0.8, B x1.2)",
            "white balance green (G x1.2)", "brightness x1.6", "gamma 2.0")
