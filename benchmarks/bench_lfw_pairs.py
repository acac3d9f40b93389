"""facerec vs dlib's own face_recognition on the LFW pairs protocol, same images, same metric code.

    .venv/bin/python benchmarks/bench_lfw_pairs.py --lfw ../shared/data/faces/lfw [--pairs pairs.txt] \
        [--folds 10] [--json benchmarks/results/lfw_view2.json]

facerec: MTCNN → 5-point similarity alignment → dlib ResNet-29 port → cosine.
face_recognition 1.3.0: HOG detector (upsample 1) → 5-point dlib chip → dlib ResNet-29 → -L2 distance;
an image where HOG finds no face falls back to the whole 176×176 crop as the face box (LFW crops are
centred), which is the peer's best case. Prints a table; writes raw numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np

from facerec.api import evaluation_pipeline
from facerec.decisions import metrics
from facerec.evaluation.lfw_protocol import labels_and_folds, read_pairs
from facerec.evaluation.pairs import embed_images, pair_scores


def summarise(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> dict:
    mean, std, _, _ = metrics.kfold_accuracy(scores, labels, folds) if len(np.unique(folds)) > 1 else (None, None, 0, 0)
    eer_value, _ = metrics.eer(scores, labels)
    return {
        "accuracy_mean": mean, "accuracy_std": std, "roc_auc": metrics.roc_curve(scores, labels).auc,
        "eer": eer_value, "tar_far_1e-2": metrics.tar_at_far(scores, labels, 1e-2),
        "tar_far_1e-3": metrics.tar_at_far(scores, labels, 1e-3),
    }


def run_facerec(paths, pairs, model: str | None) -> tuple[np.ndarray, dict]:
    pipeline = evaluation_pipeline(model=model)
    start = time.perf_counter()
    embedded = embed_images(pipeline, paths)
    seconds = time.perf_counter() - start
    scores, failed_pairs = pair_scores(pairs, embedded)
    return scores, {"ms_per_image": 1000 * seconds / len(paths), "no_face": len(embedded.failed),
                    "relaxed": len(embedded.relaxed), "failed_pairs": failed_pairs}


def run_face_recognition(paths, pairs) -> tuple[np.ndarray, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import face_recognition
    encodings, fallback = {}, 0
    start = time.perf_counter()
    for path in paths:
        image = face_recognition.load_image_file(str(path))
        boxes = face_recognition.face_locations(image, number_of_times_to_upsample=1)
        if boxes:
            h, w = image.shape[:2]
            box = min(boxes, key=lambda b: abs((b[0] + b[2]) / 2 - h / 2) + abs((b[1] + b[3]) / 2 - w / 2))
        else:
            fallback += 1
            box = (0, image.shape[1], image.shape[0], 0)
        encodings[path] = face_recognition.face_encodings(image, [box], model="small")[0]
    seconds = time.perf_counter() - start
    scores = np.array([-float(np.linalg.norm(encodings[p.path_a] - encodings[p.path_b])) for p in pairs])
    return scores, {"ms_per_image": 1000 * seconds / len(paths), "no_face": 0, "whole_image_fallback": fallback}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", type=Path, required=True)
    ap.add_argument("--pairs", default="pairs.txt")
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--model", action="append", help="facerec model id(s); default: the default model")
    ap.add_argument("--no-peer", action="store_true", help="skip face_recognition")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    pairs = [p for p in read_pairs(args.lfw / args.pairs, args.lfw) if p.fold < args.folds]
    labels, folds = labels_and_folds(pairs)
    paths = sorted({q for p in pairs for q in (p.path_a, p.path_b)})
    rows = {}
    for model in args.model or [None]:
        scores, extra = run_facerec(paths, pairs, model)
        rows[f"facerec ({model or 'default'})"] = summarise(scores, labels, folds) | extra
    if not args.no_peer:
        scores, extra = run_face_recognition(paths, pairs)
        rows["face_recognition 1.3.0 (dlib HOG)"] = summarise(scores, labels, folds) | extra
    header = f"{'system':38} {'acc':>15} {'AUC':>8} {'EER':>7} {'TAR@1e-2':>9} {'TAR@1e-3':>9} {'ms/img':>7} {'no face':>8}"
    print(f"LFW {args.pairs}: {len(pairs)} pairs, {len(paths)} images, {len(np.unique(folds))} folds")
    print(header)
    for name, r in rows.items():
        acc = f"{r['accuracy_mean']:.4f}±{r['accuracy_std']:.4f}" if r["accuracy_mean"] is not None else "-"
        print(f"{name:38} {acc:>15} {r['roc_auc']:8.5f} {r['eer']:7.4f} {r['tar_far_1e-2']:9.4f} "
              f"{r['tar_far_1e-3']:9.4f} {r['ms_per_image']:7.1f} {r['no_face']:8d}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "date": date.today().isoformat(), "machine": f"{platform.machine()} {platform.processor() or ''} "
            f"{__import__('os').cpu_count()} cores", "pairs_file": args.pairs, "pairs": len(pairs),
            "images": len(paths), "command": "benchmarks/bench_lfw_pairs.py " + " ".join(
                f"--{k} {v}" for k, v in vars(args).items() if v not in (None, False) and k != "lfw"),
            "results": rows,
        }, indent=2, default=float))


if __name__ == "__main__":
    main()
