"""The face pipeline: image → detections → aligned crops → embeddings (+ quality when asked)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from facerec.errors import MultipleFacesError, NoFaceError
from facerec.face.align import align_face
from facerec.face.detect import Detection, detect_faces
from facerec.face.quality import QualityPolicy, QualityReport, assess
from facerec.io import ImageInput, load_image
from facerec.models.base import EmbeddingModel
from facerec.models.mtcnn import MTCNNDetector


@dataclass(frozen=True)
class Face:
    detection: Detection
    crop: np.ndarray
    embedding: np.ndarray
    quality: QualityReport

    def to_dict(self) -> dict:
        return {**self.detection.to_dict(), "quality": self.quality.to_dict()}


@lru_cache(maxsize=4)
def shared_detector(min_face_size: int) -> MTCNNDetector:
    return MTCNNDetector(min_face_size=min_face_size)


class FacePipeline:
    def __init__(
        self,
        model: EmbeddingModel,
        min_score: float = 0.9,
        min_size: float = 20,
        quality_policy: QualityPolicy | None = None,
        flip_fusion: bool | None = None,
    ) -> None:
        self.model = model
        self.detector = shared_detector(max(12, int(min_size)))
        self.min_score = min_score
        self.min_size = min_size
        self.quality_policy = quality_policy or QualityPolicy.load()
        # Flip fusion (embed the face and its mirror image) as the model declares, unless overridden.
        self.flip_fusion = bool(model.card.extra.get("flip_fusion", False)) if flip_fusion is None else flip_fusion

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        return detect_faces(self.detector, rgb, self.min_score, self.min_size)

    def faces(self, image: ImageInput) -> list[Face]:
        """Every face in the image, largest first, each aligned, embedded and quality-assessed."""
        rgb = load_image(image)
        return self.faces_in(rgb, self.detect(rgb))

    def faces_in(self, rgb: np.ndarray, detections: list[Detection]) -> list[Face]:
        if not detections:
            return []
        crops = np.stack([align_face(rgb, d.landmarks, self.model.template) for d in detections])
        embeddings = self.model.embed(crops, flip_fusion=self.flip_fusion)
        return [
            Face(d, c, e, assess(d, rgb, self.quality_policy))
            for d, c, e in zip(detections, crops, embeddings)
        ]

    def single_face(self, image: ImageInput, largest: bool = False, label: str | None = None) -> Face:
        """The one face a verification or enrollment photo must hold (`label` names it in errors)."""
        faces = self.faces(image)
        name = label or _describe(image)
        if not faces:
            raise NoFaceError(f"{name}: no face found")
        if len(faces) > 1 and not largest:
            raise MultipleFacesError(
                f"{name}: {len(faces)} faces found where one is required (crop the photo or pass --largest)"
            )
        return faces[0]


def _describe(image: ImageInput) -> str:
    return str(image) if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__") else "image"
