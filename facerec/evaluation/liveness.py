"""Liveness models compared on folders of bona fide and attack images (`facerec liveness evaluate`).

Every image is read and detected once (MTCNN, the runtime's defaults; its subject, as everywhere) and scored by each
model. The cost of each model's `score` (crop + network) is measured per face as the process's CPU time
(`time.process_time`) with torch on one thread (the default), after one untimed warm-up call that loads the
weights: on a shared machine wall time mostly measures the other processes, CPU time the model. Subsets
(e.g. a NUAA session) are chosen by a glob on the file name. ISO/IEC 30107-3 metrics at each model's declared
threshold.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facerec.config import DEFAULT_MIN_FACE_SCORE, DEFAULT_MIN_FACE_SIZE
from facerec.decisions.liveness_metrics import LivenessReport, liveness_report
from facerec.errors import InputPathError
from facerec.io import image_files, load_image
from facerec.models.liveness import get_liveness_model

ALL = "all"


@dataclass(frozen=True)
class LivenessRow:
    model: str
    subset: str
    report: LivenessReport
    ms_per_face: float  # mean CPU time of the model's score over the subset's faces

    def to_dict(self) -> dict:
        return {"model": self.model, "subset": self.subset, **self.report.to_dict(),
                "ms_per_face": round(self.ms_per_face, 2)}


@dataclass
class LivenessEvaluation:
    models: list[str]
    rows: list[LivenessRow]
    paths: list[str]
    is_live: np.ndarray
    scores: dict[str, np.ndarray]  # model id -> P(live) per scored image
    no_face: list[str]  # images where no face was found (left out of the metrics)

    def row(self, model: str, subset: str = ALL) -> LivenessRow:
        return next(r for r in self.rows if r.model == model and r.subset == subset)

    def to_dict(self) -> dict:
        return {"models": self.models, "rows": [r.to_dict() for r in self.rows],
                "report": self.row(self.models[0]).report.to_dict(),
                "n_scored": len(self.paths), "no_face": self.no_face}


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InputPathError(f"{folder}: not a directory")
    files = image_files(folder, recursive=True)
    if not files:
        raise InputPathError(f"{folder}: no images")
    return files


def evaluate_liveness(
    live_dir: str | os.PathLike, spoof_dir: str | os.PathLike, model_ids: Sequence[str] | None = None,
    subsets: Mapping[str, str] | None = None, min_score: float = DEFAULT_MIN_FACE_SCORE,
    min_size: float = DEFAULT_MIN_FACE_SIZE, log: Callable[[str], None] | None = None,
) -> LivenessEvaluation:
    """Score the subject (facerec.face.selection) of every image under `live_dir` (bona fide) and `spoof_dir` (attacks) with each
    model (default: the default model); metrics on all images and on each subset {name: file-name glob}."""
    from facerec.face.detect import detect_faces
    from facerec.face.pipeline import shared_detector
    from facerec.face.selection import select_subject

    models = {m: get_liveness_model(m) for m in (model_ids or [get_liveness_model().card.id])}
    files = [(p, True) for p in _images(Path(live_dir))] + [(p, False) for p in _images(Path(spoof_dir))]
    detector = shared_detector(max(12, int(min_size)))
    scores: dict[str, list[float]] = {m: [] for m in models}
    seconds: dict[str, list[float]] = {m: [] for m in models}
    labels, paths, no_face = [], [], []
    for path, live in files:
        rgb = load_image(path)
        faces = detect_faces(detector, rgb, min_score, min_size)
        if not faces:
            no_face.append(str(path))
            continue
        face = select_subject(faces, rgb.shape).subject
        if not paths:
            for model in models.values():
                model.score(rgb, face)  # loads the weights; not timed
        for name, model in models.items():
            t0 = time.process_time()
            scores[name].append(model.score(rgb, face))
            seconds[name].append(time.process_time() - t0)
        labels.append(live)
        paths.append(str(path))
        if log and len(paths) % 100 == 0:
            log(f"  scored {len(paths)} images")
    if not paths:
        raise InputPathError(f"no face found in any image under {live_dir} or {spoof_dir}")
    y = np.array(labels)
    names = np.array([Path(p).name for p in paths])
    masks = {ALL: np.ones(len(paths), dtype=bool)}
    for name, pattern in (subsets or {}).items():
        masks[name] = np.array([fnmatch.fnmatch(n, pattern) for n in names])
    rows = []
    for subset, mask in masks.items():
        if len(set(y[mask])) < 2:
            raise InputPathError(f"subset {subset!r} needs both bona fide and attack images ({int(mask.sum())} matched)")
        for name, model in models.items():
            s = np.array(scores[name])
            rows.append(LivenessRow(name, subset, liveness_report(s[mask], y[mask], model.threshold),
                                    1000.0 * float(np.mean(np.array(seconds[name])[mask]))))
    return LivenessEvaluation(list(models), rows, paths, y, {m: np.array(v) for m, v in scores.items()}, no_face)
