"""What every embedding model declares, read from its `model.json` beside the weights.

A model folder under `facerec/weights/<id>/` holds `model.json` (the declaration below), the weights file and
the weights' licence. Metadata is declared there, never guessed from the weights.
"""

from __future__ import annotations

import hashlib
import json
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facerec.errors import ModelError

WEIGHTS_ROOT = Path(__file__).resolve().parent.parent / "weights"

# The five landmarks, in the order MTCNN returns them (image left/right as seen by the viewer).
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True)
class AlignmentTemplate:
    """Where the five landmarks land in the model's input crop (pixels, x then y)."""

    width: int
    height: int
    points: tuple[tuple[float, float], ...]

    def as_array(self) -> np.ndarray:
        return np.asarray(self.points, dtype=np.float64)


@dataclass(frozen=True)
class ModelCard:
    """The declaration in `model.json`."""

    id: str
    version: str
    architecture: str
    embedding_dim: int
    template: AlignmentTemplate
    input_colour: str  # "RGB" or "BGR"
    normalisation: dict[str, Any]
    weights_file: str
    weights_sha256: str
    weights_licence: str
    training_data: str
    training_data_licence: str
    provenance: str
    default_threshold: float  # cosine similarity; used until a calibration is stored
    threshold_provenance: str
    lfw_accuracy: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path) -> "ModelCard":
        raw = read_card(folder / "model.json", "embedding")
        raw.pop("kind", None)
        tpl = raw.pop("template")
        template = AlignmentTemplate(
            width=int(tpl["width"]),
            height=int(tpl["height"]),
            points=tuple((float(x), float(y)) for x, y in tpl["points"]),
        )
        known = {f for f in cls.__dataclass_fields__ if f != "template"}
        extra = {k: raw.pop(k) for k in list(raw) if k not in known}
        return cls(template=template, extra={**raw.pop("extra", {}), **extra}, **raw)


class EmbeddingModel(ABC):
    """A face embedder: aligned RGB uint8 crops in, L2-normalised float32 embeddings out."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.card = ModelCard.load(folder)
        self._lock = threading.Lock()
        self._loaded = False

    @property
    def id(self) -> str:
        return self.card.id

    @property
    def template(self) -> AlignmentTemplate:
        return self.card.template

    @property
    def embedding_dim(self) -> int:
        return self.card.embedding_dim

    @property
    def weights_path(self) -> Path:
        return self.folder / self.card.weights_file

    def ensure_loaded(self) -> None:
        with self._lock:
            if not self._loaded:
                verify_weights(self.weights_path, self.card.weights_sha256, self.id)
                self._load()
                self._loaded = True

    def embed(self, crops: np.ndarray, flip_fusion: bool = False) -> np.ndarray:
        """Embed a batch of aligned crops (N x H x W x 3, uint8, RGB) into unit vectors (N x D)."""
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        expected = (self.template.height, self.template.width, 3)
        if crops.shape[1:] != expected:
            raise ValueError(f"{self.id} expects crops of shape {expected}, got {crops.shape[1:]}")
        if len(crops) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        self.ensure_loaded()
        vectors = self._embed(crops)
        if flip_fusion:
            vectors = vectors + self._embed(np.ascontiguousarray(crops[:, :, ::-1]))
        return l2_normalise(vectors)

    @abstractmethod
    def _load(self) -> None:
        """Load weights (called once, lazily)."""

    @abstractmethod
    def _embed(self, crops: np.ndarray) -> np.ndarray:
        """Raw (unnormalised) embeddings of uint8 RGB crops."""


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def verify_weights(path: Path, sha256: str, model_id: str) -> Path:
    """The weights file, checked against the sha256 its card declares (every model kind loads through this)."""
    try:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise ModelError(f"model {model_id!r}: cannot read weights {path} ({exc.strerror})") from None
    if digest != sha256:
        raise ModelError(f"model {model_id!r}: weights {path} have sha256 {digest[:16]}…, its card declares "
                         f"{sha256[:16]}… (damaged or replaced file: reinstall facerec)")
    return Path(path)


# What every card declares, whatever the kind: what it is, which file, its sha256, licence and provenance.
CARD_FIELDS = ("id", "version", "weights_licence", "provenance")
CARD_KINDS = ("embedding", "detector", "liveness", "verifier")


def write_card(path: Path, card: dict[str, Any]) -> None:
    """Write a converter's fresh card, keeping what was measured since the last conversion: a calibrated
    default threshold with its provenance, and the evaluation notes in `extra` (fresh keys win)."""
    path = Path(path)
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("threshold_provenance", "uncalibrated") != "uncalibrated":
            card["default_threshold"] = old["default_threshold"]
            card["threshold_provenance"] = old["threshold_provenance"]
        card["extra"] = {**old.get("extra", {}), **card["extra"]}
    path.write_text(json.dumps(card, indent=2) + "\n")


def read_card(path: Path, kind: str) -> dict[str, Any]:
    """Read and check a model card (JSON) of any kind; a missing or malformed card is a `ModelError`.

    Every kind shares one format: the fields of CARD_FIELDS, `kind` (embedding when absent, for the first
    cards), and the weights as `weights_file` + `weights_sha256`, or `files` {name: sha256}, or (a fusion)
    `members`, the ids of the cards it combines; each kind adds
    its own fields (an embedder its template and normalisation, a liveness model its crops and threshold).
    """
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ModelError(f"model card {path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise ModelError(f"model card {path}: not valid JSON ({exc})") from None
    declared = raw.get("kind", "embedding")
    missing = [f for f in CARD_FIELDS if not raw.get(f)]
    if not (raw.get("weights_sha256") and raw.get("weights_file")) and not raw.get("files") \
            and not raw.get("members"):
        missing.append("weights_file + weights_sha256 (or files, or the member models of a fusion)")
    if declared != kind or declared not in CARD_KINDS or missing:
        problem = f"declares kind {declared!r}, expected {kind!r}" if declared != kind else f"lacks {', '.join(missing)}"
        raise ModelError(f"model card {path}: {problem}")
    return raw
