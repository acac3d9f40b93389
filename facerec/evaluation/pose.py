"""A frontal-versus-profile verification split, with yaw estimated from the five detector landmarks.

Why from landmarks: the detector already returns them, no pose model is needed, and the quantity that breaks
embedders (how far the nose has moved off the eye midline) is exactly what they measure. The yaw index is

    p = (nose_x - eye_midpoint_x) / (half the eye distance)

0 for a frontal face, growing with yaw (sign: the side the face turns to); `yaw_degrees` maps it through
asin(clip(p)), a heuristic (a nose as far forward as half the eye distance) used only to name the bins.

The split is written in the LFW pairs format (`n_folds n_per_class`, then per fold matched `name i j` and
mismatched `name1 i name2 j` lines) so `facerec evaluate pairs --pairs FILE --root DIR` reads it; DIR holds
one `name/name_%04d.jpg` link per image (`link_root`), because the source photos are named otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def yaw_index(landmarks: np.ndarray) -> float:
    """p above, from 5 x 2 landmarks (left eye, right eye, nose, mouth left, mouth right)."""
    pts = np.asarray(landmarks, dtype=np.float64)
    left, right, nose = pts[0], pts[1], pts[2]
    half = abs(right[0] - left[0]) / 2
    return float((nose[0] - (left[0] + right[0]) / 2) / max(half, 1e-6))


def yaw_degrees(index: float) -> float:
    return float(np.degrees(np.arcsin(np.clip(index, -1.0, 1.0))))


@dataclass(frozen=True)
class PoseImage:
    identity: str
    file: str  # file name inside the identity's folder
    yaw_index: float
    score: float  # detector score (normal settings need >= 0.9)


def build_pairs(images: list[PoseImage], frontal_max: float, profile_min: float, folds: int,
                seed: int = 0) -> list[list[tuple[PoseImage, PoseImage, bool]]]:
    """Folds of (frontal, profile, same) pairs, identity-disjoint across folds, as many matched as mismatched.

    Matched: every (frontal, profile) pair of an identity's photos, at most 3 per profile photo. Mismatched:
    each fold's profile photos against frontal photos of other identities of the same fold, as many as matched.
    """
    rng = np.random.default_rng(seed)
    by_id: dict[str, list[PoseImage]] = {}
    for im in images:
        by_id.setdefault(im.identity, []).append(im)
    usable = sorted(i for i, ims in by_id.items()
                    if any(abs(m.yaw_index) <= frontal_max for m in ims) and any(abs(m.yaw_index) >= profile_min for m in ims))
    order = list(rng.permutation(usable))
    fold_ids = [order[f::folds] for f in range(folds)]
    out = []
    for ids in fold_ids:
        frontal = {i: [m for m in by_id[i] if abs(m.yaw_index) <= frontal_max] for i in ids}
        profile = {i: [m for m in by_id[i] if abs(m.yaw_index) >= profile_min] for i in ids}
        matched = []
        for i in ids:
            for p in profile[i]:
                picks = rng.permutation(len(frontal[i]))[:3]
                matched += [(frontal[i][k], p, True) for k in picks]
        mismatched = []
        all_profiles = [p for i in ids for p in profile[i]]
        while len(mismatched) < len(matched):
            p = all_profiles[rng.integers(len(all_profiles))]
            other = ids[rng.integers(len(ids))]
            if other == p.identity:
                continue
            f = frontal[other][rng.integers(len(frontal[other]))]
            if (f, p, False) not in mismatched:
                mismatched.append((f, p, False))
        out.append(matched + mismatched)
    # the LFW format needs the same number of each kind in every fold: trim to the smallest fold
    per_class = min(len(f) // 2 for f in out)
    return [[t for t in fold if t[2]][:per_class] + [t for t in fold if not t[2]][:per_class] for fold in out]


def number_images(images: list[PoseImage]) -> dict[tuple[str, str], int]:
    """1-based image numbers per identity (sorted file names): the `i` of `name i` in the pairs file."""
    numbers: dict[tuple[str, str], int] = {}
    for identity in sorted({m.identity for m in images}):
        files = sorted(m.file for m in images if m.identity == identity)
        numbers.update({(identity, f): n for n, f in enumerate(files, 1)})
    return numbers


def pairs_text(folds: list[list[tuple[PoseImage, PoseImage, bool]]], numbers: dict[tuple[str, str], int]) -> str:
    per_class = len(folds[0]) // 2
    lines = [f"{len(folds)} {per_class}"]
    for fold in folds:
        for a, b, same in fold:
            na, nb = numbers[(a.identity, a.file)], numbers[(b.identity, b.file)]
            lines.append(f"{a.identity} {na} {nb}" if same else f"{a.identity} {na} {b.identity} {nb}")
    return "\n".join(lines) + "\n"


def link_root(source: Path, numbers: dict[tuple[str, str], int], target: Path) -> Path:
    """`target/name/name_%04d.jpg` symlinks to `source/name/file`: the `--root` the pairs file needs."""
    for (identity, file), n in numbers.items():
        link = target / identity / f"{identity}_{n:04d}.jpg"
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink((source / identity / file).resolve(), link)
    return target
