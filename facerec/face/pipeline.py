"""The face pipeline: image → detections → aligned crops → embeddings (+ quality), one image or many."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from facerec.errors import MultipleFacesError, NoFaceError
from facerec.face.align import align_face
from facerec.face.detect import Detection, detect_faces, detect_faces_many
from facerec.face.mtcnn_batch import MTCNNDetector
from facerec.face.quality import QualityPolicy, QualityReport, assess
from facerec.face.selection import select_subject
from facerec.io import ImageInput, load_image
from facerec.io.images import DEFAULT_MAX_PIXELS
from facerec.models.base import EmbeddingModel
from facerec.models.runtime import configure_torch


@dataclass(frozen=True)
class Face:
    detection: Detection
    crop: np.ndarray
    embedding: np.ndarray
    quality: QualityReport

    def to_dict(self) -> dict:
        return {**self.detection.to_dict(), "quality": self.quality.to_dict()}


@dataclass(frozen=True)
class ImageFaces:
    """One decoded image and every face in it (largest first)."""

    rgb: np.ndarray
    faces: list[Face]

    def subject(self, label: str, choose_subject: bool = False) -> Face:
        """The one face a verification or enrollment photo must hold (facerec.face.selection's rule)."""
        selection = select_subject([f.detection for f in self.faces], self.rgb.shape)
        if selection is None:
            raise NoFaceError(f"{label}: no face found")
        if selection.ambiguous and not choose_subject:
            raise MultipleFacesError(
                f"{label}: {selection.prominent} faces found where one is required "
                f"(crop the photo, or pass --subject to use the most central of them)"
            )
        return next(f for f in self.faces if f.detection is selection.subject)


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
        max_pixels: int = DEFAULT_MAX_PIXELS,
        torch_threads: int = 1,
    ) -> None:
        configure_torch(torch_threads)  # process-wide: the first pipeline of the process sets it
        self.model = model
        self.detector = shared_detector(max(12, int(min_size)))
        self.min_score = min_score
        self.min_size = min_size
        self.max_pixels = max_pixels
        self.quality_policy = quality_policy or QualityPolicy.load()
        # Flip fusion (embed the face and its mirror image) as the model declares, unless overridden.
        self.flip_fusion = bool(model.card.extra.get("flip_fusion", False)) if flip_fusion is None else flip_fusion

    def load(self, image: ImageInput) -> np.ndarray:
        return load_image(image, max_pixels=self.max_pixels)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        return detect_faces(self.detector, rgb, self.min_score, self.min_size)

    def faces(self, image: ImageInput) -> list[Face]:
        """Every face in the image, largest first, each aligned, embedded and quality-assessed."""
        return self.analyse(image).faces

    def analyse(self, image: ImageInput) -> ImageFaces:
        rgb = self.load(image)
        return ImageFaces(rgb, self.faces_in(rgb, self.detect(rgb)))

    def analyse_many(self, images: Sequence[np.ndarray]) -> list[ImageFaces]:
        """Decoded images → faces: one detection batch (MTCNN over size buckets) and one embedding batch for
        all their faces (cheaper than one of each per image)."""
        found = list(zip(images, detect_faces_many(self.detector, images, self.min_score, self.min_size)))
        crops = [align_face(rgb, d.landmarks, self.model.template) for rgb, dets in found for d in dets]
        embeddings = self.model.embed(np.stack(crops), flip_fusion=self.flip_fusion) if crops else []
        results, k = [], 0
        for rgb, dets in found:
            faces = [Face(d, crops[k + i], embeddings[k + i], assess(d, rgb, self.quality_policy))
                     for i, d in enumerate(dets)]
            k += len(dets)
            results.append(ImageFaces(rgb, faces))
        return results

    def faces_in(self, rgb: np.ndarray, detections: list[Detection]) -> list[Face]:
        if not detections:
            return []
        crops = np.stack([align_face(rgb, d.landmarks, self.model.template) for d in detections])
        embeddings = self.model.embed(crops, flip_fusion=self.flip_fusion)
        return [
            Face(d, c, e, assess(d, rgb, self.quality_policy))
            for d, c, e in zip(detections, crops, embeddings)
        ]

    def single_face(self, image: ImageInput, choose_subject: bool = False, label: str | None = None) -> Face:
        """The one face a verification or enrollment photo must hold (`label` names it in errors)."""
        return self.analyse(image).subject(label or _describe(image), choose_subject)


def _describe(image: ImageInput) -> str:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return "<upload>"
    return str(image) if isinstance(image, str) or hasattr(image, "__fspath__") else "image"
