"""Per-frame latency of the whole pipeline on real 640×480 webcam frames, facerec vs face_recognition.

    .venv/bin/python benchmarks/bench_pipeline.py --frames ../shared/data/liveness/nuaa/ClientRaw --n 60

facerec: MTCNN detect → align → dlib ResNet-29 port embed (torch, FACEREC_TORCH_THREADS threads).
face_recognition 1.3.0: HOG detect (upsample 1) → 5-point landmarks → dlib embed. Same frames, same machine,
one process; prints median and p95 milliseconds per frame and faces found.
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
from facerec.io import image_files, load_image


def timed(fn, frames) -> tuple[list[float], int]:
    fn(frames[0])  # warm-up: lazy model loads are not per-frame costs
    times, found = [], 0
    for frame in frames:
        start = time.perf_counter()
        found += fn(frame)
        times.append(1000 * (time.perf_counter() - start))
    return times, found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=Path, required=True)
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    paths = image_files(args.frames, recursive=True)
    step = max(1, len(paths) // args.n)
    frames = [load_image(p) for p in paths[::step][: args.n]]
    pipeline = evaluation_pipeline("mobilefacenet")  # the model its committed results were measured with
    rows = {"facerec (MTCNN + dlib ResNet-29 port)": timed(lambda f: len(pipeline.faces(f)), frames)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import face_recognition
    rows["face_recognition 1.3.0 (HOG + dlib)"] = timed(
        lambda f: len(face_recognition.face_encodings(f, face_recognition.face_locations(f, 1))), frames)
    print(f"{len(frames)} frames {frames[0].shape[1]}x{frames[0].shape[0]} from {args.frames}")
    print(f"{'system':42} {'median ms':>10} {'p95 ms':>8} {'faces':>6}")
    results = {}
    for name, (times, found) in rows.items():
        med, p95 = float(np.median(times)), float(np.percentile(times, 95))
        print(f"{name:42} {med:10.1f} {p95:8.1f} {found:6d}")
        results[name] = {"median_ms": med, "p95_ms": p95, "faces": found}
    if args.json:
        args.json.write_text(json.dumps({"date": date.today().isoformat(), "machine": platform.platform(),
                                         "frames": len(frames), "results": results}, indent=2))


if __name__ == "__main__":
    main()
