"""One ROC and one DET plot of several `facerec evaluate pairs --save-scores` runs.

    .venv/bin/python benchmarks/plot_models.py --out benchmarks/results/view2 run1.npz run2.npz ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facerec.evaluation.pairs import write_plots


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--title", default="LFW View 2")
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    runs = {}
    for path in args.runs:
        data = np.load(path, allow_pickle=False)
        name = str(data["model_id"]) + (" + flip" if bool(data["flip"]) else "")
        if "scorer" in data and str(data["scorer"]) != "cosine":
            name += f" ({data['scorer']})"
        runs[name] = (data["scores"], data["labels"])
    for written in write_plots(args.out, runs, args.title):
        print(written)


if __name__ == "__main__":
    main()
