"""Does a threshold calibrated on LFW View 1 keep its FAR promise on View 2?

    .venv/bin/python benchmarks/calibration_transfer.py --lfw ../shared/data/faces/lfw \
        --json benchmarks/results/calibration_view1_to_view2.json

Calibrates the default model on View 1 DevTrain with `FaceRec.calibrate` (genuine: the listed matched
pairs; impostors: every cross-identity pair of its images), then measures, at each calibrated threshold,
the FAR over cross-identity pairs of the View 2 images (sampled to --max-impostors) and the FRR over View 2's
3,000 matched pairs. Writes the calibration report (ROC, DET, Markdown) next to the JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from facerec.api import FaceRec
from facerec.evaluation.calibration_data import _cross_identity_scores
from facerec.evaluation.lfw_protocol import view2_pairs
from facerec.evaluation.pairs import embed_images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", type=Path, required=True)
    ap.add_argument("--model")
    ap.add_argument("--crop-cache", type=Path, default=Path(".cache/eval_crops"))
    ap.add_argument("--max-impostors", type=int, default=5_000_000)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    lfw = args.lfw.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        fr = FaceRec(db=f"sqlite:///{tmp}/calibration.db", model=args.model)
        calibration, _ = fr.calibrate(pairs_file=lfw / "pairsDevTrain.txt", far=1e-3, cache_dir=args.crop_cache,
                                      report_dir=args.json.with_suffix(""))
        pipeline = fr.pipeline
    pairs = view2_pairs(lfw)
    paths = sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})
    emb = embed_images(pipeline, paths, cache_dir=args.crop_cache).embeddings
    genuine = np.array([float(emb[p.path_a] @ emb[p.path_b]) for p in pairs if p.same])
    impostor = _cross_identity_scores(paths, emb, args.max_impostors, fr.scorer)
    rows = []
    for point in calibration.points:
        far = float(np.mean(impostor >= point.threshold))
        frr = float(np.mean(genuine < point.threshold))
        rows.append({"target_far": point.target_far, "threshold": point.threshold, "view1_far": point.far,
                     "view1_frr": point.frr, "view2_far": far, "view2_frr": frr})
        print(f"FAR target {point.target_far:g}: threshold {point.threshold:.4f} | View 1 FAR {point.far:.2e} "
              f"FRR {point.frr:.4f} | View 2 FAR {far:.2e} FRR {frr:.4f}")
    args.json.write_text(json.dumps({
        "model": calibration.model_id, "calibration": calibration.to_dict(), "view2_genuine": int(genuine.size),
        "view2_impostor": int(impostor.size), "transfer": rows,
        "command": "benchmarks/calibration_transfer.py --lfw LFW --json " + str(args.json),
    }, indent=2, default=float))


if __name__ == "__main__":
    main()
