#!/usr/bin/env python3
"""Lighting and camera stress test of liveness models: ACER per perturbation on NUAA session 03.

    python benchmarks/liveness_stress.py --data ../shared/data/liveness/nuaa [--model minifasnet-v2 ...]

Every session-03 frame (live and printed-photo attacks) is changed as a whole frame by one perturbation at a
time - brightness (exposure gain), gamma, white balance (per-channel gains), Gaussian blur, JPEG re-encoding -
and scored at the model's declared threshold. The face box is MTCNN's on the clean frame (cached; the same box
for every perturbation), so the table isolates the liveness model: a detector that fails on a dark or blurred
frame is a separate question. Prints a table and writes the raw numbers to
benchmarks/results/liveness_stress.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facerec.decisions.liveness_metrics import liveness_report  # noqa: E402
from facerec.evaluation.perturb import PERTURBATIONS  # noqa: E402
from facerec.io import load_image  # noqa: E402
from facerec.models.liveness import get_liveness_model  # noqa: E402
from facerec.train.liveness import DEFAULT_CACHE, TEST_SESSIONS, detect_frames, list_frames  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="NUAA folder (ClientRaw/, ImposterRaw/)")
    parser.add_argument("--model", action="append", help="liveness model id (repeatable; default: the default model)")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="MTCNN detection cache ('' = none)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "liveness_stress.json"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    root = Path(args.data)
    frames = [f for f in list_frames(root) if f.session in TEST_SESSIONS]
    dets = detect_frames(root, frames, args.cache or None)
    kept = [(f, d) for f, d in zip(frames, dets) if d is not None]
    y = np.array([f.live for f, _ in kept])
    rgbs = [load_image(root / f.rel) for f, _ in kept]
    boxes = [d["box"] for _, d in kept]
    models = {m: get_liveness_model(m) for m in (args.model or [get_liveness_model().card.id])}
    t0 = time.perf_counter()
    results: dict[str, dict] = {m: {} for m in models}
    for name, perturb in PERTURBATIONS.items():
        changed = [perturb(x) for x in rgbs]
        for m, model in models.items():
            s = model.score_batch(changed, boxes)
            results[m][name] = {**liveness_report(s, y, model.threshold).to_dict(),
                                "scores": [round(float(v), 6) for v in s]}
    print(f"NUAA session {', '.join(TEST_SESSIONS)}: {int(y.sum())} live, {int((~y).sum())} attack frames "
          f"({len(frames) - len(kept)} without a face left out); {time.perf_counter() - t0:.0f} s")
    for m, rows in results.items():
        print(f"\n{m} (threshold {models[m].threshold:.4g})")
        print(f"| perturbation | APCER | BPCER | ACER | AUC |\n|---|---|---|---|---|")
        for name, r in rows.items():
            print(f"| {name} | {r['apcer']:.4f} | {r['bpcer']:.4f} | {r['acer']:.4f} | {r['auc']:.4f} |")
    out = {"command": "python " + " ".join(sys.argv), "date": date.today().isoformat(),
           "machine": f"{platform.machine()} {platform.processor() or ''}, torch threads 1".strip(),
           "frames": [f.rel for f, _ in kept], "is_live": y.tolist(), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
