"""Presentation-attack detection metrics in the terms of ISO/IEC 30107-3.

Conventions: a score is P(live) (higher = more likely a bona fide presentation); label 1 is a bona fide
(live) presentation and 0 an attack; a presentation is accepted as live when `score >= threshold`.

- APCER (attack presentation classification error rate): the share of attack presentations accepted as
  live. With several attack instrument species (print, screen, mask...) ISO/IEC 30107-3 reports the APCER of
  each species and takes the worst one; pass `species` to get that.
- BPCER (bona fide presentation classification error rate): the share of bona fide presentations rejected.
- ACER = (APCER + BPCER) / 2 at one threshold (the average classification error rate; not defined by the
  standard itself, but the figure most liveness papers report).
- BPCER at APCER = x: the BPCER at the lowest threshold whose measured APCER is <= x.

Pure numpy, built on the verification curves of `facerec.decisions.metrics` (APCER plays FAR, BPCER FRR).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from facerec.decisions.metrics import RocCurve, eer, roc_curve, threshold_at_far, validated


def _validated(scores: ArrayLike, is_live: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    return validated(scores, is_live, positive="bona fide (live) presentations", negative="attack presentations")


def apcer_bpcer(scores: ArrayLike, is_live: ArrayLike, threshold: float) -> tuple[float, float]:
    """(APCER, BPCER) when accepting as live every `score >= threshold`."""
    s, y = _validated(scores, is_live)
    accepted = s >= threshold
    apcer = np.count_nonzero(accepted & ~y) / np.count_nonzero(~y)
    bpcer = np.count_nonzero(~accepted & y) / np.count_nonzero(y)
    return float(apcer), float(bpcer)


def apcer_per_species(
    scores: ArrayLike, is_live: ArrayLike, species: ArrayLike, threshold: float
) -> dict[str, float]:
    """APCER of each attack species (`species` names each presentation's instrument; ignored for bona fide)."""
    s, y = _validated(scores, is_live)
    sp = np.asarray(species, dtype=object).ravel()
    if sp.shape != s.shape:
        raise ValueError(f"species ({sp.size}) and scores ({s.size}) differ in length")
    out = {}
    for name in sorted({str(v) for v in sp[~y]}):
        mask = ~y & (sp.astype(str) == name)
        out[name] = float(np.count_nonzero(s[mask] >= threshold) / np.count_nonzero(mask))
    return out


def acer(scores: ArrayLike, is_live: ArrayLike, threshold: float) -> float:
    """(APCER + BPCER) / 2 at `threshold`."""
    a, b = apcer_bpcer(scores, is_live, threshold)
    return (a + b) / 2.0


def bpcer_at_apcer(scores: ArrayLike, is_live: ArrayLike, target_apcer: float) -> tuple[float, float]:
    """(BPCER, threshold) at the lowest threshold whose measured APCER is <= `target_apcer`.

    With n attacks the data can show APCER only in steps of 1/n: below 1/n this is "above every attack seen"."""
    s, y = _validated(scores, is_live)
    point = threshold_at_far(s, y.astype(int), target_apcer)
    return float(point.frr), float(point.threshold)


def liveness_roc(scores: ArrayLike, is_live: ArrayLike) -> RocCurve:
    """ROC with `far` = APCER and `tar` = 1 - BPCER at every distinct threshold."""
    s, y = _validated(scores, is_live)
    return roc_curve(s, y.astype(int))


def roc_auc(scores: ArrayLike, is_live: ArrayLike) -> float:
    """Area under the ROC (ties count one half): P(a bona fide scores above an attack)."""
    return liveness_roc(scores, is_live).auc


def eer_threshold(scores: ArrayLike, is_live: ArrayLike) -> tuple[float, float]:
    """(EER, threshold) where APCER and BPCER cross, interpolated between the two nearest ROC points."""
    s, y = _validated(scores, is_live)
    return eer(s, y.astype(int))


@dataclass(frozen=True)
class LivenessReport:
    threshold: float
    apcer: float
    bpcer: float
    acer: float
    bpcer_at_apcer_1pct: float
    bpcer_at_apcer_5pct: float
    eer: float
    auc: float
    n_bona_fide: int
    n_attack: int

    def to_dict(self, digits: int = 4) -> dict:
        return {k: (round(v, digits) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def liveness_report(scores: ArrayLike, is_live: ArrayLike, threshold: float) -> LivenessReport:
    """Every figure above for one score set at one threshold."""
    s, y = _validated(scores, is_live)
    a, b = apcer_bpcer(s, y, threshold)
    return LivenessReport(
        threshold=float(threshold),
        apcer=a,
        bpcer=b,
        acer=(a + b) / 2.0,
        bpcer_at_apcer_1pct=bpcer_at_apcer(s, y, 0.01)[0],
        bpcer_at_apcer_5pct=bpcer_at_apcer(s, y, 0.05)[0],
        eer=eer_threshold(s, y)[0],
        auc=roc_auc(s, y),
        n_bona_fide=int(y.sum()),
        n_attack=int((~y).sum()),
    )
