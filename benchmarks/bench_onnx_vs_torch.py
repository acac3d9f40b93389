#!/usr/bin/env python3
"""ONNX Runtime versus a PyTorch port for the ONNX embedders: ms a face on one core, and exactness.

    pip install onnx2torch==1.5.15        # the `port-bench` extra
    python benchmarks/bench_onnx_vs_torch.py --crops CROPS.npz --json benchmarks/results/onnx_vs_torch.json

The port is onnx2torch's operator-by-operator translation of the original graph into torch modules (float32,
the original weights): the cheapest exact port, and the same operators a hand port would run. Both runtimes
use one thread. Time: median over --repeats of one face per call (what an enrolment or a verification pays)
and of a batch of 32 (per face), interleaved so that a busy machine slows both alike. Error: max abs
difference of the raw output from the original graph in ONNX Runtime, on the same aligned LFW crops. The ONNX
Runtime side is facerec's own session (the stored weights, see the card's exactness note).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from convert_onnx_embedder import SOURCES, fetch_onnx, graph_input, run_original  # noqa: E402
from facerec.models.registry import get_model  # noqa: E402


def timed(fn, x: np.ndarray) -> float:
    start = time.perf_counter()
    fn(x)
    return (time.perf_counter() - start) * 1000 / len(x)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops", type=Path, required=True, help="npz with `crops` (aligned 112x112 RGB uint8)")
    ap.add_argument("--models", nargs="+", default=sorted(SOURCES))
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort
    import torch
    from onnx2torch import convert

    torch.set_num_threads(1)
    with np.load(args.crops, allow_pickle=False) as data:
        crops = data["crops"][:32]
    results = {"machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
               "threads": 1, "onnxruntime": ort.__version__, "torch": torch.__version__, "models": {}}
    for model_id in args.models:
        source = SOURCES[model_id]
        path = fetch_onnx(source)
        x = graph_input(source, crops)
        reference = run_original(path, x)
        model = get_model(model_id)  # what facerec runs: ORT, skeleton graph with a symbolic batch, stored weights
        model.ensure_loaded()
        session = model.session
        name = session.get_inputs()[0].name
        try:
            module = convert(onnx.load(str(path))).eval()
        except NotImplementedError as exc:
            print(f"{model_id}: no onnx2torch port ({exc})")
            results["models"][model_id] = {"torch_port": f"onnx2torch cannot convert it: {exc}"}
            continue

        def run_ort(batch: np.ndarray) -> np.ndarray:
            step = source.batch
            return np.concatenate([session.run(None, {name: batch[i:i + step]})[0].reshape(len(batch[i:i + step]), -1)
                                   for i in range(0, len(batch), step)])

        def run_torch(batch: np.ndarray) -> np.ndarray:
            step = source.batch
            with torch.inference_mode():
                return np.concatenate([module(torch.from_numpy(batch[i:i + step])).reshape(len(batch[i:i + step]), -1).numpy()
                                       for i in range(0, len(batch), step)])

        port_error = float(np.abs(run_torch(x) - reference).max())
        ort_error = float(np.abs(run_ort(x) - reference).max())
        times: dict[str, list[float]] = {"ort_1": [], "torch_1": [], "ort_32": [], "torch_32": []}
        for r in range(args.repeats):
            one = x[r % len(x):r % len(x) + 1]
            times["ort_1"].append(timed(run_ort, one))
            times["torch_1"].append(timed(run_torch, one))
            if r % 5 == 0:
                times["ort_32"].append(timed(run_ort, x))
                times["torch_32"].append(timed(run_torch, x))
        row = {k: round(statistics.median(v), 2) for k, v in times.items()}
        row.update(max_abs_error_torch_port=port_error, max_abs_error_ort=ort_error,
                   max_abs_output=float(np.abs(reference).max()), torch_port="onnx2torch (float32 weights)")
        results["models"][model_id] = row
        print(f"{model_id:20s} ms/face 1-at-a-time: ORT {row['ort_1']:6.2f}  torch {row['torch_1']:6.2f} | "
              f"batch {source.batch if source.batch < 32 else 32}: ORT {row['ort_32']:6.2f}  torch {row['torch_32']:6.2f} | "
              f"max abs error vs original: torch port {port_error:.2e}, ORT {ort_error:.2e}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
