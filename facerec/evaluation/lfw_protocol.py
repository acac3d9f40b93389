"""The LFW pair lists, parsed strictly so that a truncated or hand-edited file fails loudly.

Formats (fields separated by whitespace, image numbers 1-based):
- `pairs.txt` (View 2): header `n_folds n_per_class`, then for each fold `n_per_class` matched lines
  `name i j` followed by `n_per_class` mismatched lines `name1 i name2 j`.
- `pairsDevTrain.txt` / `pairsDevTest.txt` (View 1): header `n`, then `n` matched and `n` mismatched lines,
  a single fold.

Images live at `root/Name/Name_%04d.jpg`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

VIEW2_FILE = "pairs.txt"
VIEW1_FILES = {"train": "pairsDevTrain.txt", "test": "pairsDevTest.txt"}


@dataclass(frozen=True)
class Pair:
    """One verification trial; `fold` is 0-based (always 0 for View 1)."""

    path_a: Path
    path_b: Path
    same: bool
    fold: int


def image_path(root: str | os.PathLike, name: str, number: int) -> Path:
    """Where LFW keeps image `number` (1-based) of person `name`."""
    return Path(root) / name / f"{name}_{number:04d}.jpg"


def _image_number(token: str, where: str) -> int:
    if not token.isdecimal() or int(token) < 1:
        raise ValueError(f"{where}: image number {token!r} is not a positive integer")
    return int(token)


def read_pairs(pairs_file: str | os.PathLike, root: str | os.PathLike | None = None) -> list[Pair]:
    """All pairs of an LFW pairs file, in file order; images resolved under `root` (default: the file's folder).

    Both header styles are accepted (`10 300` for View 2, `1100` for View 1); the line count and each
    line's shape are checked against the header.
    """
    path = Path(pairs_file)
    base = path.parent if root is None else Path(root)
    lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path}: empty pairs file")
    header = lines[0]
    if len(header) not in (1, 2) or not all(tok.isdecimal() for tok in header):
        raise ValueError(f"{path}: header {' '.join(header)!r} is neither 'n' nor 'n_folds n_per_class'")
    n_folds, per_class = (1, int(header[0])) if len(header) == 1 else (int(header[0]), int(header[1]))
    body = lines[1:]
    if len(body) != 2 * n_folds * per_class:
        raise ValueError(f"{path}: header promises {2 * n_folds * per_class} pairs, found {len(body)} lines")
    pairs = []
    for n, fields in enumerate(body):
        fold, same = n // (2 * per_class), n % (2 * per_class) < per_class
        where = f"{path}:{n + 2}"
        if same and len(fields) == 3:
            name_a, name_b, num_a, num_b = fields[0], fields[0], fields[1], fields[2]
        elif not same and len(fields) == 4:
            name_a, num_a, name_b, num_b = fields
        else:
            kind = "matched 'name i j'" if same else "mismatched 'name1 i name2 j'"
            raise ValueError(f"{where}: expected a {kind} line, got {' '.join(fields)!r}")
        pairs.append(
            Pair(
                path_a=image_path(base, name_a, _image_number(num_a, where)),
                path_b=image_path(base, name_b, _image_number(num_b, where)),
                same=same,
                fold=fold,
            )
        )
    return pairs


def view2_pairs(root: str | os.PathLike) -> list[Pair]:
    """The 6,000 View 2 pairs in 10 folds: the set LFW accuracy is reported on."""
    return read_pairs(Path(root) / VIEW2_FILE, root)


def view1_pairs(root: str | os.PathLike, split: Literal["train", "test"]) -> list[Pair]:
    """View 1, for development: 2,200 training or 1,000 test pairs, one fold."""
    if split not in VIEW1_FILES:
        raise ValueError(f"split must be one of {sorted(VIEW1_FILES)}, got {split!r}")
    return read_pairs(Path(root) / VIEW1_FILES[split], root)


def labels_and_folds(pairs: list[Pair]) -> tuple[NDArray[np.int8], NDArray[np.int64]]:
    """The label (1 same, 0 different) and fold arrays that `decisions.metrics.kfold_accuracy` takes."""
    labels = np.fromiter((p.same for p in pairs), dtype=np.int8, count=len(pairs))
    folds = np.fromiter((p.fold for p in pairs), dtype=np.int64, count=len(pairs))
    return labels, folds
