"""Which similarity threshold decides, and why: a stored calibration, else the model's declared default."""

from __future__ import annotations

from dataclasses import asdict, dataclass

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


def duplicate_threshold(store, card: ModelCard, gallery_size: int, scorer: str = "cosine") -> DecisionThreshold:
    """The threshold at which a new face "already matches" someone: gallery-aware, never looser than 1:1.

    A new person is compared with all N enrolled people, so at a per-comparison FAR f about N x f of new
    people would be refused (11 of 100 with 97 enrolled at the 1:1 FAR 1e-3, 51 of 100 with 971). In force,
    in order: an identification calibration (FPIR measured on this gallery); else the strictest point of the
    model card's table (`extra.thresholds_at_far`) with FAR <= DUPLICATE_REFUSAL_RATE / N; else the 1:1
    threshold (non-cosine scorers, models without a table), said so in the source.
    """
    verification = resolve_threshold(store, card, VERIFICATION, scorer)
    record = store.active_calibration(card.id, IDENTIFICATION, scorer)
    if record is not None:
        return DecisionThreshold(max(float(record["threshold"]), verification.threshold),
                                 f"identification calibration #{record['id']} ({record['operating']})")
    table = {float(far): float(t) for far, t in card.extra.get("thresholds_at_far", {}).items()}
    if scorer != "cosine" or not table:
        return DecisionThreshold(verification.threshold,
                                 f"the 1:1 threshold ({verification.source}); not gallery-aware: run "
                                 f"`facerec calibrate-identification`")
    wanted = DUPLICATE_REFUSAL_RATE / max(1, gallery_size)
    fitting = [far for far in table if far <= wanted]
    far = max(fitting) if fitting else min(table)
    strictest = "" if fitting else " (the strictest point the model's calibration data resolves)"
    return DecisionThreshold(
        max(table[far], verification.threshold),
        f"FAR {far:g} per comparison for a gallery of {gallery_size} people{strictest}: about "
        f"{min(1.0, far * gallery_size):.1%} of new people wrongly refused; {card.id} card",
        target_far=far,
    )
