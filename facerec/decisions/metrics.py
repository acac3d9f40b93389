"""Verification metrics on similarity scores (higher = more likely the same person).

Conventions used everywhere here: label 1 is a genuine pair, 0 an impostor pair, and a pair is accepted
when `score >= threshold`. FAR (false accept rate) is the share of impostor pairs accepted, FRR (false
reject rate) the share of genuine pairs rejected and TAR = 1 - FRR.

Pure numpy and vectorised (one sort per curve), so calibration on a million impostor scores and the
bootstrap stay fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

Statistic = Callable[[NDArray[np.float64], NDArray[np.bool_]], float]


@dataclass(frozen=True)
class RocCurve:
    """One point per distinct score, thresholds decreasing from +inf (accept nothing) to the lowest score.

    Identical to `sklearn.metrics.roc_curve(labels, scores, drop_intermediate=False)`: `far` is its fpr,
    `tar` its tpr.
    """

    far: NDArray[np.float64]
    tar: NDArray[np.float64]
    thresholds: NDArray[np.float64]
    n_genuine: int
    n_impostor: int

    @property
    def frr(self) -> NDArray[np.float64]:
        return 1.0 - self.tar

    @property
    def auc(self) -> float:
        """Area under the ROC curve (trapezoidal, so ties count one half, as in `roc_auc_score`)."""
        return float(np.trapezoid(self.tar, self.far))


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold and what it measured on the data it was chosen on.

    `resolution_limited` is True when `target_far * n_impostor < 1`: the data cannot show a FAR that
    small, so the threshold is only "above every impostor seen" and the FAR promise is an extrapolation.
    """

    threshold: float
    far: float
    frr: float
    tar: float
    target_far: float
    n_genuine: int
    n_impostor: int
    resolution_limited: bool


def validated(scores: ArrayLike, labels: ArrayLike, positive: str = "genuine pairs",
              negative: str = "impostor pairs") -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Validated 1-D float scores and boolean labels (1 = `positive`, 0 = `negative`); both classes must be
    present for any rate to exist. The class names only word the errors."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    raw = np.asarray(labels).ravel()
    if s.shape != raw.shape:
        raise ValueError(f"scores ({s.size}) and labels ({raw.size}) differ in length")
    if not np.isin(raw, (0, 1)).all():
        raise ValueError(f"labels must be 1 ({positive}) or 0 ({negative})")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite (no NaN or inf)")
    y = raw.astype(bool)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise ValueError(f"need both {positive} and {negative} (got {n_pos} {positive} of {y.size})")
    return s, y


def roc_curve(scores: ArrayLike, labels: ArrayLike) -> RocCurve:
    """The full ROC curve, every distinct score a threshold (nothing dropped, so FAR lookups are exact)."""
    s, y = validated(scores, labels)
    order = np.argsort(s, kind="mergesort")[::-1]  # descending; same order as sklearn
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[last_of_run]
    fps = last_of_run + 1 - tps
    return RocCurve(
        far=np.r_[0.0, fps / fps[-1]],
        tar=np.r_[0.0, tps / tps[-1]],
        thresholds=np.r_[np.inf, s[last_of_run]],
        n_genuine=int(tps[-1]),
        n_impostor=int(fps[-1]),
    )


def eer(scores: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    """Equal error rate and its threshold, interpolated linearly between the two ROC points where FAR and
    FRR cross (the threshold with the same weight), so it does not jump with the score granularity."""
    roc = roc_curve(scores, labels)
    # FRR - FAR scaled by n_genuine * n_impostor: exact integers, so an exact crossing is found exactly.
    # +n_gen*n_imp at the +inf threshold, -n_gen*n_imp at the lowest score, non-increasing in between.
    rejected_genuine = roc.n_genuine - np.rint(roc.tar * roc.n_genuine)
    accepted_impostor = np.rint(roc.far * roc.n_impostor)
    gap = rejected_genuine * roc.n_impostor - accepted_impostor * roc.n_genuine
    i = int(np.argmax(gap <= 0))
    w = gap[i - 1] / (gap[i - 1] - gap[i])
    rate = roc.far[i - 1] + w * (roc.far[i] - roc.far[i - 1])
    hi, lo = roc.thresholds[i - 1], roc.thresholds[i]
    threshold = lo if np.isinf(hi) else hi + w * (lo - hi)
    return float(rate), float(threshold)


def far_frr_at(scores: ArrayLike, labels: ArrayLike, threshold: float) -> tuple[float, float]:
    """(FAR, FRR) when accepting `score >= threshold`."""
    s, y = validated(scores, labels)
    accepted = s >= threshold
    false_accepts = int(np.count_nonzero(accepted & ~y))
    false_rejects = int(np.count_nonzero(~accepted & y))
    n_genuine = int(np.count_nonzero(y))
    return false_accepts / (y.size - n_genuine), false_rejects / n_genuine


def threshold_at_far(scores: ArrayLike, labels: ArrayLike, target_far: float) -> OperatingPoint:
    """The lowest threshold whose measured FAR on these impostors is <= `target_far`.

    With k the largest count such that k / n_impostor <= target_far, the threshold is the next float above
    the (k+1)-th highest impostor score: at most k impostors score strictly higher, and no lower threshold
    keeps that promise. Ties can only make the measured FAR lower, never higher. O(n), no full sort.
    """
    if not 0.0 <= target_far < 1.0:
        raise ValueError(f"target_far must be in [0, 1), got {target_far}")
    s, y = validated(scores, labels)
    impostor, genuine = s[~y], s[y]
    n_imp = impostor.size
    k = int(np.floor(target_far * n_imp))
    # Make `k / n_imp <= target_far` hold in float arithmetic, the comparison callers will check.
    if k + 1 <= n_imp and (k + 1) / n_imp <= target_far:
        k += 1
    if k / n_imp > target_far:
        k -= 1
    kth_highest = np.partition(impostor, n_imp - 1 - k)[n_imp - 1 - k]
    threshold = float(np.nextafter(kth_highest, np.inf))
    accepted = int(np.count_nonzero(genuine >= threshold))
    return OperatingPoint(
        threshold=threshold,
        far=int(np.count_nonzero(impostor >= threshold)) / n_imp,
        frr=(genuine.size - accepted) / genuine.size,
        tar=accepted / genuine.size,
        target_far=float(target_far),
        n_genuine=int(genuine.size),
        n_impostor=int(n_imp),
        resolution_limited=k == 0,
    )


def tar_at_far(scores: ArrayLike, labels: ArrayLike, far: float) -> float:
    """TAR at the honest threshold of `threshold_at_far` (no interpolation above the target)."""
    return threshold_at_far(scores, labels, far).tar


def best_accuracy_threshold(scores: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy; ties go to the strictest threshold.

    The threshold is placed mid-way between the chosen score and the next lower one: every value in that
    gap gives the same accuracy here, and the middle generalises best to a held-out fold.
    """
    roc = roc_curve(scores, labels)
    # Exact integer counts, so equal accuracies tie exactly and the strictest threshold really wins.
    correct = np.rint(roc.tar * roc.n_genuine) + roc.n_impostor - np.rint(roc.far * roc.n_impostor)
    i = int(np.argmax(correct))
    accuracy = float(correct[i] / (roc.n_genuine + roc.n_impostor))
    t = roc.thresholds
    if i == 0:  # reject everything: anything above the top score
        threshold = float(np.nextafter(t[1], np.inf))
    elif i == t.size - 1:  # accept everything
        threshold = float(t[i])
    else:  # the guard keeps adjacent floats, whose midpoint rounds down, from accepting t[i + 1]
        threshold = float(max(t[i + 1] + (t[i] - t[i + 1]) / 2.0, np.nextafter(t[i + 1], np.inf)))
    return threshold, accuracy


def kfold_accuracy(
    scores: ArrayLike, labels: ArrayLike, folds: ArrayLike
) -> tuple[float, float, NDArray[np.float64], NDArray[np.float64]]:
    """The LFW protocol: per fold, pick the best-accuracy threshold on the other folds and score the
    held-out one. Returns (mean, std, per-fold accuracies, per-fold thresholds), folds in sorted id order.

    `std` is the sample standard deviation (ddof=1), as LFW's README defines it; the standard error it asks
    to report is std / sqrt(n_folds).
    """
    s, y = validated(scores, labels)
    f = np.asarray(folds).ravel()
    if f.shape != s.shape:
        raise ValueError(f"folds ({f.size}) and scores ({s.size}) differ in length")
    ids = np.unique(f)
    if ids.size < 2:
        raise ValueError("k-fold accuracy needs at least 2 folds")
    accuracies = np.empty(ids.size)
    thresholds = np.empty(ids.size)
    for n, fold in enumerate(ids):
        test = f == fold
        thresholds[n], _ = best_accuracy_threshold(s[~test], y[~test])
        accuracies[n] = np.mean((s[test] >= thresholds[n]) == y[test])
    return float(accuracies.mean()), float(accuracies.std(ddof=1)), accuracies, thresholds


def bootstrap_ci(
    scores: ArrayLike,
    labels: ArrayLike,
    statistic: Statistic,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of `statistic(scores, labels)`.

    Genuine and impostor scores are resampled separately, so every replicate keeps the class sizes (and
    the FAR resolution) of the data; a pooled resample could even drop a class.
    """
    if n_boot < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"need n_boot >= 1 and 0 < alpha < 1 (got {n_boot}, {alpha})")
    s, y = validated(scores, labels)
    genuine, impostor = s[y], s[~y]
    boot_labels = np.r_[np.ones(genuine.size, bool), np.zeros(impostor.size, bool)]
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for b in range(n_boot):
        boot_scores = np.r_[
            genuine[rng.integers(0, genuine.size, genuine.size)],
            impostor[rng.integers(0, impostor.size, impostor.size)],
        ]
        values[b] = statistic(boot_scores, boot_labels)
    low, high = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def det_points(roc: RocCurve) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(FAR, FRR) along the curve, for a DET plot."""
    return roc.far, roc.frr


def clopper_pearson(errors: int, trials: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (Clopper-Pearson) 1 - alpha interval of a rate seen as `errors` of `trials`: never narrower than
    the binomial allows, so a lower bound above a promised rate is evidence, not noise. Pairs that share a
    photo are not independent; the interval treats them as if they were (it is too narrow, if anything)."""
    if trials < 1 or not 0 <= errors <= trials:
        raise ValueError(f"need 0 <= errors <= trials and trials >= 1 (got {errors}, {trials})")
    from scipy.stats import beta

    low = 0.0 if errors == 0 else float(beta.ppf(alpha / 2.0, errors, trials - errors + 1))
    high = 1.0 if errors == trials else float(beta.ppf(1.0 - alpha / 2.0, errors + 1, trials - errors))
    return low, high
