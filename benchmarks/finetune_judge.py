#!/usr/bin/env python3
"""Judge a fine-tuned embedder against its base on data identity-disjoint from its training (issue 19).

    # the test folds of the pose split as a pairs file of their own (LFW format, `evaluate pairs` reads it)
    python benchmarks/finetune_judge.py folds --pairs benchmarks/pose_split/pairs_frontal_profile.txt \
        --folds 6-10 --out benchmarks/pose_split/pairs_frontal_profile_folds6-10.txt
    # after `python cli.py --model M evaluate pairs ... --save-scores R/M_<set>.scores.npz --json > R/M_<set>.json`
    # for every model M and set in (pose610, pairsDevTrain, pairsDevTest):
    python benchmarks/finetune_judge.py judge --results R --base sface_2021dec --candidate sface_2021dec_ft_a \
        --split RUN/split.json --lfw-overlap ../shared/data/faces/celeba_wild/lfw_overlap.csv --json R/result.json

Metrics, all from facerec.decisions.metrics over the scores `evaluate pairs` saved:
- pose folds 6-10: the k-fold accuracy `evaluate pairs` reports (threshold from the other folds) and TAR at
  FAR 1e-3 over all their pairs;
- LFW View 1 (its protocol): the threshold of best accuracy on pairsDevTrain applied to pairsDevTest (accuracy),
  and TAR at FAR 1e-3 over DevTrain + DevTest pooled (3,200 pairs).
A candidate beats its base on a set when its accuracy is higher and its TAR at FAR 1e-3 is not lower; it is
shipped only if it beats the base on both sets. Before any number is read, the candidate's training and
validation identities are checked disjoint from the pose test folds and from the LFW-overlap identities.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facerec.decisions import metrics  # noqa: E402
from facerec.train.data import pairs_identities, parse_folds  # noqa: E402

SETS = ("pose610", "pairsDevTrain", "pairsDevTest")


def write_folds(pairs: Path, folds: str, out: Path) -> None:
    """The chosen folds of an LFW-format pairs file, lines unchanged, under a header for that many folds."""
    lines = [line for line in pairs.read_text().splitlines() if line.strip()]
    n_folds, per_class = (int(v) for v in lines[0].split())
    chosen = parse_folds(folds)
    if max(chosen) >= n_folds:
        raise SystemExit(f"{pairs}: {n_folds} folds, asked for {folds}")
    body = [line for f in chosen for line in lines[1 + f * 2 * per_class: 1 + (f + 1) * 2 * per_class]]
    out.write_text(f"{len(chosen)} {per_class}\n" + "\n".join(body) + "\n")


def load(results: Path, model: str, name: str) -> tuple[dict, np.ndarray, np.ndarray]:
    report = json.loads((results / f"{model}_{name}.json").read_text())
    with np.load(results / f"{model}_{name}.scores.npz", allow_pickle=False) as npz:
        if str(npz["model_id"]) != model:
            raise SystemExit(f"{model}_{name}.scores.npz holds {npz['model_id']}'s scores")
        return report, npz["scores"].astype(np.float64), npz["labels"].astype(bool)


def measure(results: Path, model: str) -> dict:
    pose, s_pose, l_pose = load(results, model, "pose610")
    _, s_train, l_train = load(results, model, "pairsDevTrain")
    _, s_test, l_test = load(results, model, "pairsDevTest")
    threshold, train_acc = metrics.best_accuracy_threshold(s_train, l_train)
    test_acc = float(np.mean((s_test >= threshold) == l_test))
    pooled_s, pooled_l = np.r_[s_train, s_test], np.r_[l_train, l_test]
    return {
        "pose_folds_6_10": {
            "accuracy": pose["accuracy_mean"], "accuracy_std": pose["accuracy_std"], "folds": pose["folds"],
            "tar@far=1e-3": metrics.tar_at_far(s_pose, l_pose, 1e-3), "eer": pose["eer"], "roc_auc": pose["roc_auc"],
            "pairs": pose["pairs"], "failed_pairs": pose["failed_pairs"],
        },
        "lfw_view1": {
            "accuracy": test_acc, "threshold_from_devtrain": float(threshold), "devtrain_accuracy": float(train_acc),
            "tar@far=1e-3": metrics.tar_at_far(pooled_s, pooled_l, 1e-3),
            "eer": metrics.eer(pooled_s, pooled_l)[0], "roc_auc": metrics.roc_curve(pooled_s, pooled_l).auc,
            "pairs": int(len(pooled_s)),
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    f = sub.add_parser("folds")
    f.add_argument("--pairs", type=Path, required=True)
    f.add_argument("--folds", required=True)
    f.add_argument("--out", type=Path, required=True)
    j = sub.add_parser("judge")
    j.add_argument("--results", type=Path, required=True)
    j.add_argument("--base", required=True)
    j.add_argument("--candidate", required=True)
    j.add_argument("--split", type=Path, required=True, help="the candidate's run split.json")
    j.add_argument("--pose-pairs", type=Path, default=REPO / "benchmarks/pose_split/pairs_frontal_profile.txt")
    j.add_argument("--test-folds", default="6-10")
    j.add_argument("--lfw-overlap", type=Path, required=True)
    j.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.command == "folds":
        write_folds(args.pairs, args.folds, args.out)
        return 0

    split = json.loads(args.split.read_text())
    trained = set(split["train"]) | set(split["val"])
    test_ids = set(pairs_identities(args.pose_pairs, args.test_folds))
    with open(args.lfw_overlap, newline="") as fh:
        lfw_people = {row["celeba_id"] for row in csv.DictReader(fh)}
    assert trained and test_ids, "empty identity sets"
    assert trained.isdisjoint(test_ids), f"test identities in training: {sorted(trained & test_ids)}"
    assert trained.isdisjoint(lfw_people), f"LFW people in training: {sorted(trained & lfw_people)}"
    base, cand = measure(args.results, args.base), measure(args.results, args.candidate)
    verdict = {}
    for name in ("pose_folds_6_10", "lfw_view1"):
        b, c = base[name], cand[name]
        verdict[name] = {
            "accuracy_delta": c["accuracy"] - b["accuracy"], "tar@far=1e-3_delta": c["tar@far=1e-3"] - b["tar@far=1e-3"],
            "beats_base": bool(c["accuracy"] > b["accuracy"] and c["tar@far=1e-3"] >= b["tar@far=1e-3"]),
        }
    ship = all(v["beats_base"] for v in verdict.values())
    deltas = "; ".join(f"{k}: accuracy {v['accuracy_delta'] * 100:+.2f} pts, TAR@FAR1e-3 {v['tar@far=1e-3_delta'] * 100:+.2f} pts"
                       for k, v in verdict.items())
    decision = ("ship: beats the base on both test sets" if ship else
                f"do not ship: it does not beat the base on {', '.join(k for k, v in verdict.items() if not v['beats_base'])}"
                ) + f" ({deltas})"
    out = {
        "base": args.base, "candidate": args.candidate, "base_metrics": base, "candidate_metrics": cand,
        "verdict": verdict, "ship": ship, "decision": decision,
        "rule": "beats = higher accuracy and TAR@FAR1e-3 not lower, on the pose test folds AND on LFW View 1",
        "protocol": {
            "training_identities": len(split["train"]), "validation_identities": len(split["val"]),
            "test_identities_pose": len(test_ids), "disjoint_checked": True,
            "lfw": "evaluation only (View 1: threshold on DevTrain, accuracy on DevTest; TAR pooled)",
            "pose_test": f"folds {args.test_folds} of {args.pose_pairs.name}: identities never in training or validation",
        },
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
