"""Train a learned verifier: face verification as binary classification of embedding pairs.

    python -m facerec.train.verifier --cache .cache/crops/dlib_resnet29 --model dlib_resnet29 \
        --features absdiff --classifier logistic --out facerec/weights/verifier_dlib_resnet29

Both faces of a pair go through the one shared-weight embedding network (Siamese; here the shipped model named
by --model, frozen), a symmetric pair feature is formed (`facerec.decisions.scorers.pair_features`: |f1 - f2|
and optionally the sign-split chi-square terms) and a small classifier learns genuine vs impostor:
L2 logistic regression by default (class-balanced, C chosen on the validation identities), or a one-hidden-
layer MLP (`--classifier mlp`). Features are standardised (mean/scale stored with the weights). The
validation AUC keeps rising as C falls until about 1e-5, where it plateaus (the limit is the class-mean-
difference direction): with 249 training identities, per-dimension re-weighting of a metric-learned embedding
mostly fits those identities. A strongly regularised logit is shrunk, so a Platt sigmoid (a * logit + b, a > 0,
fitted on the training pairs) is folded into the output layer: same ranking, usable probabilities.

Data: the training photos' aligned-crop cache (celeba_wild, `facerec.train.data`), LFW-overlap identities
excluded, split by identity (`--val-fraction`, `--seed`): genuine pairs = every same-identity pair of the
training identities, impostor pairs = `--train-impostors` cross-identity pairs drawn uniformly; validation =
every genuine pair of the held-out identities plus `--val-impostors` impostor pairs. LFW is never read.
The default threshold (logit) is the FAR-1e-3 threshold on the validation pairs.

The weights are stored as a plain-numpy .npz (byte-stable), the run time is the numpy forward pass in
`facerec.decisions.scorers.classifier_logit` (checked here against scikit-learn's own output).
Embeddings of the cache are computed once (~11 ms a crop on one CPU thread) and kept under `.cache/embeddings/`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facerec.decisions.scorers import PAIR_FEATURES, classifier_logit, pair_features, sigmoid
from facerec.train.artefacts import (CELEBA_TERMS, DEFAULT_CACHE, REPO, cache_description, cache_split,
                                     score_report, validation_pairs, write_json, write_licence)
from facerec.npzfile import write_npz
from facerec.train.data import verification_pairs

WEIGHTS_FILE = "coef.npz"
C_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0)
EMBED_CACHE = REPO / ".cache" / "embeddings"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cache_embeddings(cache_folder: Path, model_id: str, store: Path = EMBED_CACHE, batch: int = 256):
    """(embeddings N x D float32, labels, meta) of every crop of the cache, computed once per (cache, model
    weights) and stored under `store`."""
    from facerec.models.registry import get_model
    from facerec.train.data import load_cache

    meta = json.loads((Path(cache_folder) / "meta.json").read_text())
    model = get_model(model_id)
    key = hashlib.sha256(json.dumps([str(Path(cache_folder).resolve()), meta["n_images"], meta["total_bytes"],
                                     meta.get("built_at"), model.card.weights_sha256]).encode()).hexdigest()[:16]
    file = Path(store) / f"{model_id}-{key}.npz"
    if file.is_file():
        with np.load(file, allow_pickle=False) as npz:
            return npz["embeddings"], npz["labels"].astype(np.int64), meta
    cache = load_cache(cache_folder)
    start, parts = time.perf_counter(), []
    for i in range(0, len(cache.images), batch):
        parts.append(model.embed(cache.images[i:i + batch]))
        log(f"embedded {min(i + batch, len(cache.images))}/{len(cache.images)} crops "
            f"({time.perf_counter() - start:.0f} s)")
    embeddings = np.concatenate(parts).astype(np.float32)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp.npz")
    np.savez(tmp, embeddings=embeddings, labels=cache.labels)
    os.replace(tmp, file)
    return embeddings, cache.labels, meta


def fit_classifier(x: np.ndarray, y: np.ndarray, classifier: str = "logistic", c: float = 1.0,
                   hidden: Sequence[int] = (64,), alpha: float = 1e-3, seed: int = 0) -> tuple[dict, object]:
    """Standardise, fit; returns (the numpy parameters `classifier_logit` runs, the sklearn estimator)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    xs = scaler.transform(x)
    if classifier == "logistic":
        est = LogisticRegression(C=c, class_weight="balanced", max_iter=5000, tol=1e-6).fit(xs, y)
        weights, biases, activation = [est.coef_.T.copy()], [est.intercept_.copy()], "identity"
    elif classifier == "mlp":
        est = MLPClassifier(hidden_layer_sizes=tuple(hidden), alpha=alpha, early_stopping=True, random_state=seed,
                            max_iter=300, n_iter_no_change=10, batch_size=256).fit(xs, y)
        weights, biases, activation = [w.copy() for w in est.coefs_], [b.copy() for b in est.intercepts_], \
            est.activation
    else:
        raise ValueError(f"classifier must be 'logistic' or 'mlp', got {classifier!r}")
    params = {"mean": scaler.mean_.copy(), "scale": scaler.scale_.copy(), "weights": weights, "biases": biases,
              "activation": activation}
    return params, (scaler, est)


def forward_gap(params: dict, fitted, x: np.ndarray) -> float:
    """Largest difference between the numpy forward pass and scikit-learn's own output: on the logit for
    logistic regression (decision_function), on the probability for the MLP (it exposes no logit)."""
    scaler, est = fitted
    xs = scaler.transform(x)
    logit = numpy_logit(params, x)
    if hasattr(est, "decision_function"):
        return float(np.max(np.abs(logit - est.decision_function(xs))))
    return float(np.max(np.abs(sigmoid(logit) - est.predict_proba(xs)[:, 1])))


def platt_scaling(logits: np.ndarray, genuine: np.ndarray) -> tuple[float, float]:
    """(a, b) of Platt's sigmoid fit P(same) = sigmoid(a * logit + b) on the training pairs, class-balanced
    (so 0 stays the equal-prior point): a strongly regularised classifier has the right ranking but a
    shrunken logit scale, which this restores. Monotone (a > 0), so ROC, EER and FAR points do not move."""
    from sklearn.linear_model import LogisticRegression

    est = LogisticRegression(C=1e6, class_weight="balanced", max_iter=1000, tol=1e-10)
    est.fit(np.asarray(logits, dtype=np.float64)[:, None], np.asarray(genuine, dtype=int))
    a, b = float(est.coef_[0, 0]), float(est.intercept_[0])
    if a <= 0:
        raise SystemExit(f"Platt scaling gave a non-increasing map (a = {a}); the classifier ranks backwards")
    return a, b


def fold_platt(params: dict, a: float, b: float) -> dict:
    """The same network with its output layer rescaled: logit' = a * logit + b."""
    weights, biases = list(params["weights"]), list(params["biases"])
    weights[-1], biases[-1] = a * weights[-1], a * biases[-1] + b
    return {**params, "weights": weights, "biases": biases}


def numpy_logit(params: dict, x: np.ndarray) -> np.ndarray:
    return classifier_logit(x, params["mean"], params["scale"], params["weights"], params["biases"],
                            params["activation"])


def params_arrays(params: dict) -> dict[str, np.ndarray]:
    arrays = {"mean": params["mean"].astype(np.float64), "scale": params["scale"].astype(np.float64),
              "n_layers": np.array([len(params["weights"])], dtype=np.int64)}
    for i, (w, b) in enumerate(zip(params["weights"], params["biases"])):
        arrays[f"W{i}"] = np.asarray(w, dtype=np.float64)
        arrays[f"b{i}"] = np.asarray(b, dtype=np.float64).reshape(-1)
    return arrays


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facerec.train.verifier", description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="aligned-crop cache of the training photos")
    parser.add_argument("--model", default="dlib_resnet29", help="embedding model (its template made the cache)")
    parser.add_argument("--features", default="absdiff", help=f"comma-separated, of {sorted(PAIR_FEATURES)}")
    parser.add_argument("--classifier", choices=("logistic", "mlp"), default="logistic")
    parser.add_argument("--c", type=float, nargs="*", default=list(C_GRID),
                        help="logistic regression inverse regularisation; several = chosen on validation AUC")
    parser.add_argument("--hidden", type=int, nargs="+", default=[64], help="MLP hidden layer sizes")
    parser.add_argument("--alpha", type=float, nargs="*", default=[1e-3, 1e-2],
                        help="MLP L2 penalty; several = chosen on validation AUC")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-impostors", type=int, default=200_000)
    parser.add_argument("--val-impostors", type=int, default=50_000)
    parser.add_argument("--far", type=float, default=1e-3, help="FAR of the default threshold (validation pairs)")
    parser.add_argument("--no-platt", action="store_true", help="store the classifier's raw logit (no Platt scaling)")
    parser.add_argument("--out", type=Path, required=True,
                        help="model folder to write (in a checkout, facerec/weights/verifier_<model> ships it; "
                             "training never writes into an installed package by default)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(max(1, int(os.environ.get("FACEREC_TORCH_THREADS", "1"))))
    from facerec.models.registry import model_card

    start = time.perf_counter()
    features = tuple(f.strip() for f in args.features.split(",") if f.strip())
    out = args.out
    card = model_card(args.model)
    embeddings, labels, meta = cache_embeddings(args.cache, args.model)
    if meta.get("template") and [list(p) for p in card.template.points] != meta["template"]["points"]:
        raise SystemExit(f"{args.cache} was aligned for another template than {args.model}'s")
    split = cache_split(meta, labels, args.val_fraction, args.seed)
    emb_t, emb_v = embeddings[split.train_idx], embeddings[split.val_idx]

    ti, tj, tg = verification_pairs(split.train_labels, n_impostors=args.train_impostors, seed=args.seed)
    if args.classifier == "mlp":  # no class weights in MLPClassifier: balance by keeping as many impostors
        rng = np.random.default_rng(args.seed)
        keep = np.r_[np.flatnonzero(tg), rng.choice(np.flatnonzero(~tg), int(tg.sum()), replace=False)]
        ti, tj, tg = ti[keep], tj[keep], tg[keep]
    vi, vj, vg = validation_pairs(split.val_labels, args.val_impostors, args.seed)
    x_train = pair_features(emb_t[ti], emb_t[tj], features)
    x_val = pair_features(emb_v[vi], emb_v[vj], features)
    log(f"{len(split.train_identities)} training identities: {int(tg.sum())} genuine + {int((~tg).sum())} impostor "
        f"pairs; {len(split.val_identities)} validation identities: {int(vg.sum())} + {int((~vg).sum())}; "
        f"{x_train.shape[1]} features ({', '.join(features)})")

    grid = args.c if args.classifier == "logistic" else args.alpha
    search, best = [], None
    for value in grid:
        kw = {"c": value} if args.classifier == "logistic" else {"alpha": value, "hidden": args.hidden}
        params, fitted = fit_classifier(x_train, tg.astype(int), args.classifier, seed=args.seed, **kw)
        logits = numpy_logit(params, x_val)
        report = score_report(logits, vg, args.far)
        search.append({"C" if args.classifier == "logistic" else "alpha": value, "val_roc_auc": report["roc_auc"],
                       "val_eer": report["eer"]})
        log(f"  {search[-1]}")
        if best is None or report["roc_auc"] > best[2]["roc_auc"]:
            best = (value, (params, fitted), report)
    value, (params, fitted), val_report = best
    gap = forward_gap(params, fitted, x_val)
    if gap > 1e-6:
        raise SystemExit(f"numpy forward pass differs from scikit-learn by {gap}")
    platt = None
    if not args.no_platt:
        raw_val = numpy_logit(params, x_val)
        platt = platt_scaling(numpy_logit(params, x_train), tg)
        params = fold_platt(params, *platt)
        assert np.allclose(numpy_logit(params, x_val), platt[0] * raw_val + platt[1], rtol=1e-9, atol=1e-9)
        val_report = score_report(numpy_logit(params, x_val), vg, args.far)
    cosine = np.einsum("nd,nd->n", emb_v[vi].astype(np.float64), emb_v[vj].astype(np.float64))
    cosine_report = score_report(cosine, vg, args.far)
    train_report = score_report(numpy_logit(params, x_train), tg, args.far)

    sha = write_npz(out / WEIGHTS_FILE, params_arrays(params))
    hyper = ({"C": value, "class_weight": "balanced", "solver": "lbfgs"} if args.classifier == "logistic" else
             {"hidden_layer_sizes": list(args.hidden), "alpha": value, "activation": params["activation"],
              "solver": "adam", "early_stopping": True, "random_state": args.seed,
              "impostors": "subsampled to the genuine count"})
    command = ("python -m facerec.train.verifier " + " ".join(
        [f"--cache {os.path.relpath(args.cache, REPO)}", f"--model {args.model}", f"--features {','.join(features)}",
         f"--classifier {args.classifier}", f"--val-fraction {args.val_fraction}", f"--seed {args.seed}",
         f"--train-impostors {args.train_impostors}", f"--val-impostors {args.val_impostors}",
         *(["--no-platt"] if args.no_platt else []),
         f"--out {os.path.relpath(out, REPO)}"]))
    verifier = {
        "id": out.name,
        "version": "1",
        "kind": "verifier",
        "embedding_model": args.model,
        "embedding_weights_sha256": card.weights_sha256,
        "embedding_dim": card.embedding_dim,
        "features": list(features),
        "feature_definition": {
            "absdiff": "|f1 - f2| element-wise on the unit embeddings (D values)",
            "chi2": "(p1 - p2)^2 / (p1 + p2) element-wise, 0 where p1 + p2 = 0, on the sign-split embeddings "
                    "p = [relu(f), relu(-f)] (2D values): keeps the chi-square denominator non-negative without an "
                    "arbitrary offset (see facerec/decisions/scorers.py)",
        },
        "n_features": int(x_train.shape[1]),
        "classifier": args.classifier,
        "activation": params["activation"],
        "hyperparameters": hyper,
        "hyperparameter_search": search,
        "score": "logit (pre-sigmoid output, log-odds of 'same' under the balanced training prior"
                 + (", Platt-scaled on the training pairs and folded into the output layer" if platt else "")
                 + "); accept when logit >= threshold; P(same) = sigmoid(logit)",
        "platt_scaling": None if platt is None else {"a": platt[0], "b": platt[1],
                                                     "fit_on": "training pairs, class-balanced"},
        "forward": "x = (pair_features - mean) / scale; hidden layers h = activation(h @ W_i + b_i); "
                   "logit = h @ W_last "
                   "+ b_last (facerec.decisions.scorers.classifier_logit)",
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": sha,
        "weights_licence": "Trained by the facerec project; inherits the training data's terms (CelebA: "
                           "non-commercial research only) and rides on the embedding model's weights "
                           f"({card.weights_licence}).",
        "training_data": cache_description(meta, split, args.val_fraction, args.seed) + (
            f" Training pairs: {int(tg.sum())} genuine (every same-identity pair) + {int((~tg).sum())} impostor "
            f"(uniform, seed {args.seed}). Validation pairs: {int(vg.sum())} genuine + {int((~vg).sum())} impostor."),
        "training_data_licence": CELEBA_TERMS,
        "validation_identities": split.val_identities,
        "provenance": command + f" (scikit-learn; numpy forward pass checked against scikit-learn: max |diff| "
                                f"{gap:.1e})",
        "default_threshold": float(val_report["threshold_at_far"]),
        "default_threshold_far": args.far,
        "threshold_provenance": f"FAR {args.far:g} on the validation pairs ({val_report['impostor']} impostor "
                                f"pairs of {len(split.val_identities)} held-out celeba_wild identities; TAR there "
                                f"{val_report['tar_at_far']}); C/alpha was also chosen on them (by AUC), so these "
                                "numbers are slightly optimistic",
        "metrics": {"validation": val_report, "validation_cosine_baseline": cosine_report, "training": train_report},
    }
    write_json(out / "verifier.json", verifier)
    write_licence(out, f"facerec learned verifier {out.name} ({WEIGHTS_FILE}) over {args.model} embeddings; the "
                       f"embedding model's own licence is in facerec/weights/{args.model}/", command)
    log(f"validation: learned AUC {val_report['roc_auc']} EER {val_report['eer']} TAR@FAR{args.far:g} "
        f"{val_report['tar_at_far']} | cosine AUC {cosine_report['roc_auc']} EER {cosine_report['eer']} "
        f"TAR {cosine_report['tar_at_far']}")
    log(f"wrote {out / 'verifier.json'} and {out / WEIGHTS_FILE} (sha256 {sha[:16]}...) in "
        f"{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
