"""Liveness benchmark: the shipped model on NUAA's test session (03) and its per-face latency on this CPU.

    python benchmarks/bench_liveness.py [--data ../shared/data/liveness/nuaa] [--roc out/liveness_roc.png]

Prints ACER / APCER / BPCER (at the model's declared threshold), BPCER at APCER 1% and 5%, EER and ROC AUC
on session 03 (all its frames, and the subjects never seen in training), then the latency of
`LivenessModel.score` per face (the face already detected: crops + features + classifier; MTCNN excluded,
as it runs once for verification anyway). Detections come from the training command's cache (MTCNN runs
only for frames not in it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facerec.decisions.liveness_metrics import liveness_report, liveness_roc  # noqa: E402
from facerec.io import load_image  # noqa: E402
from facerec.models.liveness import LivenessModel  # noqa: E402
from facerec.train.liveness import DEFAULT_CACHE, TEST_SESSIONS, TRAIN_SESSIONS, detect_frames, list_frames  # noqa: E402


def plot_liveness_roc(curves: dict, points: dict, path: Path, title: str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, roc in curves.items():
        ax.plot(roc.far, roc.tar, label=f"{name} (AUC {roc.auc:.4f})")
    for name, (apcer, bpcer) in points.items():
        ax.plot(apcer, 1 - bpcer, "o", mec="black", label=f"{name}: APCER {apcer:.3f}, BPCER {bpcer:.3f}")
    ax.set_xlim(-0.01, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("APCER (attacks accepted as live)")
    ax.set_ylabel("1 - BPCER (bona fide accepted)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "liveness" / "nuaa"))
    parser.add_argument("--model", default=None, help="liveness model folder (default: the shipped one)")
    parser.add_argument("--roc", default="out/liveness_roc.png", help="where to write the ROC PNG")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE))
    parser.add_argument("--latency-faces", type=int, default=200)
    args = parser.parse_args(argv)

    root = Path(args.data)
    model = LivenessModel(args.model)
    frames = [f for f in list_frames(root) if f.session in TEST_SESSIONS]
    detections = detect_frames(root, frames, args.cache or None, log=lambda m: print(m, file=sys.stderr))
    kept = [(f, d) for f, d in zip(frames, detections) if d is not None]
    missed = len(frames) - len(kept)
    images = [load_image(root / f.rel) for f, _ in kept]
    boxes = [d["box"] for _, d in kept]
    y = np.array([f.live for f, _ in kept])
    scores = model.score_batch(images, boxes)
    train_subjects = {f.subject for f in list_frames(root) if f.session in TRAIN_SESSIONS}
    unseen = np.array([f.subject not in train_subjects for f, _ in kept])

    t = model.threshold
    rows = {"session 03, all": liveness_report(scores, y, t)}
    if unseen.any() and len(set(y[unseen])) == 2:
        rows["session 03, unseen subjects"] = liveness_report(scores[unseen], y[unseen], t)

    # Latency: one face at a time, as `verify --liveness` calls it, after a warm-up.
    model.score(images[0], boxes[0])
    times = []
    for i in range(args.latency_faces):
        j = i % len(images)
        t0 = time.perf_counter()
        model.score(images[j], boxes[j])
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000

    print(f"liveness model: {model.card.id} v{model.card.version}, threshold {t:.4f} "
          f"({model.card.threshold_provenance.split(' of ')[0]}), input {model.card.input['scales']} x "
          f"{model.card.input['size']}px, {model.card.input['n_features']} features")
    print(f"frames: {len(kept)} scored, {missed} without a detected face (left out)")
    header = f"{'split':30} {'live':>5} {'spoof':>5} {'APCER':>7} {'BPCER':>7} {'ACER':>7} " \
             f"{'BPCER@APCER1%':>14} {'BPCER@APCER5%':>14} {'EER':>7} {'AUC':>7}"
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        print(f"{name:30} {r.n_bona_fide:5d} {r.n_attack:5d} {r.apcer:7.4f} {r.bpcer:7.4f} {r.acer:7.4f} "
              f"{r.bpcer_at_apcer_1pct:14.4f} {r.bpcer_at_apcer_5pct:14.4f} {r.eer:7.4f} {r.auc:7.4f}")
    print()
    print(f"latency per face ({len(ms)} calls, score() incl. crops + features + classifier, MTCNN excluded): "
          f"median {np.median(ms):.2f} ms, p95 {np.percentile(ms, 95):.2f} ms, max {ms.max():.2f} ms")

    curves = {name: liveness_roc(scores[m], y[m]) for name, m in
              (("session 03, all", np.ones_like(y)), ("unseen subjects", unseen)) if len(set(y[m])) == 2}
    points = {"threshold": (rows["session 03, all"].apcer, rows["session 03, all"].bpcer)}
    out = plot_liveness_roc(curves, points, Path(args.roc), "Liveness ROC, NUAA session 03")
    print(f"ROC written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
