#!/usr/bin/env python3
"""Embedding time a face on one core, every model through facerec's own `embed` (one crop a call).

    FACEREC_TORCH_THREADS=1 python benchmarks/bench_embed_latency.py --models mobilefacenet dlib_resnet29 \
        sface_2021dec edgeface_s_gamma05 --json benchmarks/results/issue19/embed_latency.json

Crops: seeded random pixels of each model's input size (time does not depend on content for these networks). Rounds interleave the
models so that a busy shared machine slows them alike; the median of --rounds calls is reported, with the
25th and 75th percentiles. Detection and alignment are not included (they are the same for every model).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facerec.models.registry import get_model  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    models = {m: get_model(m) for m in args.models}
    crops = {}
    for m, model in models.items():
        model.ensure_loaded()
        t = model.template
        crops[m] = rng.integers(0, 256, size=(8, t.height, t.width, 3), dtype=np.uint8)
        model.embed(crops[m][:1])  # warm-up
    times: dict[str, list[float]] = {m: [] for m in models}
    for r in range(args.rounds):
        for m, model in models.items():
            crop = crops[m][r % 8: r % 8 + 1]
            start = time.perf_counter()
            model.embed(crop)
            times[m].append((time.perf_counter() - start) * 1000)
    rows = {m: {"median_ms": round(float(np.median(v)), 2), "p25_ms": round(float(np.percentile(v, 25)), 2),
                "p75_ms": round(float(np.percentile(v, 75)), 2)} for m, v in times.items()}
    for m, r in rows.items():
        print(f"{m:22s} {r['median_ms']:7.2f} ms/face (IQR {r['p25_ms']}-{r['p75_ms']})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": f"{platform.machine()}, {os.cpu_count()} cores shared with other jobs",
            "date": time.strftime("%Y-%m-%d %H:%M"), "threads": os.environ.get("FACEREC_TORCH_THREADS", "1"),
            "load_average_at_end": os.getloadavg(), "rounds": args.rounds, "models": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
