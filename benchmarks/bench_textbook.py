"""The textbook methods, real and measured: one LFW View 2 table for the deep embedding (cosine), the learned
verifiers on top of it, and the classical baselines, all on the same aligned crops.

    FACEREC_TORCH_THREADS=1 .venv/bin/python benchmarks/bench_textbook.py --lfw ../shared/data/faces/lfw \
        [--json benchmarks/results/textbook_lfw_view2.json] [--roc benchmarks/results/textbook_roc.png]

Every image of the 6,000 View 2 pairs is detected and aligned once onto the dlib template (150 x 150; the
central face, relaxed detection as a fallback: `facerec.evaluation.pairs.cached_alignment`, cached under
`.cache/eval_crops/`, shared with `facerec evaluate pairs`). Each model embeds those crops, each scorer scores
the pairs, and `facerec.decisions.metrics` measures: the LFW 10-fold accuracy (threshold chosen on the other
nine folds), ROC AUC, EER and TAR at FAR 1e-2 / 1e-3 (over all 3,000 impostor pairs: FAR 1e-3 is 3 pairs).
A pair with an image where no face was found scores below every measured pair (a reject) in every row.

All trained parts (the verifiers, Eigenfaces, Fisherfaces, the LBP cell weights) saw only celeba_wild
training identities (LFW-overlap identities excluded), so these are LFW "unrestricted, labeled outside data"
results; dlib's network was trained by its author on other outside data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facerec.decisions import metrics  # noqa: E402
from facerec.decisions.scorers import ChiSquareScorer, CosineScorer, LearnedScorer, score_pairs  # noqa: E402
from facerec.evaluation.lfw_protocol import labels_and_folds, view2_pairs  # noqa: E402

EVAL_CROPS = REPO / ".cache" / "eval_crops"
EMB_CACHE = REPO / ".cache" / "textbook"
CLASSICAL = {"eigenfaces": "EigenfacesEmbedder", "fisherfaces": "FisherfacesEmbedder",
             "lbp_histogram": "LBPEmbedder"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_model(model_id: str):
    """The registry's model; the classical runtimes directly if the registry does not list them yet."""
    from facerec.models import classical
    from facerec.models.registry import RUNTIMES, WEIGHTS_ROOT, get_model, model_card

    runtime = model_card(model_id).extra.get("runtime")
    if runtime in RUNTIMES:
        return get_model(model_id)
    return getattr(classical, CLASSICAL[runtime])(WEIGHTS_ROOT / model_id)


def embed_all(model, crops: np.ndarray, crops_key: str, batch: int = 256) -> np.ndarray:
    """Unit embeddings of every crop, cached per (crops, model weights)."""
    key = hashlib.sha256(f"{crops_key}|{model.id}|{model.card.weights_sha256}".encode()).hexdigest()[:16]
    file = EMB_CACHE / f"lfw-view2-{model.id}-{key}.npy"
    if file.is_file():
        return np.load(file)
    start, parts = time.perf_counter(), []
    for i in range(0, len(crops), batch):
        parts.append(model.embed(crops[i:i + batch]))
    out = np.concatenate(parts)
    log(f"  {model.id}: embedded {len(crops)} crops in {time.perf_counter() - start:.0f} s")
    file.parent.mkdir(parents=True, exist_ok=True)
    np.save(file, out)
    return out


def pair_scores(scorer, emb: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> tuple[np.ndarray, int]:
    """Scores of the pairs (index -1 = image without a face: the pair scores below every measured one)."""
    ok = (ia >= 0) & (ib >= 0)
    scores = np.empty(len(ia))
    scores[ok] = score_pairs(scorer, emb, ia[ok], ib[ok])
    if (~ok).any():
        scores[~ok] = scores[ok].min() - 1.0
    return scores, int((~ok).sum())


def summarise(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> dict:
    mean, std, per_fold, _ = metrics.kfold_accuracy(scores, labels, folds)
    eer_value, eer_threshold = metrics.eer(scores, labels)
    return {
        "accuracy_mean": mean, "accuracy_std": std, "accuracy_per_fold": per_fold.tolist(),
        "roc_auc": metrics.roc_curve(scores, labels).auc, "eer": eer_value, "eer_threshold": eer_threshold,
        "tar_far_1e-2": metrics.tar_at_far(scores, labels, 1e-2),
        "tar_far_1e-3": metrics.tar_at_far(scores, labels, 1e-3),
    }


class UnwhitenedEigenfaces:
    """The textbook Eigenfaces projection (no whitening) from the shipped model's own components."""

    def __init__(self, model) -> None:
        self.model = model
        self.id = f"{model.id}-unwhitened"
        self.card = model.card

    def embed(self, crops: np.ndarray) -> np.ndarray:
        m = self.model
        m.ensure_loaded()
        z = (m.pixels(crops) - m.mean) @ m.components.T
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def update_cards(results: list[dict], models: list, learned: list) -> None:
    """Write each artefact's View 2 numbers into its own card (the first row of each model/scorer is its own)."""
    where = "benchmarks/bench_textbook.py, LFW View 2, dlib-template crops"
    for model in models[1:]:
        rows = [r for r in results if r["model"] == model.id]
        text = "; ".join(f"{100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f} % ({r['scorer']})"
                         for r in rows)
        path = model.folder / "model.json"
        card = json.loads(path.read_text())
        card["extra"]["lfw_view2_accuracy"] = f"{text} [{where}]"
        path.write_text(json.dumps(card, indent=2) + "\n")
    for scorer in learned:
        row = next(r for r in results if r["scorer_id"] == scorer.id)
        path = scorer.folder / "verifier.json"
        card = json.loads(path.read_text())
        card["metrics"]["lfw_view2"] = {k: row[k] for k in ("accuracy_mean", "accuracy_std", "roc_auc", "eer",
                                                            "tar_far_1e-2", "tar_far_1e-3")} | {"source": where}
        path.write_text(json.dumps(card, indent=2) + "\n")
        log(f"  updated {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "data" / "faces" / "lfw")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "textbook_lfw_view2.json")
    parser.add_argument("--roc", type=Path, default=REPO / "benchmarks" / "results" / "textbook_roc.png")
    parser.add_argument("--model", default="dlib_resnet29", help="the deep embedding model (its template aligns)")
    parser.add_argument("--update-cards", action="store_true",
                        help="record the View 2 accuracy in the classical models' model.json and the verifiers' "
                             "verifier.json (extra.lfw_view2_accuracy / metrics.lfw_view2); weights untouched")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(max(1, int(os.environ.get("FACEREC_TORCH_THREADS", "1"))))
    from facerec.api import evaluation_pipeline
    from facerec.decisions.plots import plot_roc
    from facerec.evaluation.pairs import cached_alignment

    start = time.perf_counter()
    pairs = view2_pairs(args.lfw)
    labels, folds = labels_and_folds(pairs)
    paths = sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})
    pipeline = evaluation_pipeline(model=args.model)
    aligned = cached_alignment(pipeline, paths, cache_dir=EVAL_CROPS)
    keys = list(aligned.crops)
    crops = np.stack([aligned.crops[k] for k in keys])
    index = {k: i for i, k in enumerate(keys)}
    ia = np.array([index.get(p.path_a, -1) for p in pairs])
    ib = np.array([index.get(p.path_b, -1) for p in pairs])
    crops_key = hashlib.sha256("\n".join(str(k) for k in keys).encode() + crops[:: max(1, len(crops) // 64)].tobytes()
                               ).hexdigest()
    log(f"{len(pairs)} pairs, {len(paths)} images: {len(keys)} aligned ({len(aligned.relaxed)} relaxed, "
        f"{len(aligned.failed)} without a face) in {time.perf_counter() - start:.0f} s")

    deep = load_model(args.model)
    eigen, fisher, lbp = load_model("eigenfaces"), load_model("fisherfaces"), load_model("lbph")
    learned = [LearnedScorer.load(args.model)]
    chi2_variant = f"verifier_{args.model}_chi2"
    if (REPO / "facerec" / "weights" / chi2_variant / "verifier.json").is_file():
        learned.append(LearnedScorer.load(chi2_variant))
    cfg = lbp.card.extra["lbp"]
    lbp_name = (f"LBP({cfg['points']},{cfg['radius']:g}) {cfg['method']}, {cfg['grid'][0]}×{cfg['grid'][1]} cells, "
                f"{lbp.card.extra['cell_weights']} cell weights")
    rows = [(f"{args.model} · cosine", "dlib · cosine", deep, CosineScorer())]
    for scorer in learned:
        feats = " + ".join("abs-diff" if f == "absdiff" else "χ² (sign-split)" for f in scorer.features)
        rows.append((f"{args.model} · learned verifier ({scorer.classifier}: {feats})",
                     f"dlib · learned ({feats.replace(' (sign-split)', '')})", deep, scorer))
    rows += [
        (f"Eigenfaces (PCA {eigen.embedding_dim}, whitened) · cosine", "Eigenfaces (whitened)", eigen,
         CosineScorer()),
        (f"Eigenfaces (PCA {eigen.embedding_dim}, unwhitened) · cosine", "Eigenfaces (plain)",
         UnwhitenedEigenfaces(eigen), CosineScorer()),
        (f"Fisherfaces (PCA {fisher.card.extra['pca_dims']} + LDA {fisher.card.extra['lda_dims']}) · cosine",
         "Fisherfaces", fisher, CosineScorer()),
        (f"{lbp_name} · −χ²", "LBP · −χ²", lbp, ChiSquareScorer()),
        (f"{lbp_name} · Bhattacharyya (index inner product)", "LBP · Bhattacharyya", lbp, CosineScorer()),
    ]
    embeddings: dict[str, np.ndarray] = {}
    results, curves = [], {}
    for name, short, model, scorer in rows:
        if model.id not in embeddings:
            embeddings[model.id] = embed_all(model, crops, crops_key)
        t0 = time.perf_counter()
        scores, failed = pair_scores(scorer, embeddings[model.id], ia, ib)
        summary = summarise(scores, labels, folds)
        results.append({"method": name, "model": model.id, "scorer": scorer.name,
                        "scorer_id": getattr(scorer, "id", scorer.name), "failed_pairs": failed,
                        "score_seconds": time.perf_counter() - t0, **summary})
        curves[short] = metrics.roc_curve(scores, labels)
        log(f"  {name}: {summary['accuracy_mean']:.4f} ± {summary['accuracy_std']:.4f}")

    header = ("| method | 10-fold accuracy ± std | ROC AUC | EER | TAR@FAR=1e-2 | TAR@FAR=1e-3 |\n"
              "|---|---|---|---|---|---|")
    lines = [header] + [
        f"| {r['method']} | {100 * r['accuracy_mean']:.2f}% ± {100 * r['accuracy_std']:.2f} | {r['roc_auc']:.4f} | "
        f"{100 * r['eer']:.2f}% | {r['tar_far_1e-2']:.3f} | {r['tar_far_1e-3']:.3f} |" for r in results]
    table = "\n".join(lines)
    print(table)

    out = {
        "benchmark": "LFW View 2 (pairs.txt, 10 folds x 300 + 300), textbook methods on shared dlib-template crops",
        "date": date.today().isoformat(),
        "platform": f"{platform.platform()}, {platform.processor() or platform.machine()}, "
                    f"torch threads {torch.get_num_threads()}",
        "pairs": len(pairs), "images": len(paths), "aligned": len(keys), "relaxed_detections": len(aligned.relaxed),
        "images_without_face": len(aligned.failed),
        "failure_handling": "a pair with an image without a face scores (lowest measured score - 1): a reject",
        "protocol": "unrestricted, labeled outside data (trained parts fitted on celeba_wild training identities, "
                    "LFW-overlap identities excluded; dlib's network on its author's data)",
        "accuracy": "LFW 10-fold: per fold, the best-accuracy threshold of the other 9 folds; "
                    "std = sample std (ddof 1)",
        "tar_at_far": "honest threshold over the 3,000 impostor pairs (facerec.decisions.metrics.threshold_at_far); "
                      "FAR 1e-3 = at most 3 impostor pairs accepted",
        "artefacts": {m.id: m.card.weights_sha256 for m in (deep, eigen, fisher, lbp)}
                     | {s.id: s.card["weights_sha256"] for s in learned},
        "results": results,
        "table_markdown": table,
        "seconds": time.perf_counter() - start,
    }
    if args.update_cards:
        update_cards(results, [deep, eigen, fisher, lbp], learned)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    plot_roc(curves, args.roc, title="LFW View 2, textbook methods")
    log(f"wrote {args.json} and {args.roc} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
