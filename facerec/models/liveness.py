"""Presentation-attack detection (liveness): is the face in front of the camera a live person or a print?

Several models are declared under `facerec/weights/` (cards of kind "liveness", chosen by id through
`get_liveness_model(model_id)`; all answer `score`, `score_batch` and `decide(rgb, detection)`):
- `minifasnet-v2`, `minifasnet-v1se`: the pretrained MiniFASNets of Silent-Face-Anti-Spoofing (Apache-2.0,
  training data undisclosed), ported in `facerec.models.minifasnet`; each looks at a wide crop (2.7 / 4.0 times
  the face box) the way the original code cut it around its RetinaFace box, which the card's `box_adapter`
  reconstructs from facerec's MTCNN box;
- `minifasnet-fusion`: the mean of the two (the original code's rule) at its own threshold;
- `texture-v2`: the project's earlier hand-crafted colour-texture model, kept for comparison. The evidence a
  printed photo leaves is around and on the face more than in its identity (paper edges, flat texture, print
  colour gamut); it describes context crops (box x1.0, x1.5, optionally white-balanced by a wide x3 crop) by
  texture and colour statistics (`FEATURE_GROUPS`) and a logistic regression gives `P(live)`. It does not
  generalise to a new session (ACER ~28% on NUAA session 03): see its MODEL_CARD.md.

Every model declares its input, weights file and sha256, licence, training data, threshold and where the
threshold came from in its card; weights load lazily on first use. A face is accepted as live when
`score >= threshold`. `DEFAULT_LIVENESS_MODEL` is the model `get_liveness_model()` returns.

This module sits in the models layer: it takes a detection as any object with a `box` attribute
(x1, y1, x2, y2 pixels; `facerec.face.detect.Detection` is one) or a bare box, and never imports `facerec.face`.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facerec.models.base import WEIGHTS_ROOT, read_card, verify_weights

LIVENESS_FOLDER = WEIGHTS_ROOT / "liveness"

# Reason code carried by a refused (spoof) decision.
SPOOF_REASON = "spoof"


# ---------------------------------------------------------------------------------------------------------
# Crops
# ---------------------------------------------------------------------------------------------------------


def _box_of(detection: Any) -> np.ndarray:
    box = getattr(detection, "box", detection)
    box = np.asarray(box, dtype=np.float64).reshape(-1)
    if box.size != 4 or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"not a face box (x1, y1, x2, y2): {box}")
    return box


def context_crops(rgb: np.ndarray, detection: Any, scales: Sequence[float], size: int) -> list[np.ndarray]:
    """Square crops centred on the face box, of side `scale * max(box width, box height)`, each resized to
    `size x size` (uint8 RGB). Parts outside the frame are filled by replicating the frame's border."""
    box = _box_of(detection)
    height, width = rgb.shape[:2]
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    side = max(box[2] - box[0], box[3] - box[1])
    crops = []
    for scale in scales:
        s = max(2, int(round(side * scale)))
        x0, y0 = int(round(cx - s / 2.0)), int(round(cy - s / 2.0))
        x1, y1 = x0 + s, y0 + s
        pad_l, pad_t = max(0, -x0), max(0, -y0)
        pad_r, pad_b = max(0, x1 - width), max(0, y1 - height)
        region = rgb[max(0, y0) : min(height, y1), max(0, x0) : min(width, x1)]
        if region.size == 0:
            raise ValueError(f"face box {box} lies outside the {width}x{height} frame")
        if pad_l or pad_t or pad_r or pad_b:
            region = cv2.copyMakeBorder(region, pad_t, pad_b, pad_l, pad_r, cv2.BORDER_REPLICATE)
        interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
        crops.append(np.ascontiguousarray(cv2.resize(region, (size, size), interpolation=interp)))
    return crops


# ---------------------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------------------

# Uniform LBP(8, 1): the 58 codes with at most two 0/1 transitions get their own bin, all others share bin 58.
_LBP_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


def _uniform_table() -> np.ndarray:
    table = np.full(256, 58, dtype=np.intp)
    nxt = 0
    for code in range(256):
        bits = [(code >> i) & 1 for i in range(8)]
        if sum(bits[i] != bits[(i + 1) % 8] for i in range(8)) <= 2:
            table[code] = nxt
            nxt += 1
    return table


_UNIFORM = _uniform_table()
LBP_BINS = 59


def lbp_histograms(channels: np.ndarray, radius: int = 1) -> np.ndarray:
    """Normalised uniform LBP(8, radius) histograms of each channel of an H x W x C uint8 image (C x 59)."""
    img = channels.astype(np.int16)
    h, w = img.shape[:2]
    r = radius
    centre = img[r : h - r, r : w - r]
    codes = np.zeros(centre.shape, dtype=np.uint8)
    for bit, (dy, dx) in enumerate(_LBP_OFFSETS):
        neighbour = img[r + dy * r : h - r + dy * r, r + dx * r : w - r + dx * r]
        codes |= (neighbour >= centre).astype(np.uint8) << bit
    labels = _UNIFORM[codes]  # (h', w', C)
    n_ch = labels.shape[2]
    flat = labels.reshape(-1, n_ch) + np.arange(n_ch) * LBP_BINS
    hist = np.bincount(flat.ravel(), minlength=n_ch * LBP_BINS).reshape(n_ch, LBP_BINS).astype(np.float64)
    return hist / hist.sum(axis=1, keepdims=True)


def _moments(values: np.ndarray) -> np.ndarray:
    """Mean, standard deviation and skewness of each column (values scaled to [0, 1])."""
    values = values.astype(np.float32)
    mean = values.mean(axis=0)
    centred = values - mean
    sq = centred * centred
    var = sq.mean(axis=0)
    std = np.sqrt(var)
    skew = (sq * centred).mean(axis=0) / np.maximum(std, 1e-3) ** 3
    return np.concatenate([mean, std, np.clip(skew, -10, 10)]).astype(np.float64)


def _radial_spectrum(gray: np.ndarray, bands: int) -> np.ndarray:
    """Log energy of the windowed 2-D spectrum in `bands` rings of normalised frequency, minus the total."""
    n = gray.shape[0]
    window = np.outer(np.hanning(n), np.hanning(n))
    g = (gray - gray.mean()) * window
    power = np.abs(np.fft.fftshift(np.fft.fft2(g))) ** 2
    yy, xx = np.mgrid[:n, :n] - n // 2
    radius = np.sqrt(xx**2 + yy**2) / (n / 2.0)
    idx = np.minimum((radius * bands).astype(np.intp), bands)  # the corners beyond the Nyquist ring: `bands`
    energy = np.bincount(idx.ravel(), weights=power.ravel(), minlength=bands + 1)[:bands]
    log_e = np.log(energy + 1e-6)
    return log_e - np.log(power.sum() + 1e-6)


def _lbp(ycrcb: np.ndarray, hsv: np.ndarray, radius: int) -> np.ndarray:
    # Hellinger map (square root) of the histograms: linear models separate histograms better.
    return np.sqrt(lbp_histograms(np.concatenate([ycrcb, hsv], axis=2), radius)).ravel()


def _colour_moments(ycrcb: np.ndarray, hsv: np.ndarray) -> np.ndarray:
    return _moments(np.concatenate([ycrcb, hsv], axis=2).reshape(-1, 6) / np.float32(255.0))


def _chroma_histograms(ycrcb: np.ndarray, hsv: np.ndarray, bins: int = 16) -> np.ndarray:
    """Square-rooted 16-bin histograms of Cr, Cb, hue and saturation (the print gamut's colour shift)."""
    planes = (ycrcb[..., 1], ycrcb[..., 2], hsv[..., 0], hsv[..., 1])
    tops = (256, 256, 180, 256)  # OpenCV's 8-bit hue runs 0..179
    out = []
    for plane, top in zip(planes, tops):
        idx = (plane.astype(np.intp) * bins) // top
        hist = np.bincount(idx.ravel(), minlength=bins).astype(np.float64)
        out.append(np.sqrt(hist / hist.sum()))
    return np.concatenate(out)


def _sharpness(gray: np.ndarray) -> np.ndarray:
    lap = cv2.Laplacian(gray, cv2.CV_32F)
    gx, gy = cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1)
    return np.log(np.array([lap.var(), (gx * gx + gy * gy).mean()], dtype=np.float64) + 1e-8)


def _specular(hsv: np.ndarray) -> np.ndarray:
    v, s = hsv[..., 2], hsv[..., 1]
    return np.array([np.mean((v > 230) & (s < 40)), np.mean(v > 245)], dtype=np.float64)


# name -> (function of (ycrcb, hsv, gray float32 in [0, 1]), length)
FEATURE_GROUPS = {
    "lbp": (lambda ycc, hsv, gray: _lbp(ycc, hsv, 1), 6 * LBP_BINS),
    "lbp2": (lambda ycc, hsv, gray: _lbp(ycc, hsv, 2), 6 * LBP_BINS),
    "colour": (lambda ycc, hsv, gray: _colour_moments(ycc, hsv), 18),
    "chroma_hist": (lambda ycc, hsv, gray: _chroma_histograms(ycc, hsv), 64),
    "sharpness": (lambda ycc, hsv, gray: _sharpness(gray), 2),
    "specular": (lambda ycc, hsv, gray: _specular(hsv), 2),
    "spectrum": (lambda ycc, hsv, gray: _radial_spectrum(gray.astype(np.float64), 8), 8),
}


def crop_features(crop: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """Texture, colour and frequency statistics of one RGB uint8 crop: the named `FEATURE_GROUPS`, in order."""
    ycrcb = cv2.cvtColor(crop, cv2.COLOR_RGB2YCrCb)
    hsv = cv2.cvtColor(crop, cv2.COLOR_RGB2HSV)
    gray = ycrcb[..., 0].astype(np.float32) / np.float32(255.0)
    return np.concatenate([FEATURE_GROUPS[g][0](ycrcb, hsv, gray) for g in groups])


# Grey-world illuminant normalisation: the scene's colour cast is estimated from a wide, small context crop
# (the face box x3, 32 px) and divided out of every crop, so colour statistics describe the face relative to
# its surroundings rather than the room's light.
ILLUMINANT_SCALE = 3.0
ILLUMINANT_SIZE = 32
NORMALISATIONS = ("none", "grey_world")


def grey_world_gains(reference: np.ndarray) -> np.ndarray:
    """Per-channel gains that make the reference crop's mean grey (clipped to [0.5, 2])."""
    means = reference.reshape(-1, 3).astype(np.float32).mean(axis=0) + 1.0
    return np.clip(means.mean() / means, 0.5, 2.0).astype(np.float32)


def apply_gains(crop: np.ndarray, gains: np.ndarray) -> np.ndarray:
    return np.clip(crop.astype(np.float32) * gains + 0.5, 0, 255).astype(np.uint8)


def features_from_crops(
    crops: Sequence[np.ndarray], reference: np.ndarray | None, groups: Sequence[str], normalise: str = "none"
) -> np.ndarray:
    """`crop_features` of each context crop, concatenated; with `normalise="grey_world"` the crops are first
    white-balanced by `grey_world_gains(reference)`."""
    if normalise == "grey_world":
        if reference is None:
            raise ValueError("grey_world normalisation needs the reference crop")
        gains = grey_world_gains(reference)
        crops = [apply_gains(c, gains) for c in crops]
    elif normalise != "none":
        raise ValueError(f"unknown normalisation {normalise!r} (known: {', '.join(NORMALISATIONS)})")
    return np.concatenate([crop_features(c, groups) for c in crops])


def face_features(
    rgb: np.ndarray, detection: Any, scales: Sequence[float], size: int, groups: Sequence[str],
    normalise: str = "none",
) -> np.ndarray:
    """The feature vector of one face in a whole frame, laid out as the classifier expects."""
    crops = context_crops(rgb, detection, scales, size)
    reference = None
    if normalise == "grey_world":
        reference = context_crops(rgb, detection, (ILLUMINANT_SCALE,), ILLUMINANT_SIZE)[0]
    return features_from_crops(crops, reference, groups, normalise)


# ---------------------------------------------------------------------------------------------------------
# The declared model
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LivenessCard:
    """A liveness model's declaration (`facerec/weights/<folder>/model.json`, kind "liveness")."""

    id: str
    version: str
    kind: str  # "liveness": not an embedding model
    architecture: str
    input: dict[str, Any]  # {"colour": "RGB", "scales": [...], "size": N, "box": "..."}
    normalisation: dict[str, Any]
    weights_file: str | None  # None for a fusion of other models
    weights_sha256: str | None
    weights_licence: str
    training_data: str
    training_data_licence: str
    provenance: str
    threshold: float  # P(live) at or above which a face is accepted as live
    threshold_provenance: str
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def scales(self) -> tuple[float, ...]:
        return tuple(float(s) for s in self.input["scales"])

    @property
    def size(self) -> int:
        return int(self.input["size"])

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.input["features"])

    @property
    def normalise(self) -> str:
        return str(self.input.get("normalise", "none"))

    @classmethod
    def load(cls, folder: Path) -> "LivenessCard":
        raw = read_card(Path(folder) / "model.json", "liveness")
        known = set(cls.__dataclass_fields__)
        extra = {k: raw.pop(k) for k in list(raw) if k not in known}
        return cls(extra={**raw.pop("extra", {}), **extra}, **raw)


@dataclass(frozen=True)
class LivenessDecision:
    """A liveness verdict: `is_live` when `score >= threshold`; a refusal carries `reason = "spoof"`."""

    is_live: bool
    score: float  # P(live)
    threshold: float
    reason: str | None = None  # None when live, SPOOF_REASON when refused

    @classmethod
    def from_score(cls, score: float, threshold: float) -> "LivenessDecision":
        live = bool(score >= threshold)
        return cls(is_live=live, score=float(score), threshold=float(threshold), reason=None if live else SPOOF_REASON)

    def to_dict(self) -> dict:
        return {
            "is_live": self.is_live,
            "score": round(self.score, 4),
            "threshold": round(self.threshold, 4),
            "reason": self.reason,
        }


class LivenessModel:
    """The colour-texture presentation-attack detector (`texture-v2`). Weights load lazily on the first score;
    thread-safe."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else LIVENESS_FOLDER
        self.card = LivenessCard.load(self.folder)
        self._lock = threading.Lock()
        self._params: dict[str, np.ndarray] | None = None

    @property
    def threshold(self) -> float:
        return self.card.threshold

    @property
    def weights_path(self) -> Path:
        return self.folder / self.card.weights_file

    def _ensure(self) -> dict[str, np.ndarray]:
        with self._lock:
            if self._params is None:
                data = _checked_weights(self.weights_path, self.card.weights_sha256)
                with np.load(io.BytesIO(data)) as npz:
                    params = {k: np.asarray(npz[k], dtype=np.float64) for k in ("mean", "scale", "coef", "intercept")}
                if params["coef"].shape != params["mean"].shape:
                    raise ValueError(f"{self.weights_path}: coef and mean differ in shape")
                self._params = params
        return self._params

    def features(self, rgb: np.ndarray, detection: Any) -> np.ndarray:
        """The feature vector the classifier sees for this face (for training and inspection)."""
        return face_features(
            rgb, detection, self.card.scales, self.card.size, self.card.features, self.card.normalise
        )

    def score_features(self, features: np.ndarray) -> np.ndarray:
        """P(live) for each row of a feature matrix (N x D)."""
        p = self._ensure()
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if x.shape[1] != p["coef"].size:
            raise ValueError(f"expected {p['coef'].size} features, got {x.shape[1]}")
        logits = ((x - p["mean"]) / p["scale"]) @ p["coef"] + float(p["intercept"].reshape(-1)[0])
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0)))

    def score(self, rgb_frame: np.ndarray, detection: Any) -> float:
        """P(live) of the face `detection` (a `Detection` or an x1, y1, x2, y2 box) in the whole RGB frame.

        Pass the full camera frame, not a tight crop: the context around the face is part of the evidence.
        """
        return float(self.score_features(self.features(rgb_frame, detection)[None])[0])

    def score_batch(self, rgb_frames: Sequence[np.ndarray] | np.ndarray, detections: Sequence[Any]) -> np.ndarray:
        """P(live) of each (frame, detection) pair; one frame may be passed once for several detections."""
        rgb_frames = _paired(rgb_frames, detections)
        if not len(detections):
            return np.zeros((0,), dtype=np.float64)
        x = np.stack([self.features(f, d) for f, d in zip(rgb_frames, detections)])
        return self.score_features(x)

    def decide(self, rgb_frame: np.ndarray, detection: Any, threshold: float | None = None) -> LivenessDecision:
        """Live or spoof, at the model's declared threshold unless one is given."""
        t = self.threshold if threshold is None else float(threshold)
        return LivenessDecision.from_score(self.score(rgb_frame, detection), t)


def _checked_weights(path: Path, sha256: str) -> bytes:
    return verify_weights(path, sha256, path.parent.name).read_bytes()


def _paired(rgb_frames: Sequence[np.ndarray] | np.ndarray, detections: Sequence[Any]) -> Sequence[np.ndarray]:
    if isinstance(rgb_frames, np.ndarray) and rgb_frames.ndim == 3:
        rgb_frames = [rgb_frames] * len(detections)
    if len(rgb_frames) != len(detections):
        raise ValueError(f"{len(rgb_frames)} frames for {len(detections)} detections")
    return rgb_frames


# ---------------------------------------------------------------------------------------------------------
# MiniFASNet (pretrained, Silent-Face-Anti-Spoofing) and the fusion of two of them
# ---------------------------------------------------------------------------------------------------------


def adapt_box(detection: Any, adapter: dict[str, Any] | None) -> list[int]:
    """The box MiniFASNet was trained around ([left, top, width, height] ints, the original's RetinaFace
    convention) from facerec's MTCNN box (x1, y1, x2, y2).

    The adapter (declared in the card, fitted by `scripts/minifasnet_calibrate.py`) moves the centre by
    (centre_x * width, centre_y * height) and scales width and height; without one the MTCNN box is used as
    it is."""
    x1, y1, x2, y2 = _box_of(detection)
    w, h = x2 - x1, y2 - y1
    a = adapter or {}
    cx = (x1 + x2) / 2.0 + float(a.get("centre_x", 0.0)) * w
    cy = (y1 + y2) / 2.0 + float(a.get("centre_y", 0.0)) * h
    w, h = w * float(a.get("width", 1.0)), h * float(a.get("height", 1.0))
    return [int(cx - w / 2.0), int(cy - h / 2.0), max(1, int(w)), max(1, int(h))]


class MiniFASNetModel:
    """One MiniFASNet (V2 or V1SE) declared by its card: P(live) = softmax class 1 of the crop the original
    code would cut around the adapted MTCNN box. Weights load lazily on the first score; thread-safe."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.card = LivenessCard.load(self.folder)
        self._lock = threading.Lock()
        self._net: Any = None

    @property
    def threshold(self) -> float:
        return self.card.threshold

    @property
    def scale(self) -> float:
        return float(self.card.input["crop_scale"])

    @property
    def size(self) -> tuple[int, int]:
        w, h = self.card.input["size"]
        return int(w), int(h)

    def _ensure(self) -> Any:
        with self._lock:
            if self._net is None:
                import torch

                from facerec.models.minifasnet import MiniFASNet
                from facerec.models.runtime import configure_torch

                configure_torch()
                data = _checked_weights(self.folder / self.card.weights_file, self.card.weights_sha256)
                with np.load(io.BytesIO(data)) as npz:
                    state = {k: torch.from_numpy(np.asarray(npz[k], dtype=np.float32)) for k in npz.files}
                net = MiniFASNet(str(self.card.extra["variant"]))
                missing, unexpected = net.load_state_dict(state, strict=False)
                if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
                    raise ValueError(f"{self.folder}: weights do not fit {self.card.extra['variant']} "
                                     f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
                self._net = net.eval()
        return self._net

    def crop(self, rgb_frame: np.ndarray, detection: Any) -> np.ndarray:
        """The network's input for one face: uint8 BGR, size x size."""
        from facerec.models.minifasnet import minifasnet_crop

        box = adapt_box(detection, self.card.input.get("box_adapter"))
        crop = minifasnet_crop(np.ascontiguousarray(rgb_frame[..., ::-1]), box, self.scale, self.size[0])
        return self.normalise_colour(crop)

    def normalise_colour(self, crop: np.ndarray) -> np.ndarray:
        """The card's `input.colour_normalise`: "grey_world" divides out the crop's own colour cast (gains
        clipped to [0.5, 2]) so a warm or cool light does not read as a print's colour; "none" keeps the
        original input."""
        how = self.card.input.get("colour_normalise", "none")
        if how == "grey_world":
            return apply_gains(crop, grey_world_gains(crop))
        if how != "none":
            raise ValueError(f"{self.folder}: unknown colour_normalise {how!r} (known: {', '.join(NORMALISATIONS)})")
        return crop

    def score_crops(self, crops: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """P(live) of each BGR crop (N x 80 x 80 x 3 uint8)."""
        import torch

        from facerec.models.minifasnet import to_input

        net = self._ensure()
        with torch.inference_mode():
            return torch.softmax(net(to_input(crops)), dim=1)[:, 1].double().numpy()

    def score_batch(self, rgb_frames: Sequence[np.ndarray] | np.ndarray, detections: Sequence[Any]) -> np.ndarray:
        rgb_frames = _paired(rgb_frames, detections)
        if not len(detections):
            return np.zeros((0,), dtype=np.float64)
        return self.score_crops(np.stack([self.crop(f, d) for f, d in zip(rgb_frames, detections)]))

    def score(self, rgb_frame: np.ndarray, detection: Any) -> float:
        """P(live) of the face `detection` in the whole RGB frame (the crop reaches well beyond the face)."""
        return float(self.score_batch([rgb_frame], [detection])[0])

    def decide(self, rgb_frame: np.ndarray, detection: Any, threshold: float | None = None) -> LivenessDecision:
        t = self.threshold if threshold is None else float(threshold)
        return LivenessDecision.from_score(self.score(rgb_frame, detection), t)


class FusionModel:
    """The mean P(live) of member models (the original code averages V2's and V1SE's softmax), at the
    fusion card's own threshold."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.card = LivenessCard.load(self.folder)
        self.members = [get_liveness_model(m) for m in self.card.extra["members"]]

    @property
    def threshold(self) -> float:
        return self.card.threshold

    def score_batch(self, rgb_frames: Sequence[np.ndarray] | np.ndarray, detections: Sequence[Any]) -> np.ndarray:
        return np.mean([m.score_batch(rgb_frames, detections) for m in self.members], axis=0)

    def score(self, rgb_frame: np.ndarray, detection: Any) -> float:
        return float(np.mean([m.score(rgb_frame, detection) for m in self.members]))

    def decide(self, rgb_frame: np.ndarray, detection: Any, threshold: float | None = None) -> LivenessDecision:
        t = self.threshold if threshold is None else float(threshold)
        return LivenessDecision.from_score(self.score(rgb_frame, detection), t)


# ---------------------------------------------------------------------------------------------------------
# Which liveness models exist
# ---------------------------------------------------------------------------------------------------------

# The default: chosen by measurement (BENCHMARKS.md, "Liveness on an unseen session"; the choice and its
# numbers are in the chosen card's `metrics`).
DEFAULT_LIVENESS_MODEL = "minifasnet-v2"
RUNTIMES = {"texture": LivenessModel, "minifasnet": MiniFASNetModel, "fusion": FusionModel}


def liveness_models() -> dict[str, Path]:
    """id -> folder of every card under `facerec/weights/` of kind "liveness"."""
    found = {}
    for card in sorted(WEIGHTS_ROOT.glob("*/model.json")):
        raw = json.loads(card.read_text())
        if raw.get("kind") == "liveness":
            found[str(raw["id"])] = card.parent
    return found


@lru_cache(maxsize=8)
def get_liveness_model(model_id: str | None = None) -> LivenessModel | MiniFASNetModel | FusionModel:
    """The shared liveness model `model_id` (default `DEFAULT_LIVENESS_MODEL`), weights unloaded until the
    first score. Every model has `score`, `score_batch`, `threshold` and `decide(rgb, detection)`."""
    from facerec.errors import ModelError

    model_id = model_id or DEFAULT_LIVENESS_MODEL
    known = liveness_models()
    if model_id not in known:
        raise ModelError(f"unknown liveness model {model_id!r} (available: {', '.join(sorted(known))})")
    card = json.loads((known[model_id] / "model.json").read_text())
    runtime = card.get("runtime", "texture")
    if runtime not in RUNTIMES:
        raise ModelError(f"liveness model {model_id!r} declares unknown runtime {runtime!r}")
    return RUNTIMES[runtime](known[model_id])
