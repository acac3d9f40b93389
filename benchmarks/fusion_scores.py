#!/usr/bin/env python3
"""Score fusion of embedders: per-model z-normalised sum of pair scores, from saved `evaluate pairs` scores.

    python benchmarks/fusion_scores.py --scores DIR --models sface_2021dec edgeface_s_gamma05 \
        --norm pairsDevTest --splits pairsDevTest pose pairs

Reads DIR/<model>_<split>.scores.npz (written by `facerec --model M evaluate pairs --save-scores`), same pairs in
the same order for every model. Each model's scores are z-normalised with the mean and standard deviation
of all its scores on the --norm split (no labels used), then summed. Pairs where a model found no face keep
that model's -1 (a reject) before normalisation, as in the members' own results. Prints the members' and the
fusion's metrics on every split (10-fold accuracy where the split has folds, AUC, EER, TAR at FAR 1e-3).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facerec.decisions import metrics  # noqa: E402


def load(directory: Path, model: str, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(directory / f"{model}_{split}.scores.npz", allow_pickle=False) as d:
        return d["scores"].astype(np.float64), d["labels"].astype(bool), d["folds"]


def summary(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> dict:
    out = {"auc": round(float(metrics.roc_curve(scores, labels).auc), 5),
           "eer": round(float(metrics.eer(scores, labels)[0]), 4),
           "tar_at_far_1e-3": round(float(metrics.tar_at_far(scores, labels, 1e-3)), 4)}
    if len(np.unique(folds)) > 1:
        mean, std, _, _ = metrics.kfold_accuracy(scores, labels, folds)
        out["accuracy"] = round(float(mean), 4)
        out["accuracy_std"] = round(float(std), 4)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scores", type=Path, required=True)
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--norm", required=True, help="split whose score statistics normalise each model")
    ap.add_argument("--splits", nargs="+", required=True)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    stats = {}
    for m in args.models:
        s, _, _ = load(args.scores, m, args.norm)
        stats[m] = (float(s.mean()), float(s.std()))
    report: dict = {"models": args.models, "norm_split": args.norm, "z_norm": stats, "splits": {}}
    for split in args.splits:
        rows = {}
        fused = None
        for m in args.models:
            s, labels, folds = load(args.scores, m, split)
            rows[m] = summary(s, labels, folds)
            z = (s - stats[m][0]) / stats[m][1]
            fused = z if fused is None else fused + z
        rows["fusion"] = summary(fused, labels, folds)
        report["splits"][split] = rows
        for name, r in rows.items():
            print(f"{split:14s} {name:22s} " + "  ".join(f"{k} {v}" for k, v in r.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
