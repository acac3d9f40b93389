"""The textbook methods: learned-verifier pair features and scorers, the classical baselines (Eigenfaces,
Fisherfaces, LBP histograms) and their shipped artefacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facerec.decisions import metrics
from facerec.decisions.scorers import (ChiSquareScorer, CosineScorer, LearnedScorer, Scorer, abs_diff_feature,
                                       chi2_feature, get_scorer, pair_features, score_pairs)
from facerec.models.base import WEIGHTS_ROOT

torch.set_num_threads(1)

def auc(scores, labels) -> float:
    return metrics.roc_curve(np.asarray(scores), np.asarray(labels, dtype=np.int8)).auc


def classical_model(model_id: str):
    from facerec.models.registry import get_model

    return get_model(model_id)


# ------------------------------------------------------------------------------------- pair features
def test_pair_features_match_naive_loops():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 9)), rng.normal(size=(6, 9))
    a[0, :3] = 0.0
    b[0, :3] = 0.0  # 0/0 terms count 0
    a[1, 4], b[1, 4] = 0.3, 0.3
    absdiff = [[abs(x - y) for x, y in zip(ra, rb)] for ra, rb in zip(a, b)]
    chi2 = []
    for ra, rb in zip(a, b):
        p = [max(x, 0.0) for x in ra] + [max(-x, 0.0) for x in ra]
        q = [max(y, 0.0) for y in rb] + [max(-y, 0.0) for y in rb]
        chi2.append([(x - y) ** 2 / (x + y) if x + y > 0 else 0.0 for x, y in zip(p, q)])
    np.testing.assert_allclose(abs_diff_feature(a, b), absdiff, rtol=1e-12, atol=0)
    np.testing.assert_allclose(chi2_feature(a, b), chi2, rtol=1e-12, atol=0)
    np.testing.assert_allclose(pair_features(a, b, ("absdiff", "chi2")), np.hstack([absdiff, chi2]), rtol=1e-12)
    # Symmetric in the two faces; the two signs' chi-square terms of one dimension sum to |a - b| where signs differ.
    np.testing.assert_array_equal(pair_features(a, b, ("absdiff", "chi2")), pair_features(b, a, ("absdiff", "chi2")))
    c = chi2_feature(a, b)
    differ = np.sign(a) * np.sign(b) < 0
    np.testing.assert_allclose((c[:, :9] + c[:, 9:])[differ], np.abs(a - b)[differ], rtol=1e-12)
    # One template against many broadcasts.
    np.testing.assert_allclose(abs_diff_feature(a[0], b), np.abs(a[:1] - b))


def test_cosine_and_chi_square_scorers():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    expected = [x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(a, b)]
    np.testing.assert_allclose(CosineScorer().score(a, b), expected, rtol=1e-12)
    h, g = rng.random((5, 30)), rng.random((5, 30))
    h[:, :4] = g[:, :4] = 0.0
    h /= h.sum(1, keepdims=True)
    g /= g.sum(1, keepdims=True)
    naive = [-sum((x - y) ** 2 / (x + y) for x, y in zip(hr, gr) if x + y > 0) for hr, gr in zip(h, g)]
    t_h, t_g = np.sqrt(h).astype(np.float32), np.sqrt(g).astype(np.float32)  # Hellinger templates, unit-norm
    np.testing.assert_allclose(np.linalg.norm(t_h, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(ChiSquareScorer().score(t_h, t_g), naive, rtol=1e-5)
    for name in ("cosine", "chi2"):
        assert isinstance(get_scorer(name), Scorer)
    i, j = np.array([0, 3, 4, 1]), np.array([2, 2, 0, 1])
    np.testing.assert_allclose(score_pairs(CosineScorer(), a, i, j, chunk=3), CosineScorer().score(a[i], a[j]))


# ---------------------------------------------------------------------------------- learned verifier
@pytest.mark.parametrize("classifier", ["logistic", "mlp"])
def test_learned_verifier_separates_synthetic_pairs(classifier, tmp_path):
    from facerec.train.verifier import fit_classifier, forward_gap, numpy_logit, params_arrays
    from facerec.npzfile import write_npz

    rng = np.random.default_rng(0)
    dim, n = 12, 1500
    # Two Gaussian classes of pair features: genuine pairs differ little, impostors more.
    genuine = rng.normal(0.3, 0.15, size=(n, dim))
    impostor = rng.normal(0.5, 0.15, size=(n, dim))
    x = np.vstack([genuine, impostor])
    y = np.r_[np.ones(n, int), np.zeros(n, int)]
    train = rng.permutation(2 * n)[:n]
    test = np.setdiff1d(np.arange(2 * n), train)
    kw = {"c": 1.0} if classifier == "logistic" else {"hidden": (8,), "alpha": 1e-3}
    params, fitted = fit_classifier(x[train], y[train], classifier, **kw)
    assert forward_gap(params, fitted, x[test]) < 1e-9  # numpy forward pass == scikit-learn
    logits = numpy_logit(params, x[test])
    assert auc(logits, y[test]) > 0.99

    # The stored artefact scores embedding pairs through the same forward pass (absdiff features).
    folder = tmp_path / "verifier_synthetic"
    sha = write_npz(folder / "coef.npz", params_arrays(params))
    card = {"id": folder.name, "embedding_model": "synthetic", "features": ["absdiff"], "classifier": classifier,
            "activation": params["activation"], "default_threshold": 0.0, "weights_file": "coef.npz",
            "weights_sha256": sha}
    (folder / "verifier.json").write_text(json.dumps(card))
    scorer = LearnedScorer(folder, card)
    a = rng.normal(size=(50, dim))
    b = a + np.where(rng.random((50, dim)) < 0.5, 1, -1) * rng.normal(0.3, 0.15, size=(50, dim))
    np.testing.assert_allclose(scorer.score(a, b), numpy_logit(params, np.abs(a - b)), rtol=1e-12)
    np.testing.assert_allclose(scorer.score(a, b), scorer.score(b, a), rtol=1e-12)
    assert np.all((scorer.probability(a, b) > 0) & (scorer.probability(a, b) < 1))


def test_shipped_verifiers_load_and_are_small():
    for name in ("dlib_resnet29", "verifier_dlib_resnet29_chi2"):
        scorer = LearnedScorer.load(name)
        assert scorer.embedding_model == "dlib_resnet29" and scorer.card["score"].startswith("logit")
        rng = np.random.default_rng(0)
        a = rng.normal(size=(4, 128)).astype(np.float32)
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        same, other = scorer.score(a, a), scorer.score(a, a[::-1])
        assert np.all(same > other[[0, 3]].max())  # identical faces score above different ones
    assert get_scorer("learned", "dlib_resnet29") is get_scorer("learned", "dlib_resnet29")  # lazy, loaded once
    added = [p for d in ("verifier_dlib_resnet29", "verifier_dlib_resnet29_chi2", "eigenfaces", "fisherfaces", "lbph")
             for p in (WEIGHTS_ROOT / d).iterdir()]
    assert sum(p.stat().st_size for p in added) < 3 * 2**20


def test_learned_verifier_on_lfw_view1(lfw):
    from facerec.api import evaluation_pipeline
    from facerec.evaluation.lfw_protocol import view1_pairs
    from facerec.evaluation.pairs import align_images

    pairs = view1_pairs(lfw, "test")
    pairs = pairs[:50] + pairs[500:550]  # 50 matched, 50 mismatched
    assert sum(p.same for p in pairs) == 50
    pipeline = evaluation_pipeline(model="dlib_resnet29")
    paths = sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})
    aligned = align_images(pipeline, paths)
    keys = list(aligned.crops)
    emb = dict(zip(keys, pipeline.model.embed(np.stack([aligned.crops[k] for k in keys]))))
    usable = [p for p in pairs if p.path_a in emb and p.path_b in emb]
    assert len(usable) >= 95
    a = np.stack([emb[p.path_a] for p in usable])
    b = np.stack([emb[p.path_b] for p in usable])
    labels = [p.same for p in usable]
    learned = get_scorer("learned", "dlib_resnet29").score(a, b)
    assert auc(learned, labels) > 0.9
    chi2_variant = LearnedScorer.load("verifier_dlib_resnet29_chi2").score(a, b)
    assert auc(chi2_variant, labels) > 0.9


# ------------------------------------------------------------------------------------ classical models
@pytest.fixture(scope="module")
def celeba_crops(data_dir: Path) -> dict:
    """Aligned crops (dlib template) of one training-identity photo and of 12 held-out (validation) identities,
    6 photos each, straight from the photos through the inference pipeline."""
    from facerec.api import evaluation_pipeline
    from facerec.evaluation.pairs import align_images

    root = data_dir / "faces" / "celeba_wild"
    card = json.loads((WEIGHTS_ROOT / "fisherfaces" / "model.json").read_text())
    val_ids = card["extra"]["validation_identities"]
    assert val_ids == json.loads((WEIGHTS_ROOT / "eigenfaces" / "model.json").read_text())["extra"][
        "validation_identities"]
    excluded = set(val_ids) | {r.split(",")[0] for r in (root / "lfw_overlap.csv").read_text().splitlines()[1:]}
    train_id = next(p.name for p in sorted(root.iterdir()) if p.is_dir() and p.name not in excluded)
    chosen = sorted(val_ids)[:12]
    files = [sorted((root / i).glob("*.jpg"))[:6] for i in chosen]
    paths = [sorted((root / train_id).glob("*.jpg"))[0]] + [f for group in files for f in group]
    aligned = align_images(evaluation_pipeline(model="dlib_resnet29"), paths)
    val_paths = [p for group in files for p in group if p in aligned.crops]
    return {
        "train": aligned.crops[paths[0]],
        "val": np.stack([aligned.crops[p] for p in val_paths]),
        "val_labels": np.array([chosen.index(p.parent.name) for p in val_paths]),
    }


def test_eigenfaces_reconstruct_better_with_more_components(celeba_crops):
    model = classical_model("eigenfaces")
    errors = []
    for k in (0, 5, 20, 50, model.embedding_dim):
        x, rec = model.reconstruct(celeba_crops["train"], k)
        errors.append(float(np.mean((x - rec) ** 2)))
    assert all(e1 > e2 for e1, e2 in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.5 * errors[0]  # 150 eigenfaces explain most of a training face beyond the mean


def test_fisherfaces_separate_held_out_identities_better_than_eigenfaces(celeba_crops):
    crops, labels = celeba_crops["val"], celeba_crops["val_labels"]
    assert len(crops) >= 60
    i, j = np.triu_indices(len(crops), 1)
    same = labels[i] == labels[j]
    result = {}
    for name in ("eigenfaces", "fisherfaces"):
        e = classical_model(name).embed(crops)
        result[name] = auc(np.einsum("nd,nd->n", e[i], e[j]), same)
    assert result["fisherfaces"] > result["eigenfaces"] + 0.02, result
    assert result["eigenfaces"] > 0.6, result  # both far from chance on identities neither was fitted on


def test_lbp_histograms_match_scikit_image():
    import cv2
    from skimage.feature import local_binary_pattern

    model = classical_model("lbph")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:150, :150]
    crop = np.clip(np.stack([(xx + yy) * 0.8, 128 + 60 * np.sin(xx / 9.0), 255 - yy * 1.2], -1)
                   + rng.normal(0, 25, (150, 150, 3)), 0, 255).astype(np.uint8)
    norm, lbp = model.card.normalisation, model.card.extra["lbp"]
    x0, y0, x1, y1 = norm["box"]
    grey = np.clip(np.rint(crop[y0:y1, x0:x1].astype(np.float64) @ [0.299, 0.587, 0.114]), 0, 255).astype(np.uint8)
    grey = cv2.resize(grey, tuple(norm["size"]), interpolation=cv2.INTER_AREA)
    codes = local_binary_pattern(grey, lbp["points"], lbp["radius"], method=lbp["method"])
    assert lbp["method"] == "uniform" and codes.max() < lbp["bins_per_cell"]
    cols, rows = lbp["grid"]
    ys = np.rint(np.linspace(0, grey.shape[0], rows + 1)).astype(int)
    xs = np.rint(np.linspace(0, grey.shape[1], cols + 1)).astype(int)
    expected = np.zeros((rows, cols, lbp["bins_per_cell"]))
    for r in range(rows):
        for c in range(cols):
            cell = codes[ys[r]:ys[r + 1], xs[c]:xs[c + 1]]
            counts = np.histogram(cell, bins=lbp["bins_per_cell"], range=(0, lbp["bins_per_cell"]))[0]
            expected[r, c] = counts / cell.size
    np.testing.assert_allclose(model.cell_histograms(crop)[0], expected, atol=1e-12)

    # Template = sqrt of the cell-weighted histogram (unit norm); chi2 scoring recovers it exactly.
    weights = model.cell_weights
    h = (expected * (weights / weights.sum())[:, :, None]).ravel()
    template = model.embed(crop)[0]
    np.testing.assert_allclose(np.linalg.norm(template), 1.0, rtol=1e-6)
    np.testing.assert_allclose(template.astype(np.float64) ** 2, h, atol=1e-6)
    other = np.ascontiguousarray(crop[:, ::-1])
    h2 = model.histograms(other)[0]
    chi2 = sum((p - q) ** 2 / (p + q) for p, q in zip(h, h2) if p + q > 0)
    assert ChiSquareScorer().score(template, model.embed(other)) == pytest.approx(-chi2, rel=1e-4)


def test_classical_cards_declare_runtimes_and_thresholds():
    from facerec.models.registry import RUNTIMES, model_card

    expected = {"eigenfaces": "facerec.models.classical:EigenfacesEmbedder",
                "fisherfaces": "facerec.models.classical:FisherfacesEmbedder",
                "lbp_histogram": "facerec.models.classical:LBPEmbedder"}
    dlib = model_card("dlib_resnet29")
    for model_id in ("eigenfaces", "fisherfaces", "lbph"):
        card = model_card(model_id)
        runtime = card.extra["runtime"]
        assert RUNTIMES[runtime] == expected[runtime]
        assert card.template == dlib.template and -1.0 < card.default_threshold < 1.0
        assert "non-commercial" in card.training_data_licence and "No LFW image" in card.training_data
        model = classical_model(model_id)
        e = model.embed(np.zeros((2, 150, 150, 3), np.uint8) + 90)
        assert e.shape == (2, card.embedding_dim) and np.all(np.isfinite(e))


def test_default_thresholds_follow_the_scorer():
    from facerec.decisions.scorers import default_threshold
    from facerec.models.registry import model_card

    dlib, lbp = model_card("dlib_resnet29"), model_card("lbph")
    assert default_threshold(get_scorer("cosine"), dlib).threshold == dlib.default_threshold
    learned = get_scorer("learned", "dlib_resnet29")
    assert default_threshold(learned, dlib).threshold == learned.default_threshold
    assert default_threshold(get_scorer("chi2"), lbp).threshold == lbp.extra["chi2_default_threshold"] < 0
