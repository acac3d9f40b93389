"""Fit the classical baselines (Eigenfaces, Fisherfaces, LBP histograms) on the training photos' crops.

    python -m facerec.train.classical --cache .cache/crops/dlib_resnet29 --methods eigenfaces fisherfaces lbp

Input: the aligned-crop cache of celeba_wild (`facerec.train.data`, dlib template, 150 x 150), LFW-overlap
identities excluded, split by identity (`--val-fraction`, `--seed`; the same split as
`facerec.train.verifier`). Each model is fitted on the training identities only; the validation identities
give its numbers (verification AUC/EER on every genuine pair + 50,000 impostor pairs, leave-one-out rank-1
nearest-neighbour accuracy) and its default threshold (FAR 1e-3). LFW is never read.

What is fitted (see `facerec.models.classical` for the run time):
- eigenfaces: PCA (scikit-learn, full SVD) of the standardised grey pixels; `--eigen-components` axes,
  whitened unless `--no-whiten`;
- fisherfaces: PCA to `--fisher-pca` dims, then LDA (scikit-learn, SVD solver) to min(classes - 1, PCA dims);
- lbp: no projection; per-cell weights of the chi-square distance, from the training pairs: the diagonal
  Fisher discriminant w_c = max(0, mean_imp - mean_gen) / (var_gen + var_imp) of each cell's chi-square
  distance (normalised to mean 1), kept only if they beat uniform weights on validation (`--lbp-weights`).

Preprocessing defaults (face box 25,15-125,135 of the crop, 30 x 36 px with histogram equalisation for the
subspace methods; 100 x 120 px, LBP(8, 2) "uniform", 7 x 7 cells for LBP) were chosen on the validation split
among a few candidates (box: whole crop / 15,10-135,145 / 25,15-125,135; sizes; equalisation on/off;
whitening; PCA dims 50/100/150; LBP radius 1/2, grids 5/7/8).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facerec.decisions.scorers import chi_square_terms
from facerec.models.base import l2_normalise
from facerec.models.classical import (EigenfacesEmbedder, FisherfacesEmbedder, LBPEmbedder, grey_faces,
                                      lbp_bins, lbp_cell_histograms, pixel_vectors, weighted_histograms)
from facerec.train.artefacts import (CELEBA_TERMS, DEFAULT_CACHE, REPO, cache_description, cache_split,
                                     score_report, validation_pairs, write_json, write_licence)
from facerec.io import sha256_file
from facerec.npzfile import write_npz
from facerec.train.data import verification_pairs

METHODS = ("eigenfaces", "fisherfaces", "lbph")
RUNTIME = {"eigenfaces": "eigenfaces", "fisherfaces": "fisherfaces", "lbph": "lbp_histogram"}
CLASS = {"eigenfaces": EigenfacesEmbedder, "fisherfaces": FisherfacesEmbedder, "lbph": LBPEmbedder}
WEIGHTS_FILE = {"eigenfaces": "eigenfaces.npz", "fisherfaces": "fisherfaces.npz", "lbph": "lbp_cells.npz"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rank1_accuracy(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out nearest neighbour (cosine) accuracy among images whose identity has another image."""
    e = l2_normalise(embeddings).astype(np.float64)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    counts = np.bincount(labels)
    usable = counts[labels] > 1
    return float(np.mean(labels[np.argmax(sim, axis=1)][usable] == labels[usable]))


def evaluate(embeddings: np.ndarray, labels: np.ndarray, pairs, far: float) -> dict[str, Any]:
    vi, vj, vg = pairs
    e = l2_normalise(embeddings).astype(np.float64)
    report = score_report(np.einsum("nd,nd->n", e[vi], e[vj]), vg, far)
    report["rank1_nn_accuracy"] = round(rank1_accuracy(embeddings, labels), 5)
    return report


def fit_eigenfaces(x: np.ndarray, n_components: int, whiten: bool) -> dict[str, np.ndarray]:
    from sklearn.decomposition import PCA

    pca = PCA(n_components=n_components, svd_solver="full").fit(x)
    scale = 1.0 / np.sqrt(pca.explained_variance_) if whiten else np.ones(n_components)
    return {"mean": pca.mean_.astype(np.float32), "components": pca.components_.astype(np.float16),
            "scale": scale.astype(np.float32), "explained_variance": pca.explained_variance_.astype(np.float32)}


def fit_fisherfaces(x: np.ndarray, labels: np.ndarray, pca_dims: int) -> dict[str, np.ndarray]:
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    pca = PCA(n_components=pca_dims, svd_solver="full").fit(x)
    z = pca.transform(x)
    lda = LinearDiscriminantAnalysis(solver="svd").fit(z, labels)
    k = lda._max_components
    scalings = lda.scalings_[:, :k]
    # lda.transform(z) = (z - xbar) @ scalings, z = (x - mean) @ pca_axes.T: one k x D matrix and an offset.
    combined = (pca.components_.T @ scalings).T
    check = lda.transform(z[:50]) - ((x[:50] - pca.mean_) @ combined.T - lda.xbar_ @ scalings)
    assert np.max(np.abs(check)) < 1e-6 * max(1.0, np.max(np.abs(lda.transform(z[:50])))), "PCA+LDA fold failed"
    return {"mean": pca.mean_.astype(np.float32), "components": combined.astype(np.float16),
            "scale": np.ones(k, np.float32), "offset": (lda.xbar_ @ scalings).astype(np.float32),
            "lda_explained_variance_ratio": lda.explained_variance_ratio_[:k].astype(np.float32)}


def lbp_cell_weights(cell_hists: np.ndarray, labels: np.ndarray, n_impostors: int, seed: int) -> np.ndarray:
    """Per-cell weights: the diagonal Fisher discriminant of the per-cell chi-square distances of training
    genuine vs impostor pairs, clipped at 0 and scaled to mean 1."""
    i, j, g = verification_pairs(labels, n_impostors=n_impostors, seed=seed)
    n, rows, cols, bins = cell_hists.shape
    flat = cell_hists.reshape(n, rows * cols, bins)
    dist = np.concatenate([chi_square_terms(flat[i[s:s + 20000]], flat[j[s:s + 20000]]).sum(axis=2)
                           for s in range(0, len(i), 20000)])
    gen, imp = dist[g], dist[~g]
    w = np.maximum(imp.mean(0) - gen.mean(0), 0.0) / (gen.var(0) + imp.var(0))
    w = w / w.mean()
    return w.reshape(rows, cols)


def card(method: str, model_id: str, dim: int, norm: dict, weights_file: str, sha: str, data: str,
         provenance: str, val: dict, template: dict, architecture: str, extra: dict) -> dict[str, Any]:
    return {
        "id": model_id,
        "version": "1",
        "architecture": architecture,
        "embedding_dim": dim,
        "template": template,
        "input_colour": "RGB",
        "normalisation": norm,
        "weights_file": weights_file,
        "weights_sha256": sha,
        "weights_licence": "Fitted by the facerec project; inherits the training data's terms (CelebA: non-commercial "
                           "research only).",
        "training_data": data,
        "training_data_licence": CELEBA_TERMS,
        "provenance": provenance,
        "default_threshold": round(float(val["threshold_at_far"]), 6),
        "threshold_provenance": f"FAR {val['far_target']:g} on the validation pairs of held-out celeba_wild "
                                f"identities ({val['genuine']} genuine, {val['impostor']} impostor pairs; TAR there "
                                f"{val['tar_at_far']}); cosine of the unit templates",
        "lfw_accuracy": "",
        "extra": {"runtime": RUNTIME[method], "default_threshold_far": val["far_target"],
                  "commercial_use": "no: fitted on CelebA photos (non-commercial research only)", **extra,
                  "metrics": {"validation": val}},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facerec.train.classical", description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--out-root", type=Path, required=True,
                        help="model folders go here (<method>/; in a checkout, facerec/weights ships them)")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--far", type=float, default=1e-3)
    parser.add_argument("--box", type=int, nargs=4, default=[25, 15, 125, 135], help="x0 y0 x1 y1 in the crop")
    parser.add_argument("--size", type=int, nargs=2, default=[30, 36], help="w h for Eigen/Fisherfaces")
    parser.add_argument("--no-equalize", action="store_true", help="no histogram equalisation (Eigen/Fisherfaces)")
    parser.add_argument("--eigen-components", type=int, default=150)
    parser.add_argument("--no-whiten", action="store_true", help="plain Eigenfaces projection (no whitening)")
    parser.add_argument("--fisher-pca", type=int, default=150)
    parser.add_argument("--lbp-size", type=int, nargs=2, default=[100, 120], help="w h for LBP")
    parser.add_argument("--lbp-points", type=int, default=8)
    parser.add_argument("--lbp-radius", type=float, default=2.0)
    parser.add_argument("--lbp-method", default="uniform", choices=("uniform", "nri_uniform"))
    parser.add_argument("--lbp-grid", type=int, nargs=2, default=[7, 7], help="cols rows")
    parser.add_argument("--lbp-weights", choices=("auto", "uniform", "fisher"), default="auto")
    args = parser.parse_args(argv)

    from facerec.models.registry import model_card
    from facerec.train.data import load_cache

    start = time.perf_counter()
    cache = load_cache(args.cache)
    meta = cache.meta
    split = cache_split(meta, cache.labels, args.val_fraction, args.seed)
    pairs = validation_pairs(split.val_labels, 50_000, args.seed)
    data = cache_description(meta, split, args.val_fraction, args.seed)
    template = meta["template"]
    base = model_card(meta.get("model_id", "dlib_resnet29"))
    if [list(p) for p in base.template.points] != template["points"]:
        raise SystemExit(f"{args.cache}: template differs from {base.id}'s")
    train_crops, val_crops = cache.images[split.train_idx], cache.images[split.val_idx]
    log(f"{len(train_crops)} training crops ({len(split.train_identities)} identities), {len(val_crops)} validation "
        f"({len(split.val_identities)}) in {time.perf_counter() - start:.0f} s")
    cmd = (f"python -m facerec.train.classical --cache {os.path.relpath(args.cache, REPO)} --val-fraction "
           f"{args.val_fraction} --seed {args.seed}")
    results = {}
    for method in args.methods:
        t0 = time.perf_counter()
        out = args.out_root / method
        out.mkdir(parents=True, exist_ok=True)
        if method in ("eigenfaces", "fisherfaces"):
            norm = {"grey": "ITU-R BT.601 luma of the RGB crop, rounded to uint8", "box": list(args.box),
                    "size": list(args.size), "equalize": not args.no_equalize, "photometric": "zscore",
                    "pixels": "float32 / 255, then per image (x - mean) / std"}
            x = pixel_vectors(grey_faces(train_crops, args.box, args.size, not args.no_equalize), "zscore")
            if method == "eigenfaces":
                arrays = fit_eigenfaces(x, args.eigen_components, not args.no_whiten)
                dim = args.eigen_components
                explained = float(arrays["explained_variance"].sum() / np.var(x, axis=0).sum())
                architecture = (f"Eigenfaces (Turk & Pentland 1991): grey {args.size[0]}x{args.size[1]} face "
                                f"({'histogram-equalised, ' if not args.no_equalize else ''}standardised per image) "
                                f"minus the training mean, projected on the {dim} leading principal components "
                                f"({explained:.1%} of the training pixel variance)"
                                + (", each divided by its standard deviation (whitened: cosine = Mahalanobis cosine)"
                                   if not args.no_whiten else "") + "; compared by cosine. facerec/models/classical.py")
                extra = {"whiten": not args.no_whiten, "explained_variance_ratio": round(explained, 4)}
                flags = f"--eigen-components {dim}" + (" --no-whiten" if args.no_whiten else "")
            else:
                arrays = fit_fisherfaces(x, split.train_labels, args.fisher_pca)
                dim = int(arrays["components"].shape[0])
                architecture = (f"Fisherfaces (Belhumeur, Hespanha & Kriegman 1997): grey {args.size[0]}x"
                                f"{args.size[1]} face (as Eigenfaces) -> PCA to {args.fisher_pca} dims -> LDA over "
                                f"{len(split.train_identities)} training identities to {dim} dims (one stored D x k "
                                "matrix + offset); compared by cosine. facerec/models/classical.py")
                extra = {"pca_dims": args.fisher_pca, "lda_dims": dim}
                flags = f"--fisher-pca {args.fisher_pca}"
            flags += f" --box {' '.join(map(str, args.box))} --size {' '.join(map(str, args.size))}" + \
                (" --no-equalize" if args.no_equalize else "")
        else:
            norm = {"grey": "ITU-R BT.601 luma of the RGB crop, rounded to uint8", "box": list(args.box),
                    "size": list(args.lbp_size), "equalize": False,
                    "template": "sqrt(h): h = per-cell L1-normalised LBP histograms x w_c / sum(w) (sums to 1)"}
            lbp = {"points": args.lbp_points, "radius": args.lbp_radius, "method": args.lbp_method,
                   "grid": list(args.lbp_grid), "bins_per_cell": lbp_bins(args.lbp_points, args.lbp_method),
                   "library": "skimage.feature.local_binary_pattern"}
            grey_t = grey_faces(train_crops, args.box, args.lbp_size)
            grey_v = grey_faces(val_crops, args.box, args.lbp_size)
            hists_t = lbp_cell_histograms(grey_t, args.lbp_points, args.lbp_radius, args.lbp_method, args.lbp_grid)
            hists_v = lbp_cell_histograms(grey_v, args.lbp_points, args.lbp_radius, args.lbp_method, args.lbp_grid)
            uniform = np.ones((args.lbp_grid[1], args.lbp_grid[0]))
            fisher = lbp_cell_weights(hists_t, split.train_labels, 100_000, args.seed)
            chi2_auc = {}
            for name, w in (("uniform", uniform), ("fisher", fisher)):
                h = weighted_histograms(hists_v, w)
                s = -chi_square_terms(h[pairs[0]], h[pairs[1]]).sum(axis=1)
                chi2_auc[name] = score_report(s, pairs[2], args.far)["roc_auc"]
            choice = args.lbp_weights if args.lbp_weights != "auto" else max(chi2_auc, key=chi2_auc.get)
            arrays = {"cell_weights": (fisher if choice == "fisher" else uniform).astype(np.float32)}
            dim = int(np.prod(args.lbp_grid) * lbp["bins_per_cell"])
            architecture = (f"LBP histograms (Ahonen, Hadid & Pietikainen 2006): grey {args.lbp_size[0]}x"
                            f"{args.lbp_size[1]} face, LBP({args.lbp_points}, {args.lbp_radius:g}) "
                            f"'{args.lbp_method}' codes (scikit-image), {args.lbp_grid[0]}x{args.lbp_grid[1]} cells of "
                            f"{lbp['bins_per_cell']}-bin histograms, each L1-normalised, weighted by per-cell weights "
                            f"({choice}) over their sum. Template = sqrt(histogram) (Hellinger map, unit-norm): the "
                            "index's inner product is the Bhattacharyya coefficient; the method's own comparison, "
                            "-chi-square, is `--scorer chi2` (facerec.decisions.scorers.ChiSquareScorer squares the "
                            "templates back into the histograms). facerec/models/classical.py")
            extra = {"lbp": lbp, "cell_weights": choice, "cell_weights_validation_chi2_auc": chi2_auc,
                     "recommended_scorer": "chi2"}
            flags = (f"--lbp-size {' '.join(map(str, args.lbp_size))} --lbp-points {args.lbp_points} --lbp-radius "
                     f"{args.lbp_radius:g} --lbp-method {args.lbp_method} "
                     f"--lbp-grid {' '.join(map(str, args.lbp_grid))} "
                     f"--lbp-weights {args.lbp_weights} --box {' '.join(map(str, args.box))}")
        sha = write_npz(out / WEIGHTS_FILE[method], arrays)
        provenance = f"{cmd} --methods {method} {flags} (scikit-learn, scikit-image; deterministic)"
        # Validation numbers through the run time itself (float16 components and all): write a provisional
        # card, load the model from it, embed the validation crops, then write the final card.
        provisional = card(method, method, dim, norm, WEIGHTS_FILE[method], sha, data, provenance,
                           {"threshold_at_far": 0.0, "far_target": args.far, "genuine": 0, "impostor": 0,
                            "tar_at_far": 0.0}, template, architecture, extra)
        write_json(out / "model.json", provisional)
        model = CLASS[method](out)
        emb_v = np.concatenate([model.embed(val_crops[i:i + 512]) for i in range(0, len(val_crops), 512)])
        val = evaluate(emb_v, split.val_labels, pairs, args.far)
        if method == "lbph":
            from facerec.decisions.scorers import ChiSquareScorer

            chi = ChiSquareScorer().score(emb_v[pairs[0]], emb_v[pairs[1]])
            extra["validation_chi2"] = score_report(chi, pairs[2], args.far)
            extra["chi2_default_threshold"] = extra["validation_chi2"]["threshold_at_far"]
        emb_t = np.concatenate([model.embed(train_crops[i:i + 512]) for i in range(0, len(train_crops), 512)])
        extra["training_rank1_nn_accuracy"] = round(rank1_accuracy(emb_t, split.train_labels), 5)
        final = card(method, method, dim, norm, WEIGHTS_FILE[method], sha, data, provenance, val, template,
                     architecture, extra)
        final["extra"]["validation_identities"] = split.val_identities
        write_json(out / "model.json", final)
        write_licence(out, f"facerec {method} model ({WEIGHTS_FILE[method]})", provenance.split(" (")[0])
        assert sha256_file(out / WEIGHTS_FILE[method]) == sha
        results[method] = val
        log(f"{method}: dim {dim}, validation AUC {val['roc_auc']} EER {val['eer']} rank-1 {val['rank1_nn_accuracy']}"
            + (f", chi2 AUC {extra['validation_chi2']['roc_auc']} (cell weights {choice}: {chi2_auc})"
               if method == "lbph" else "")
            + f"; {(out / WEIGHTS_FILE[method]).stat().st_size / 1024:.0f} KiB; {time.perf_counter() - t0:.0f} s")
    log(json.dumps({m: {k: r[k] for k in ("roc_auc", "eer", "rank1_nn_accuracy")} for m, r in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
