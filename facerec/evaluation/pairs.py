"""The pairs protocol through the whole pipeline (detect, align, embed): LFW-style verification numbers.

Each image is embedded once. The face used is the subject (facerec.face.selection: the most central of the
large faces; LFW centres its named person). An image where no face passes the normal detector settings is retried with
relaxed ones (score >= 0.5, side >= 12 px); if that fails too, every pair using it scores -1 (a reject),
and the count is reported, never hidden.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from facerec.decisions import metrics
from facerec.decisions.scorers import CosineScorer, Scorer
from facerec.evaluation.lfw_protocol import Pair, labels_and_folds
from facerec.face.align import align_face
from facerec.face.detect import detect_faces
from facerec.face.pipeline import FacePipeline
from facerec.face.selection import select_subject
from facerec.io import load_image

RELAXED_SCORE = 0.5
RELAXED_SIZE = 12
FAILED_SCORE = -1.0


@dataclass
class EmbeddedImages:
    embeddings: dict[Path, np.ndarray]
    relaxed: list[Path] = field(default_factory=list)  # found only with relaxed detection
    failed: list[Path] = field(default_factory=list)  # no face at all


@dataclass
class AlignedCrops:
    """The aligned crop of the central face of each image (detection is the slow part: done once)."""

    crops: dict[Path, np.ndarray]
    relaxed: list[Path] = field(default_factory=list)
    failed: list[Path] = field(default_factory=list)


def align_images(pipeline: FacePipeline, paths: Sequence[Path],
                 progress: Callable[[int], None] | None = None) -> AlignedCrops:
    result = AlignedCrops(crops={})
    for path in paths:
        rgb = load_image(path)
        faces = pipeline.detect(rgb)
        if not faces:
            faces = detect_faces(pipeline.detector, rgb, RELAXED_SCORE, RELAXED_SIZE)
            if faces:
                result.relaxed.append(path)
        if faces:
            result.crops[path] = align_face(rgb, select_subject(faces, rgb.shape).subject.landmarks, pipeline.model.template)
        else:
            result.failed.append(path)
        if progress is not None:
            progress(1)
    return result


def cached_alignment(pipeline: FacePipeline, paths: Sequence[Path], cache_dir: Path | None,
                     progress: Callable[[int], None] | None = None) -> AlignedCrops:
    """`align_images`, memoised on disk per (template, detector settings, image list)."""
    if cache_dir is None:
        return align_images(pipeline, paths, progress)
    key = hashlib.sha256(json.dumps({
        "template": pipeline.model.template.points, "size": [pipeline.model.template.width,
                                                             pipeline.model.template.height],
        "detector": [pipeline.min_score, pipeline.min_size, RELAXED_SCORE, RELAXED_SIZE],
        "paths": [str(p) for p in paths],
    }).encode()).hexdigest()[:20]
    file = Path(cache_dir) / f"crops-{key}.npz"
    if file.exists():
        data = np.load(file, allow_pickle=False)
        found = [Path(p) for p in data["found"]]
        if progress is not None:
            progress(len(paths))
        return AlignedCrops(dict(zip(found, data["crops"])), [Path(p) for p in data["relaxed"]],
                            [Path(p) for p in data["failed"]])
    aligned = align_images(pipeline, paths, progress)
    file.parent.mkdir(parents=True, exist_ok=True)
    found = list(aligned.crops)
    tmp = file.with_suffix(".tmp.npz")
    np.savez(tmp, found=np.array([str(p) for p in found]),
             crops=np.stack([aligned.crops[p] for p in found]) if found else np.zeros((0, 1, 1, 3), np.uint8),
             relaxed=np.array([str(p) for p in aligned.relaxed]), failed=np.array([str(p) for p in aligned.failed]))
    os.replace(tmp, file)
    return aligned


def embed_images(pipeline: FacePipeline, paths: Sequence[Path],
                 progress: Callable[[int], None] | None = None, cache_dir: Path | None = None,
                 batch: int = 64) -> EmbeddedImages:
    """Embed the central face of every image (flip fusion as the pipeline says)."""
    aligned = cached_alignment(pipeline, paths, cache_dir, progress)
    keys = list(aligned.crops)
    vectors = [pipeline.model.embed(np.stack([aligned.crops[k] for k in keys[i:i + batch]]),
                                    flip_fusion=pipeline.flip_fusion) for i in range(0, len(keys), batch)]
    embeddings = dict(zip(keys, np.concatenate(vectors))) if vectors else {}
    return EmbeddedImages(embeddings, aligned.relaxed, aligned.failed)


@dataclass
class PairsReport:
    model_id: str
    scorer: str
    pairs: int
    genuine: int
    impostor: int
    folds: int
    accuracy_mean: float | None
    accuracy_std: float | None
    roc_auc: float
    eer: float
    eer_threshold: float
    tar_at_far: dict[str, float]
    failed_images: int
    relaxed_detections: int
    failed_pairs: int
    failure_handling: str = (
        "no face at normal settings: retried at score>=0.5, side>=12 px; still none: the pair scores -1 (reject)"
    )

    def to_dict(self) -> dict:
        return asdict(self)


def pair_scores(pairs: Sequence[Pair], embedded: EmbeddedImages, scorer: Scorer | None = None) -> tuple[np.ndarray, int]:
    """Score every pair; a pair with an image without a face is a reject: -1 for cosine, else one below
    the lowest measured score (-1 is mid-range for -chi-square or a logit)."""
    scorer = scorer or CosineScorer()
    e = embedded.embeddings
    ok = np.array([p.path_a in e and p.path_b in e for p in pairs], dtype=bool)
    scores = np.full(len(pairs), FAILED_SCORE)
    if ok.any():
        kept = [p for p, k in zip(pairs, ok) if k]
        scores[ok] = scorer.score(np.stack([e[p.path_a] for p in kept]), np.stack([e[p.path_b] for p in kept]))
        if scorer.name != "cosine":
            scores[~ok] = scores[ok].min() - 1.0
    return scores, int((~ok).sum())


def evaluate_pairs(pipeline: FacePipeline, pairs: Sequence[Pair], progress: Callable[[int], None] | None = None,
                   cache_dir: Path | None = None, scorer: Scorer | None = None,
                   ) -> tuple[PairsReport, np.ndarray, np.ndarray]:
    """Embed every image once, score every pair; returns the report, the scores and the labels."""
    paths = sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})
    embedded = embed_images(pipeline, paths, progress, cache_dir)
    scorer = scorer or CosineScorer()
    scores, failed_pairs = pair_scores(pairs, embedded, scorer)
    labels, folds = labels_and_folds(pairs)
    n_folds = len(np.unique(folds))
    mean = std = None
    if n_folds > 1:
        mean, std, _, _ = metrics.kfold_accuracy(scores, labels, folds)
    roc = metrics.roc_curve(scores, labels)
    eer_value, eer_threshold = metrics.eer(scores, labels)
    report = PairsReport(
        model_id=pipeline.model.id, scorer=scorer.name, pairs=len(pairs), genuine=int(labels.sum()),
        impostor=int(len(labels) - labels.sum()), folds=n_folds,
        accuracy_mean=None if mean is None else float(mean), accuracy_std=None if std is None else float(std),
        roc_auc=float(roc.auc), eer=float(eer_value), eer_threshold=float(eer_threshold),
        tar_at_far={str(far): float(metrics.tar_at_far(scores, labels, far)) for far in (1e-2, 1e-3)},
        failed_images=len(embedded.failed), relaxed_detections=len(embedded.relaxed), failed_pairs=failed_pairs,
    )
    return report, scores, labels


def write_plots(folder: Path, runs: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> list[Path]:
    """ROC and DET PNGs of one or more scored runs (name → (scores, labels))."""
    from facerec.decisions.plots import plot_det, plot_roc

    folder.mkdir(parents=True, exist_ok=True)
    curves = {name: metrics.roc_curve(s, l) for name, (s, l) in runs.items()}
    return [plot_roc(curves, folder / "roc.png", title=f"ROC: {title}"),
            plot_det(curves, folder / "det.png", title=f"DET: {title}")]
