"""Calibration: from genuine and impostor scores to operating points a team can defend.

A calibration records the EER and its threshold, the threshold at each FAR target with the FRR it costs,
bootstrap confidence intervals, and which point is in force. Verification then accepts when
score >= threshold; the per-comparison FAR promise holds to the extent the calibration data resembles
the deployment.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from facerec.decisions import metrics

FAR_TARGETS = (1e-2, 1e-3, 1e-4)
BOOTSTRAP_ROUNDS = 200
BOOTSTRAP_MAX_IMPOSTORS = 200_000  # bootstrap replicates on a fixed random subset: keeps it to seconds


@dataclass(frozen=True)
class FarPoint:
    target_far: float
    threshold: float
    far: float
    frr: float
    resolution_limited: bool
    threshold_ci: tuple[float, float]


@dataclass(frozen=True)
class Calibration:
    model_id: str
    scorer: str
    data: str
    n_genuine: int
    n_impostor: int
    roc_auc: float
    eer: float
    eer_threshold: float
    eer_ci: tuple[float, float]
    points: list[FarPoint]
    operating: str  # "far=0.001" or "eer"
    threshold: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "Calibration":
        raw = dict(raw)
        raw["points"] = [FarPoint(**{**p, "threshold_ci": tuple(p["threshold_ci"])}) for p in raw["points"]]
        raw["eer_ci"] = tuple(raw["eer_ci"])
        return cls(**raw)

    def point_for(self, target_far: float) -> FarPoint | None:
        return next((p for p in self.points if np.isclose(p.target_far, target_far)), None)


def calibrate_scores(
    genuine: np.ndarray,
    impostor: np.ndarray,
    model_id: str,
    data: str,
    far: float | None = 1e-3,
    scorer: str = "cosine",
    seed: int = 0,
) -> Calibration:
    """Compute the calibration; `far=None` selects the EER threshold as the operating point."""
    genuine = np.asarray(genuine, dtype=np.float64)
    impostor = np.asarray(impostor, dtype=np.float64)
    scores = np.concatenate([genuine, impostor])
    labels = np.concatenate([np.ones(genuine.size, np.int8), np.zeros(impostor.size, np.int8)])
    eer_value, eer_threshold = metrics.eer(scores, labels)
    rng = np.random.default_rng(seed)
    boot_imp = impostor if impostor.size <= BOOTSTRAP_MAX_IMPOSTORS else rng.choice(
        impostor, BOOTSTRAP_MAX_IMPOSTORS, replace=False)
    boot_scores = np.concatenate([genuine, boot_imp])
    boot_labels = np.concatenate([np.ones(genuine.size, np.int8), np.zeros(boot_imp.size, np.int8)])
    eer_ci = metrics.bootstrap_ci(boot_scores, boot_labels, lambda s, y: metrics.eer(s, y)[0],
                                  n_boot=BOOTSTRAP_ROUNDS, seed=seed)
    targets = sorted(set(FAR_TARGETS) | ({far} if far is not None else set()), reverse=True)
    points = []
    notes = []
    for target in targets:
        op = metrics.threshold_at_far(scores, labels, target)
        ci = metrics.bootstrap_ci(
            boot_scores, boot_labels, lambda s, y, t=target: metrics.threshold_at_far(s, y, t).threshold,
            n_boot=BOOTSTRAP_ROUNDS, seed=seed,
        )
        points.append(FarPoint(target, op.threshold, op.far, op.frr, op.resolution_limited, ci))
        if op.resolution_limited:
            notes.append(f"FAR {target:g} needs more than {impostor.size:,} impostor pairs to be measured; "
                         "its threshold is only 'above every impostor seen'")
    if far is None:
        operating, threshold = "eer", float(eer_threshold)
    else:
        operating, threshold = f"far={far:g}", next(p.threshold for p in points if p.target_far == far)
    return Calibration(
        model_id=model_id, scorer=scorer, data=data, n_genuine=int(genuine.size), n_impostor=int(impostor.size),
        roc_auc=metrics.roc_curve(scores, labels).auc, eer=float(eer_value), eer_threshold=float(eer_threshold),
        eer_ci=eer_ci, points=points, operating=operating, threshold=threshold, notes=notes,
    )


def fpir_threshold(max_unknown_scores: np.ndarray, target_fpir: float) -> tuple[float, float]:
    """Open-set identification: the lowest threshold at which at most `target_fpir` of unknown probes
    would be accepted as someone in the gallery. Returns (threshold, measured FPIR).

    An unknown probe is falsely identified when its best score over the whole gallery passes, so this is
    `threshold_at_far` on the per-probe maxima: it already includes the gallery-size effect.
    """
    best = np.asarray(max_unknown_scores, dtype=np.float64)
    scores = np.concatenate([best, [best.max() + 1.0]])  # one dummy genuine so the metric is defined
    labels = np.concatenate([np.zeros(best.size, np.int8), [1]])
    op = metrics.threshold_at_far(scores, labels, target_fpir)
    return op.threshold, op.far


def write_report(calibration: Calibration, genuine: np.ndarray, impostor: np.ndarray, folder: Path) -> list[Path]:
    """roc.png, det.png and calibration.md in `folder`."""
    from facerec.decisions.plots import plot_det, plot_roc

    folder.mkdir(parents=True, exist_ok=True)
    scores = np.concatenate([genuine, impostor])
    labels = np.concatenate([np.ones(len(genuine), np.int8), np.zeros(len(impostor), np.int8)])
    roc = metrics.roc_curve(scores, labels)
    points = {f"FAR {p.target_far:g}": metrics.threshold_at_far(scores, labels, p.target_far)
              for p in calibration.points}
    paths = [
        plot_roc({calibration.model_id: roc}, folder / "roc.png", title=f"ROC: {calibration.data}",
                 operating_points=points),
        plot_det({calibration.model_id: roc}, folder / "det.png", title=f"DET: {calibration.data}",
                 operating_points=points),
    ]
    md = folder / "calibration.md"
    md.write_text(summary_markdown(calibration))
    return [*paths, md]


def summary_markdown(c: Calibration) -> str:
    lines = [
        f"# Calibration of `{c.model_id}` ({c.scorer})",
        "",
        f"- data: {c.data}",
        f"- pairs: {c.n_genuine:,} genuine, {c.n_impostor:,} impostor",
        f"- ROC AUC: {c.roc_auc:.5f}",
        f"- EER: {c.eer:.4f} (95% CI {c.eer_ci[0]:.4f}–{c.eer_ci[1]:.4f}) at threshold {c.eer_threshold:.4f}",
        f"- operating point in force: **{c.operating}**, threshold **{c.threshold:.4f}**",
        "",
        "| target FAR | threshold | 95% CI of threshold | measured FAR | FRR |",
        "|---|---|---|---|---|",
    ]
    for p in c.points:
        flag = " (resolution-limited)" if p.resolution_limited else ""
        lines.append(f"| {p.target_far:g} | {p.threshold:.4f} | {p.threshold_ci[0]:.4f}–{p.threshold_ci[1]:.4f} | "
                     f"{p.far:.2e}{flag} | {p.frr:.4f} |")
    lines += ["", *(f"- note: {n}" for n in c.notes), "", "![ROC](roc.png) ![DET](det.png)", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class RateCheck:
    """A measured error rate at the threshold in force against what that threshold promised.

    verdict: "drifted" (the interval lies wholly above the promise), "confirmed" (wholly at or below it),
    "consistent" (it contains the promise: these pairs can neither confirm nor refute it) or "not promised".
    """

    rate_name: str  # "FAR" or "FRR"
    errors: int  # impostor pairs accepted (FAR) or genuine pairs rejected (FRR)
    pairs: int
    rate: float
    ci: tuple[float, float]  # Clopper-Pearson 95 %
    promised: float | None
    verdict: str

    @property
    def drifted(self) -> bool:
        return self.verdict == "drifted"


def check_rate(rate_name: str, errors: int, pairs: int, promised: float | None, alpha: float = 0.05) -> RateCheck:
    low, high = metrics.clopper_pearson(errors, pairs, alpha)
    if promised is None:
        verdict = "not promised"
    elif low > promised:
        verdict = "drifted"
    elif high <= promised:
        verdict = "confirmed"
    else:
        verdict = "consistent"
    return RateCheck(rate_name, errors, pairs, errors / pairs, (low, high), promised, verdict)


def check_threshold(genuine: np.ndarray, impostor: np.ndarray, threshold: float, promised_far: float | None,
                    promised_frr: float | None) -> tuple[RateCheck, RateCheck]:
    """FAR and FRR of `score >= threshold` (the decision rule of verify) on these pairs, each against its
    promise; a warning is due when either drifted."""
    false_accepts = int(np.count_nonzero(np.asarray(impostor) >= threshold))
    false_rejects = int(np.count_nonzero(np.asarray(genuine) < threshold))
    return (check_rate("FAR", false_accepts, int(np.size(impostor)), promised_far),
            check_rate("FRR", false_rejects, int(np.size(genuine)), promised_frr))
