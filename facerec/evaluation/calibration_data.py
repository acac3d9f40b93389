"""Genuine and impostor scores for calibration, from a pairs file or a folder per identity."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from facerec.decisions.scorers import CosineScorer, Scorer, score_pairs
from facerec.errors import InputPathError
from facerec.evaluation.lfw_protocol import read_pairs
from facerec.evaluation.pairs import embed_images
from facerec.face.pipeline import FacePipeline
from facerec.io import image_files


def _cross_identity_scores(paths: list[Path], embeddings: dict[Path, np.ndarray], max_pairs: int,
                           scorer: Scorer, seed: int = 0) -> np.ndarray:
    """Similarities of every pair of images of different identities (folder = identity), sampled down to
    `max_pairs` without replacement when there are more."""
    keys = [p for p in paths if p in embeddings]
    owners = np.array([p.parent.name for p in keys])
    matrix = np.stack([embeddings[p] for p in keys]).astype(np.float32)
    i, j = np.triu_indices(len(keys), 1)
    cross = owners[i] != owners[j]
    i, j = i[cross], j[cross]
    if len(i) > max_pairs:
        pick = np.random.default_rng(seed).choice(len(i), max_pairs, replace=False)
        i, j = i[pick], j[pick]
    if scorer.name == "cosine":  # unit vectors: a float32 inner product, millions of pairs in one go
        return np.einsum("nd,nd->n", matrix[i], matrix[j]).astype(np.float64)
    return score_pairs(scorer, matrix, i, j)


def _listed_scores(pairs: list[tuple[Path, Path]], embeddings: dict[Path, np.ndarray], scorer: Scorer) -> np.ndarray:
    kept = [(a, b) for a, b in pairs if a in embeddings and b in embeddings]
    if not kept:
        return np.zeros(0)
    return scorer.score(np.stack([embeddings[a] for a, _ in kept]), np.stack([embeddings[b] for _, b in kept]))


@dataclass(frozen=True)
class CalibrationData:
    """Genuine and impostor scores, a one-line description, and the domain they come from: what a stored
    calibration records so that its threshold names the data it was measured on."""

    genuine: np.ndarray
    impostor: np.ndarray
    description: str
    domain: dict


def fingerprint(paths: list[Path], root: Path) -> str:
    """SHA-256 of the image list (paths relative to `root`, with their sizes): the same photos give the same
    fingerprint wherever they are mounted; an added, removed or changed photo gives another."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        rel = path.relative_to(root) if path.is_relative_to(root) else path
        digest.update(f"{rel.as_posix()}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def pair_scores_for_calibration(
    pipeline: FacePipeline,
    pairs_file: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    from_dir: str | os.PathLike | None = None,
    impostors: str = "all",
    max_impostors: int = 5_000_000,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    scorer: Scorer | None = None,
    cache_dir: Path | None = None,
) -> CalibrationData:
    """Scores of the pairs, with the description and domain of the data. Images without a face are left out."""
    if (pairs_file is None) == (from_dir is None):
        raise InputPathError("give either a pairs file (--pairs) or a folder per identity (--from-dir)")
    if impostors not in ("all", "listed"):
        raise InputPathError(f"impostors must be 'all' or 'listed', not {impostors!r}")
    if pairs_file is not None:
        if not Path(pairs_file).is_file():
            raise InputPathError(f"{pairs_file}: no such pairs file")
        try:
            pairs = read_pairs(pairs_file, root)
        except ValueError as exc:
            raise InputPathError(f"{pairs_file}: {exc}") from None
        paths = sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})
        genuine_pairs = [(p.path_a, p.path_b) for p in pairs if p.same]
        listed_impostors = [(p.path_a, p.path_b) for p in pairs if not p.same]
        source = f"{Path(pairs_file).name} ({len(pairs)} listed pairs)"
        kind_of_source, origin = "pairs file", Path(pairs_file).resolve()
        data_root = Path(root).resolve() if root else origin.parent
        people = len({p.parent.name for p in paths})
    else:
        root_dir = Path(from_dir)
        if not root_dir.is_dir():
            raise InputPathError(f"{from_dir}: not a directory (expected one sub-folder per identity)")
        folders = sorted(p for p in root_dir.iterdir() if p.is_dir())
        groups = [image_files(d) for d in folders]
        paths = [p for g in groups for p in g]
        genuine_pairs = [(g[a], g[b]) for g in groups for a in range(len(g)) for b in range(a + 1, len(g))]
        listed_impostors = []
        impostors = "all"
        source = f"{root_dir} ({len(folders)} identities, {len(paths)} images)"
        kind_of_source, origin = "folder", root_dir.resolve()
        data_root, people = origin, len(folders)
    if on_total is not None:
        on_total(len(paths))
    scorer = scorer or CosineScorer()
    embedded = embed_images(pipeline, paths, progress, cache_dir)
    emb = embedded.embeddings
    genuine = _listed_scores(genuine_pairs, emb, scorer)
    if impostors == "all":
        impostor = _cross_identity_scores(paths, emb, max_impostors, scorer)
        kind = "all cross-identity pairs" + (f" (sampled to {max_impostors:,})" if len(impostor) >= max_impostors else "")
    else:
        impostor = _listed_scores(listed_impostors, emb, scorer)
        kind = "listed mismatched pairs"
    if genuine.size == 0 or impostor.size == 0:
        raise InputPathError("calibration needs both genuine and impostor pairs with detectable faces")
    description = (f"{source}; genuine: {genuine.size:,} pairs; impostor: {impostor.size:,} {kind}; "
                   f"{len(embedded.failed)} images without a face left out; pipeline {pipeline.model.id}, scorer {scorer.name}")
    domain = {"source": kind_of_source, "path": str(origin), "people": people, "images": len(paths),
              "images_without_face": len(embedded.failed), "genuine_pairs": int(genuine.size),
              "impostor_pairs": int(impostor.size), "impostors": kind,
              "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "model": pipeline.model.id, "scorer": scorer.name,
              "fingerprint": fingerprint([Path(p).resolve() for p in paths], data_root)}
    return CalibrationData(genuine, impostor, description, domain)
