"""Which similarity threshold decides, and why: a stored calibration, else the model's declared default."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from facerec.models.base import ModelCard

VERIFICATION = "verification"
IDENTIFICATION = "identification"


@dataclass(frozen=True)
class DecisionThreshold:
    threshold: float  # similarity: accept when score >= threshold
    source: str  # where it comes from, reported with every decision
    target_far: float | None = None
    # what it promised on the data it was measured on (`facerec calibrate check` compares a user's own photos)
    promised_far: float | None = None  # the target FAR, or the EER of an EER-operating calibration
    promised_frr: float | None = None  # the FRR measured at this threshold there
    domain: dict | None = None  # that data (stored calibrations: facerec.evaluation.calibration_data)

    def to_dict(self) -> dict:
        return asdict(self)


def model_default(card: ModelCard) -> DecisionThreshold:
    return DecisionThreshold(
        threshold=card.default_threshold,
        source=f"default of model {card.id}: {card.threshold_provenance}",
        target_far=card.extra.get("default_threshold_far"),
        promised_far=card.extra.get("default_threshold_far"),
        promised_frr=card.extra.get("default_threshold_frr"),
    )


def resolve_threshold(store, card: ModelCard, kind: str = VERIFICATION, scorer: str = "cosine") -> DecisionThreshold:
    """The calibration in force for this model, scorer and decision kind; identification falls back to
    verification's, and both fall back to the default of the model (cosine) or of the scorer."""
    kinds = (IDENTIFICATION, VERIFICATION) if kind == IDENTIFICATION else (VERIFICATION,)
    for k in kinds:
        record = store.active_calibration(card.id, k, scorer)
        if record is not None:
            report = record["report"]
            domain = report.get("domain")
            promised_far, promised_frr = _promise(report)
            return DecisionThreshold(
                threshold=float(record["threshold"]),
                source=f"calibration #{record['id']} ({k}, {record['operating']}, {record['created_at']}): "
                       f"{record['data']}" + (f"; {domain_summary(domain)}" if domain else ""),
                target_far=report.get("target_far"), promised_far=promised_far, promised_frr=promised_frr,
                domain=domain,
            )
    if scorer == "cosine":
        return model_default(card)
    from facerec.decisions.scorers import default_threshold, get_scorer  # lazy: scorers imports this module

    return default_threshold(get_scorer(scorer, card.id), card)


def _promise(report: dict) -> tuple[float | None, float | None]:
    """(FAR, FRR) a stored verification calibration measured at its operating point; (None, None) when the
    report does not say (identification calibrations, hand-written records)."""
    target = report.get("target_far")
    if target is None:
        eer = report.get("eer")
        return (eer, eer) if report.get("operating") == "eer" and eer is not None else (None, None)
    point = next((p for p in report.get("points", []) if abs(p["target_far"] - target) <= 1e-12), None)
    return target, (point["frr"] if point else None)


def domain_summary(domain: dict) -> str:
    """One line naming the data a calibration was measured on."""
    return (f"measured on {domain['source']} {domain['path']} ({domain['people']} people, {domain['images']} images; "
            f"{domain['genuine_pairs']:,} genuine / {domain['impostor_pairs']:,} impostor pairs) on "
            f"{domain['measured_at'][:10]} with {domain['model']}, data fingerprint {domain['fingerprint'][:12]}")


# The share of genuinely new people that enrollment's duplicate check may wrongly refuse.
DUPLICATE_REFUSAL_RATE = 0.01
IDENTIFICATION_FILE = Path(__file__).resolve().parents[1] / "data" / "identification.json"


def card_far_points(card: ModelCard) -> dict[float, float]:
    """FAR per comparison -> similarity threshold, as the model card declares them: its 1:1 default and the
    stricter points of `extra.thresholds_at_far` (both measured on LFW View 1 DevTrain for the shipped models).
    Empty when the card has no table."""
    table = {float(far): float(t) for far, t in card.extra.get("thresholds_at_far", {}).items()}
    if table and card.extra.get("default_threshold_far"):
        table.setdefault(float(card.extra["default_threshold_far"]), float(card.default_threshold))
    return table


def interpolated_threshold(card: ModelCard, far: float) -> tuple[float, float] | None:
    """(threshold, FAR used) at a per-comparison FAR, linear in log10(FAR) between the card's points and
    clamped to the range they resolve; None when the card has no table. For rules whose FAR moves
    continuously (batch clustering's FAR per face pair shrinks with the collection's size)."""
    points = sorted(card_far_points(card).items())  # strictest (smallest FAR, highest threshold) first
    if not points:
        return None
    far = min(max(far, points[0][0]), points[-1][0])
    for (f0, t0), (f1, t1) in zip(points, points[1:]):
        if f0 <= far <= f1:
            w = (np.log10(far) - np.log10(f0)) / (np.log10(f1) - np.log10(f0))
            return float(t0 + w * (t1 - t0)), far
    return points[0][1], far


def _gallery_threshold(store, card: ModelCard, gallery_size: int, scorer: str, rate: float,
                       consequence: str) -> DecisionThreshold:
    """A 1:K threshold when comparing one face with N enrolled people: about N x FAR of searches by people
    who are not enrolled end on someone, so the per-comparison FAR must be near `rate` / N. In force, in
    order: an identification calibration (FPIR measured on this gallery); else the loosest point of the
    model card's table with FAR <= rate / N (the strictest point when none is); else the 1:1 threshold
    (non-cosine scorers, cards without a table), said so in the source. Never looser than the 1:1 threshold.
    """
    verification = resolve_threshold(store, card, VERIFICATION, scorer)
    record = store.active_calibration(card.id, IDENTIFICATION, scorer)
    if record is not None:
        return DecisionThreshold(max(float(record["threshold"]), verification.threshold),
                                 f"identification calibration #{record['id']} ({record['operating']})")
    table = card_far_points(card)
    if scorer != "cosine" or not table:
        return DecisionThreshold(verification.threshold,
                                 f"the 1:1 threshold ({verification.source}); not gallery-aware: run "
                                 f"`facerec calibrate-identification`")
    wanted = rate / max(1, gallery_size)
    fitting = [far for far in table if far <= wanted]
    far = max(fitting) if fitting else min(table)
    strictest = "" if fitting else " (the strictest point the model's calibration data resolves)"
    threshold = max(table[far], verification.threshold)
    floor = "" if table[far] >= verification.threshold else f"; raised to the 1:1 threshold ({verification.source})"
    return DecisionThreshold(
        threshold,
        f"FAR {far:g} per comparison for a gallery of {gallery_size} people{strictest}: about "
        f"{min(1.0, far * gallery_size):.1%} of {consequence}; {card.id} card{floor}",
        target_far=far,
    )


def duplicate_threshold(store, card: ModelCard, gallery_size: int, scorer: str = "cosine") -> DecisionThreshold:
    """The threshold at which a new face "already matches" someone: gallery-aware, never looser than 1:1.

    A new person is compared with all N enrolled people, so at a per-comparison FAR f about N x f of new
    people would be refused (11 of 100 with 97 enrolled at the 1:1 FAR 1e-3, 51 of 100 with 971): the rule
    of `_gallery_threshold` at DUPLICATE_REFUSAL_RATE.
    """
    return _gallery_threshold(store, card, gallery_size, scorer, DUPLICATE_REFUSAL_RATE,
                              "new people wrongly refused")


@lru_cache(maxsize=1)
def identification_fpir() -> tuple[float, str]:
    """The default target FPIR of 1:K decisions (share of searches by people not enrolled that name someone)
    and its provenance, from facerec/data/identification.json (read once: every 1:K decision asks)."""
    entry = json.loads(IDENTIFICATION_FILE.read_text())
    return float(entry["target_fpir"]), entry["provenance"]


def identification_threshold(store, card: ModelCard, gallery_size: int, scorer: str = "cosine") -> DecisionThreshold:
    """The 1:K threshold in force: a stored identification calibration, else gallery-aware from the card's
    table at the default target FPIR / N (a 1:1 threshold used 1:K names ~N x its FAR of strangers: 5 % with
    50 enrolled at FAR 1e-3), never looser than the 1:1 threshold."""
    if store.active_calibration(card.id, IDENTIFICATION, scorer) is not None:
        return resolve_threshold(store, card, IDENTIFICATION, scorer)
    fpir, _ = identification_fpir()
    point = _gallery_threshold(store, card, gallery_size, scorer, fpir, "searches by people not enrolled naming someone")
    return DecisionThreshold(point.threshold, f"gallery-aware default (target FPIR {fpir:g}, "
                                              f"facerec/data/identification.json): {point.source}", point.target_far)
