"""Verification metrics against scikit-learn and against cases worked out by hand."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from facerec.decisions.metrics import (
    OperatingPoint,
    best_accuracy_threshold,
    bootstrap_ci,
    det_points,
    eer,
    far_frr_at,
    kfold_accuracy,
    roc_curve,
    tar_at_far,
    threshold_at_far,
)
from facerec.decisions.plots import plot_det, plot_roc

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def synthetic(n_genuine: int, n_impostor: int, seed: int, decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping normal genuine/impostor scores; rounding to `decimals` creates many ties."""
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.normal(1.5, 1.0, n_genuine), rng.normal(0.0, 1.0, n_impostor)]
    if decimals is not None:
        scores = np.round(scores, decimals)
    labels = np.r_[np.ones(n_genuine, int), np.zeros(n_impostor, int)]
    order = rng.permutation(scores.size)
    return scores[order], labels[order]


# --- ROC ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_gen", "n_imp", "decimals", "seed"),
    [(50, 70, None, 0), (200, 300, 1, 1), (31, 29, 0, 2), (1, 1, None, 3), (500, 5, 2, 4)],
)
def test_roc_curve_matches_sklearn(n_gen: int, n_imp: int, decimals: int | None, seed: int) -> None:
    scores, labels = synthetic(n_gen, n_imp, seed, decimals)
    roc = roc_curve(scores, labels)
    fpr, tpr, thresholds = sk_roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_array_equal(roc.far, fpr)
    np.testing.assert_array_equal(roc.tar, tpr)
    np.testing.assert_array_equal(roc.thresholds, thresholds)
    assert roc.auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert (roc.n_genuine, roc.n_impostor) == (n_gen, n_imp)
    assert np.all(np.diff(roc.thresholds) < 0)


def test_roc_curve_all_scores_tied_matches_sklearn() -> None:
    scores, labels = np.full(6, 0.3), np.array([1, 0, 1, 0, 0, 1])
    roc = roc_curve(scores, labels)
    fpr, tpr, thresholds = sk_roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_array_equal(roc.far, fpr)
    np.testing.assert_array_equal(roc.tar, tpr)
    np.testing.assert_array_equal(roc.thresholds, thresholds)
    assert roc.auc == 0.5


@pytest.mark.parametrize(
    ("scores", "labels"),
    [([0.1, 0.2], [1, 1]), ([0.1, 0.2], [0, 0]), ([0.1, np.nan], [1, 0]), ([0.1, 0.2], [1, 2]), ([0.1], [1, 0])],
)
def test_bad_input_is_refused(scores: list[float], labels: list[int]) -> None:
    with pytest.raises(ValueError):
        roc_curve(scores, labels)


def test_det_points_are_far_and_frr() -> None:
    scores, labels = synthetic(40, 60, seed=5, decimals=1)
    roc = roc_curve(scores, labels)
    far, frr = det_points(roc)
    np.testing.assert_array_equal(far, roc.far)
    np.testing.assert_array_equal(frr, 1.0 - roc.tar)
    assert np.all(np.diff(frr) <= 0) and np.all(np.diff(far) >= 0)


# --- EER ------------------------------------------------------------------------------------------


def test_eer_perfectly_separable_is_zero() -> None:
    rate, threshold = eer([0.8, 0.9, 0.1, 0.2], [1, 1, 0, 0])
    assert rate == 0.0
    assert 0.2 < threshold <= 0.8
    assert far_frr_at([0.8, 0.9, 0.1, 0.2], [1, 1, 0, 0], threshold) == (0.0, 0.0)


def test_eer_exact_quarter() -> None:
    # Descending: .8G .7G .65I .6G .4I .3I .2G .1I. Accepting >= 0.6 lets in 1 of 4 impostors and
    # rejects 1 of 4 genuine pairs: FAR = FRR = 0.25 exactly at a ROC point.
    scores = [0.2, 0.6, 0.7, 0.8, 0.1, 0.3, 0.4, 0.65]
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    rate, threshold = eer(scores, labels)
    assert rate == 0.25
    assert threshold == 0.6


def test_eer_interpolates_between_roc_points() -> None:
    # At 0.8: FAR 0, FRR 1/3; at 0.7: FAR 1/2, FRR 1/3. FRR - FAR goes 1/3 -> -1/6, so the crossing is
    # 2/3 of the way: EER = 1/3, threshold = 0.8 - (2/3) * 0.1.
    rate, threshold = eer([0.9, 0.8, 0.3, 0.7, 0.2], [1, 1, 1, 0, 0])
    assert rate == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.8 - 0.1 * 2 / 3)


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [([0.5, 0.5, 0.5, 0.5], [1, 1, 0, 0], 0.5), ([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0], 1.0)],
)
def test_eer_degenerate_cases(scores: list[float], labels: list[int], expected: float) -> None:
    assert eer(scores, labels)[0] == expected


@pytest.mark.parametrize("seed", range(5))
def test_eer_lies_between_far_and_frr_at_its_threshold(seed: int) -> None:
    # Between two adjacent scores the decisions do not change, so at the interpolated threshold the
    # measured FAR and FRR bracket the EER.
    scores, labels = synthetic(300, 400, seed, decimals=1 if seed % 2 else None)
    rate, threshold = eer(scores, labels)
    far, frr = far_frr_at(scores, labels, threshold)
    assert far - 1e-12 <= rate <= frr + 1e-12


# --- thresholds at a target FAR -------------------------------------------------------------------


@pytest.mark.parametrize("decimals", [None, 1])
@pytest.mark.parametrize("target", [0.0, 0.005, 0.01, 0.05, 0.1, 0.29, 0.5, 0.9])
def test_threshold_at_far_is_honest_and_lowest(target: float, decimals: int | None) -> None:
    scores, labels = synthetic(150, 200, seed=7, decimals=decimals)
    op = threshold_at_far(scores, labels, target)
    far, frr = far_frr_at(scores, labels, op.threshold)
    assert (op.far, op.frr) == (far, frr)
    assert op.far <= target
    assert op.tar == pytest.approx(1.0 - op.frr)
    assert (op.n_genuine, op.n_impostor) == (150, 200)
    # The next float down is an impostor score: accepting it (and its ties) breaks the promise.
    assert far_frr_at(scores, labels, np.nextafter(op.threshold, -np.inf))[0] > target
    # And no ROC point that keeps the promise accepts more genuine pairs (checked with sklearn).
    fpr, tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
    assert op.tar == tpr[fpr <= target].max()
    assert tar_at_far(scores, labels, target) == op.tar


def test_threshold_at_far_uses_every_allowed_false_accept() -> None:
    # 0.29 * 100 is 28.999999999999996 in floats; 29 of 100 impostors is still FAR 0.29 <= 0.29.
    impostor = np.arange(100, dtype=float)
    op = threshold_at_far(np.r_[impostor, 200.0], np.r_[np.zeros(100), 1], 0.29)
    assert op.far == 0.29
    assert op.threshold == np.nextafter(70.0, np.inf)
    assert not op.resolution_limited


def test_threshold_at_far_resolution_limited() -> None:
    scores, labels = synthetic(100, 100, seed=8)
    op = threshold_at_far(scores, labels, 0.001)  # 0.001 * 100 impostors < 1
    top_impostor = scores[labels == 0].max()
    assert op.resolution_limited
    assert op.threshold == np.nextafter(top_impostor, np.inf)
    assert op.far == 0.0
    assert op.target_far == 0.001
    assert not threshold_at_far(scores, labels, 0.01).resolution_limited  # exactly one impostor allowed


@pytest.mark.parametrize("target", [-0.1, 1.0, 1.5])
def test_threshold_at_far_refuses_impossible_targets(target: float) -> None:
    with pytest.raises(ValueError):
        threshold_at_far([0.1, 0.9], [0, 1], target)


def test_far_frr_at_by_hand() -> None:
    scores = [0.9, 0.6, 0.4, 0.7, 0.5, 0.1]
    labels = [1, 1, 1, 0, 0, 0]
    assert far_frr_at(scores, labels, 0.5) == (2 / 3, 1 / 3)
    assert far_frr_at(scores, labels, 0.95) == (0.0, 1.0)
    assert far_frr_at(scores, labels, 0.0) == (1.0, 0.0)


# --- accuracy and the LFW k-fold protocol ---------------------------------------------------------


def test_best_accuracy_threshold_by_hand() -> None:
    # Descending: .9G .8G .7I .6G .3I .1I. Accepting >= .8 or >= .6 both get 5 of 6 right; the stricter
    # wins and the threshold sits mid-way to the next score (0.7).
    scores = [0.6, 0.8, 0.9, 0.1, 0.3, 0.7]
    labels = [1, 1, 1, 0, 0, 0]
    threshold, accuracy = best_accuracy_threshold(scores, labels)
    assert threshold == pytest.approx(0.75)
    assert accuracy == pytest.approx(5 / 6)


def test_best_accuracy_threshold_between_adjacent_floats() -> None:
    # Their midpoint rounds to the impostor score; the threshold must still reject it.
    impostor = np.nextafter(1.0, 0.0)
    threshold, accuracy = best_accuracy_threshold([1.0, impostor], [1, 0])
    assert (threshold, accuracy) == (1.0, 1.0)


def test_kfold_accuracy_by_hand() -> None:
    # Held-out fold 0 or 1: the other folds' best threshold is (0.7 + 0.4) / 2 and both held-out folds
    # are separated by it. Held-out fold 2: folds 0-1 are separable at (0.75 + 0.3) / 2, which rejects
    # fold 2's hard genuine 0.35 and its hard impostor 0.4: 3 of 4.
    scores = [0.9, 0.8, 0.2, 0.1, 0.85, 0.75, 0.3, 0.15, 0.7, 0.35, 0.4, 0.05]
    labels = [1, 1, 0, 0] * 3
    folds = [0] * 4 + [1] * 4 + [2] * 4
    order = np.random.default_rng(9).permutation(12)  # row order must not matter
    mean, std, per_fold, thresholds = kfold_accuracy(
        np.array(scores)[order], np.array(labels)[order], np.array(folds)[order]
    )
    np.testing.assert_allclose(per_fold, [1.0, 1.0, 0.75])
    np.testing.assert_allclose(thresholds, [0.55, 0.55, 0.525])
    assert mean == pytest.approx(11 / 12)
    assert std == pytest.approx(np.std([1.0, 1.0, 0.75], ddof=1))


def test_kfold_accuracy_needs_two_folds() -> None:
    with pytest.raises(ValueError):
        kfold_accuracy([0.1, 0.9], [0, 1], [0, 0])


# --- bootstrap ------------------------------------------------------------------------------------


def eer_rate(scores: np.ndarray, labels: np.ndarray) -> float:
    return eer(scores, labels)[0]


def test_bootstrap_ci_contains_estimate_and_narrows_with_data() -> None:
    small_s, small_l = synthetic(100, 100, seed=10)
    large_s, large_l = synthetic(2000, 2000, seed=11)
    low_s, high_s = bootstrap_ci(small_s, small_l, eer_rate, n_boot=200)
    low_l, high_l = bootstrap_ci(large_s, large_l, eer_rate, n_boot=200)
    assert low_s <= eer_rate(small_s, small_l) <= high_s
    assert low_l <= eer_rate(large_s, large_l) <= high_l
    assert high_l - low_l < (high_s - low_s) / 2  # ~ 1 / sqrt(20) as wide


def test_bootstrap_ci_is_stratified_and_reproducible() -> None:
    scores, labels = synthetic(30, 70, seed=12)
    assert bootstrap_ci(scores, labels, lambda s, y: float(y.sum()), n_boot=50) == (30.0, 30.0)
    threshold = lambda s, y: threshold_at_far(s, y, 0.1).threshold  # noqa: E731
    first = bootstrap_ci(scores, labels, threshold, n_boot=100, seed=3)
    assert first == bootstrap_ci(scores, labels, threshold, n_boot=100, seed=3)
    assert first[0] < first[1]


# --- speed ----------------------------------------------------------------------------------------


def test_million_impostors_under_a_second() -> None:
    scores, labels = synthetic(6_000, 1_000_000, seed=13)
    for fn, args in ((roc_curve, ()), (eer, ()), (threshold_at_far, (1e-4,)), (best_accuracy_threshold, ())):
        best = np.inf
        for _ in range(2):  # best of two: the machine is shared
            start = time.perf_counter()
            fn(scores, labels, *args)
            best = min(best, time.perf_counter() - start)
        assert best < 1.0, f"{fn.__name__} took {best:.2f} s"


# --- plots ----------------------------------------------------------------------------------------


def assert_png(path) -> None:
    data = path.read_bytes()
    assert len(data) > len(PNG_SIGNATURE) and data.startswith(PNG_SIGNATURE)


def test_plots_write_png(tmp_path) -> None:
    small = roc_curve(*synthetic(60, 90, seed=14, decimals=1))
    big_scores, big_labels = synthetic(3_000, 50_000, seed=15)  # more points than are drawn
    big = roc_curve(big_scores, big_labels)
    op = threshold_at_far(big_scores, big_labels, 1e-3)
    assert isinstance(op, OperatingPoint)
    curves = {"small": small, "big": big}
    roc_png = plot_roc(curves, tmp_path / "roc.png", "ROC test", {"FAR 1e-3": op})
    det_png = plot_det(curves, tmp_path / "sub" / "det.png", "DET test", {"FAR 1e-3": op})
    assert roc_png == tmp_path / "roc.png" and det_png == tmp_path / "sub" / "det.png"
    assert_png(roc_png)
    assert_png(det_png)


def test_importing_plots_does_not_load_pyplot() -> None:
    code = "import sys, facerec.decisions.plots; sys.exit('matplotlib.pyplot' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
