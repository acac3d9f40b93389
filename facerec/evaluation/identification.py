"""Open-set 1:K identification on a folder per identity (one-shot gallery, held-out unknowns).

Protocol: identities are split (seeded) into known and unknown. Each known identity is enrolled from its
first `gallery_images` photos (one = one-shot; more = a mean template); its other photos are mated
probes. Every photo of an unknown identity is a non-mated probe. Reported: closed-set rank-1 and rank-5
on mated probes; open-set DIR (detected and correctly identified at rank 1 above the threshold) at the
thresholds where FPIR (non-mated probes accepted as someone) is 1% and 10%.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from facerec.decisions.calibration import fpir_threshold
from facerec.errors import InputPathError
from facerec.evaluation.pairs import embed_images
from facerec.face.pipeline import FacePipeline
from facerec.io import image_files
from facerec.models.base import l2_normalise

FPIR_TARGETS = (0.01, 0.1)


@dataclass
class IdentificationReport:
    model_id: str
    identities_known: int
    identities_unknown: int
    gallery_images_per_identity: int
    mated_probes: int
    non_mated_probes: int
    rank1: float
    rank5: float
    dir_at_fpir: dict[str, float]
    thresholds_at_fpir: dict[str, float]
    images_without_face: int

    def to_dict(self) -> dict:
        return asdict(self)


def split_identities(root: Path, unknown_fraction: float, seed: int, min_images: int) -> tuple[dict, dict]:
    folders = sorted(p for p in Path(root).iterdir() if p.is_dir())
    groups = {f.name: image_files(f) for f in folders}
    groups = {k: v for k, v in groups.items() if v}
    names = sorted(groups)
    rng = np.random.default_rng(seed)
    unknown = set(rng.choice(names, int(round(unknown_fraction * len(names))), replace=False).tolist())
    known = {k: v for k, v in groups.items() if k not in unknown and len(v) >= min_images}
    return known, {k: groups[k] for k in sorted(unknown)}


def evaluate_identification(
    pipeline: FacePipeline,
    root: str | os.PathLike,
    unknown_fraction: float = 0.2,
    gallery_images: int = 1,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    cache_dir: Path | None = None,
) -> IdentificationReport:
    if not Path(root).is_dir():
        raise InputPathError(f"{root}: not a directory (expected one sub-folder per identity)")
    known, unknown = split_identities(Path(root), unknown_fraction, seed, min_images=gallery_images + 1)
    if not known or not unknown:
        raise InputPathError(f"{root}: need identities with more than {gallery_images} photos and some to hold out")
    paths = [p for v in known.values() for p in v] + [p for v in unknown.values() for p in v]
    if on_total is not None:
        on_total(len(paths))
    emb = embed_images(pipeline, paths, progress, cache_dir).embeddings
    names, gallery, mated, mated_label = [], [], [], []
    for name, photos in known.items():
        enrolled = [emb[p] for p in photos[:gallery_images] if p in emb]
        if not enrolled:
            continue
        label = len(names)
        names.append(name)
        gallery.append(l2_normalise(np.mean(enrolled, axis=0)))
        for p in photos[gallery_images:]:
            if p in emb:
                mated.append(emb[p])
                mated_label.append(label)
    non_mated = [emb[p] for v in unknown.values() for p in v if p in emb]
    g = np.stack(gallery)
    mated_scores = np.stack(mated) @ g.T
    non_mated_best = (np.stack(non_mated) @ g.T).max(axis=1)
    labels = np.array(mated_label)
    order = np.argsort(-mated_scores, axis=1)
    rank1_hit = order[:, 0] == labels
    rank5 = float(np.mean((order[:, :5] == labels[:, None]).any(axis=1)))
    best = mated_scores[np.arange(len(labels)), order[:, 0]]
    dir_at, thr_at = {}, {}
    for target in FPIR_TARGETS:
        threshold, _ = fpir_threshold(non_mated_best, target)
        dir_at[str(target)] = float(np.mean(rank1_hit & (best >= threshold)))
        thr_at[str(target)] = float(threshold)
    return IdentificationReport(
        model_id=pipeline.model.id, identities_known=len(names), identities_unknown=len(unknown),
        gallery_images_per_identity=gallery_images, mated_probes=len(labels), non_mated_probes=len(non_mated),
        rank1=float(np.mean(rank1_hit)), rank5=rank5, dir_at_fpir=dir_at, thresholds_at_fpir=thr_at,
        images_without_face=len(paths) - len(emb),
    )
