"""Faster face detectors against MTCNN for the kiosk: face recall, landmark error, embedding change, time.

    .venv/bin/python benchmarks/kiosk_detectors.py --lfw ../shared/data/faces/lfw --nuaa ../shared/data/liveness/nuaa \
        --lfw-n 600 --nuaa-n 240 --json benchmarks/results/kiosk_detectors.json

Reference: MTCNN (facenet-pytorch, min face 20, score >= 0.9), the subject face of each image (largest).
For each candidate detector (YuNet via cv2.FaceDetectorYN at full and half resolution, at its declared score
threshold, with its own landmarks or with MTCNN's O-Net run on its boxes ("+ onet"), MTCNN with min face 80 px):
- recall: share of reference faces the candidate finds (a box with IoU >= 0.5);
- landmark error: distance of each of the 5 landmarks from MTCNN's, in MTCNN's inter-ocular distances;
- embedding change: cosine similarity between the default model's embedding of the face aligned by MTCNN's
  landmarks and by the candidate's (1.0 = alignment unchanged);
- milliseconds per image (detection only).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from facerec.api import evaluation_pipeline
from facerec.face.align import align_face
from facerec.io import image_files, load_image
from facerec.face.mtcnn_batch import MTCNNDetector
from facerec.models.yunet import YuNetDetector


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def largest(boxes, scores, points, min_score):
    keep = [i for i in range(len(boxes)) if scores[i] >= min_score]
    if not keep:
        return None
    i = max(keep, key=lambda j: (boxes[j][2] - boxes[j][0]) * (boxes[j][3] - boxes[j][1]))
    return boxes[i], points[i]


def measure(name: str, images: list[np.ndarray], detector, min_score: float, reference, pipeline) -> dict:
    times, found, errors, cosines = [], 0, [], []
    detector.detect(images[0])  # warm-up (lazy load)
    template = pipeline.model.template
    for rgb, ref in zip(images, reference):
        start = time.perf_counter()
        out = detector.detect(rgb)
        times.append(1000 * (time.perf_counter() - start))
        if ref is None:
            continue
        ref_box, ref_pts, ref_emb = ref
        boxes, scores, points = out
        match = [i for i in range(len(boxes)) if scores[i] >= min_score and iou(boxes[i], ref_box) >= 0.5]
        if not match:
            continue
        found += 1
        pts = points[max(match, key=lambda i: iou(boxes[i], ref_box))]
        iod = float(np.linalg.norm(ref_pts[1] - ref_pts[0]))
        errors.append(np.linalg.norm(pts - ref_pts, axis=1) / iod)
        emb = pipeline.model.embed(align_face(rgb, pts, template)[None], flip_fusion=pipeline.flip_fusion)[0]
        cosines.append(float(emb @ ref_emb / (np.linalg.norm(emb) * np.linalg.norm(ref_emb))))
    n_ref = sum(r is not None for r in reference)
    err = np.array(errors) if errors else np.zeros((0, 5))
    return {
        "detector": name, "images": len(images), "reference_faces": n_ref, "found": found,
        "recall": found / n_ref if n_ref else None,
        "landmark_error_mean_iod": float(err.mean()) if len(err) else None,
        "landmark_error_p95_iod": float(np.percentile(err.mean(axis=1), 95)) if len(err) else None,
        "landmark_error_per_point_mean_iod": [float(v) for v in err.mean(axis=0)] if len(err) else None,
        "embedding_cosine_mean": float(np.mean(cosines)) if cosines else None,
        "embedding_cosine_p5": float(np.percentile(cosines, 5)) if cosines else None,
        "ms_p50": float(np.median(times)), "ms_p95": float(np.percentile(times, 95)),
    }


def run_set(label: str, paths: list[Path], pipeline) -> list[dict]:
    images = [load_image(p) for p in paths]
    mtcnn = MTCNNDetector(min_face_size=20)
    reference = []
    for rgb in images:
        face = largest(*mtcnn.detect(rgb), 0.9)
        if face is None:
            reference.append(None)
            continue
        box, pts = face
        emb = pipeline.model.embed(align_face(rgb, pts, pipeline.model.template)[None],
                                   flip_fusion=pipeline.flip_fusion)[0]
        reference.append((box, pts, emb))
    candidates = [("mtcnn min20 (reference)", mtcnn, 0.9), ("mtcnn min80", MTCNNDetector(min_face_size=80), 0.9),
                  ("yunet full", YuNetDetector(1.0), 0.0), ("yunet half", YuNetDetector(0.5), 0.0),
                  ("yunet full + onet", YuNetDetector(1.0, refine=True), 0.0),
                  ("yunet half + onet", YuNetDetector(0.5, refine=True), 0.0)]
    rows = []
    for name, det, min_score in candidates:
        row = measure(name, images, det, min_score, reference, pipeline) | {"set": label}
        rows.append(row)
        print(f"{label:6} {name:24} recall {row['recall']:.4f} ({row['found']}/{row['reference_faces']})  "
              f"lm err mean {row['landmark_error_mean_iod'] or 0:.4f} p95 {row['landmark_error_p95_iod'] or 0:.4f} IOD  "
              f"emb cos mean {row['embedding_cosine_mean'] or 0:.4f} p5 {row['embedding_cosine_p5'] or 0:.4f}  "
              f"{row['ms_p50']:.1f}/{row['ms_p95']:.1f} ms p50/p95", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", type=Path, required=True)
    ap.add_argument("--nuaa", type=Path, required=True)
    ap.add_argument("--lfw-n", type=int, default=600, help="LFW images, spread evenly over the sorted list")
    ap.add_argument("--nuaa-n", type=int, default=855, help="NUAA frames, spread evenly over the sorted list")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    pipeline = evaluation_pipeline("mobilefacenet")  # the model its committed results were measured with
    lfw = image_files(args.lfw, recursive=True)
    lfw = lfw[:: max(1, len(lfw) // args.lfw_n)][: args.lfw_n]
    nuaa = image_files(args.nuaa, recursive=True)
    nuaa = nuaa[:: max(1, len(nuaa) // args.nuaa_n)][: args.nuaa_n]
    rows = run_set("lfw", lfw, pipeline) + run_set("nuaa", nuaa, pipeline)
    if args.json:
        args.json.write_text(json.dumps({"date": datetime.now().isoformat(timespec="minutes"),
                                         "machine": platform.platform(), "note": "shared 2-core machine, busy",
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
