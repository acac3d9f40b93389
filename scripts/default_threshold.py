"""Measure a model's default threshold on LFW View 1 (DevTrain) and record it in its model.json.

    python scripts/default_threshold.py --lfw ../shared/data/faces/lfw --model dlib_resnet29 --write

Genuine scores: DevTrain's matched pairs. Impostor scores: every cross-identity pair of DevTrain images
(millions, so FAR = 1e-3 is resolved by thousands of impostor scores, not one). The default is the
threshold at FAR = 1e-3; a stored calibration (`facerec calibrate`) replaces it at run time.

Stricter points (FAR 1e-4 .. 1e-6) go to the card's `extra.thresholds_at_far`: enrollment's duplicate check
compares a new face with every enrolled person, so it needs a per-comparison FAR about N times smaller than a
1:1 decision's (facerec.decisions.thresholds.duplicate_threshold). FAR 1e-6 rests on a handful of impostor
scores of the millions here: it is the strictest point this data resolves, and marked as such.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from facerec.decisions import metrics
from facerec.evaluation.lfw_protocol import view1_pairs
from facerec.evaluation.pairs import embed_images
from facerec.face.pipeline import FacePipeline
from facerec.models.base import WEIGHTS_ROOT
from facerec.models.registry import get_model

TARGET_FAR = 1e-3
STRICT_FARS = (1e-4, 1e-5, 1e-6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lfw", type=Path, required=True)
    ap.add_argument("--model", default="dlib_resnet29")
    ap.add_argument("--cache", type=Path, help="npz of embeddings to reuse/write")
    ap.add_argument("--crop-cache", type=Path, help="aligned-crop cache shared with `evaluate pairs --crop-cache`")
    ap.add_argument("--write", action="store_true", help="record the threshold in the model's model.json")
    args = ap.parse_args()
    pairs = view1_pairs(args.lfw, "train")
    paths = sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})
    if args.cache and args.cache.exists():
        data = np.load(args.cache, allow_pickle=False)
        embeddings = dict(zip((Path(p) for p in data["paths"]), data["embeddings"]))
    else:
        embedded = embed_images(FacePipeline(get_model(args.model)), paths, cache_dir=args.crop_cache)
        embeddings = embedded.embeddings
        if args.cache:
            keys = sorted(embeddings)
            np.savez(args.cache, paths=np.array([str(k) for k in keys]), embeddings=np.stack([embeddings[k] for k in keys]))
    genuine = np.array([embeddings[p.path_a] @ embeddings[p.path_b] for p in pairs
                        if p.same and p.path_a in embeddings and p.path_b in embeddings])
    keys = sorted(embeddings)
    owners = np.array([k.parent.name for k in keys])
    matrix = np.stack([embeddings[k] for k in keys])
    sims = matrix @ matrix.T
    upper = np.triu(np.ones_like(sims, dtype=bool), 1) & (owners[:, None] != owners[None, :])
    impostor = sims[upper]
    scores = np.concatenate([genuine, impostor])
    labels = np.concatenate([np.ones(len(genuine)), np.zeros(len(impostor))])
    point = metrics.threshold_at_far(scores, labels, TARGET_FAR)
    strict = {f"{far:g}": round(float(metrics.threshold_at_far(scores, labels, far).threshold), 4)
              for far in STRICT_FARS}
    eer_value, eer_threshold = metrics.eer(scores, labels)
    summary = {
        "images": len(paths), "embedded": len(embeddings), "genuine": len(genuine), "impostor": len(impostor),
        "threshold_far_1e-3": round(point.threshold, 4), "measured_far": point.far, "frr": point.frr,
        "eer": eer_value, "eer_threshold": eer_threshold, "thresholds_at_far": strict,
    }
    print(json.dumps(summary, indent=2))
    if args.write:
        card_path = WEIGHTS_ROOT / args.model / "model.json"
        card = json.loads(card_path.read_text())
        card["default_threshold"] = round(float(point.threshold), 4)
        card["threshold_provenance"] = (
            f"FAR {TARGET_FAR:g} on LFW View 1 DevTrain through the facerec pipeline ({len(genuine)} genuine pairs, "
            f"{len(impostor):,} cross-identity impostor pairs; FRR there {point.frr:.3f}; EER {eer_value:.4f} at "
            f"{eer_threshold:.4f}); scripts/default_threshold.py"
        )
        card.setdefault("extra", {})["default_threshold_far"] = TARGET_FAR
        card["extra"]["default_threshold_frr"] = round(float(point.frr), 4)  # what `calibrate check` compares
        card["extra"]["thresholds_at_far"] = strict
        card["extra"]["thresholds_at_far_provenance"] = (
            f"LFW View 1 DevTrain, {len(impostor):,} impostor pairs (FAR 1e-6 = the strictest point it resolves); "
            "scripts/default_threshold.py")
        card_path.write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
