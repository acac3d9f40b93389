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

    def to_dict(self) -> dict:
        return asdict(self)


def model_default(card: ModelCard) -> DecisionThreshold:
    return DecisionThreshold(
        threshold=card.default_threshold,
        source=f"default of model {card.id}: {card.threshold_provenance}",
        target_far=card.extra.get("default_threshold_far"),
    )


def resolve_threshold(store, card: ModelCard, kind: str = VERIFICATION, scorer: str = "cosine") -> DecisionThreshold:
    """The calibration in force for this model, scorer and decision kind; identification falls back to
    verification's, and both fall back to the default of the model (cosine) or of the scorer."""
    kinds = (IDENTIFICATION, VERIFICATION) if kind == IDENTIFICATION else (VERIFICATION,)
    for k in kinds:
        record = store.active_calibration(card.id, k, scorer)
        if record is not None:
            report = record["report"]
            return DecisionThreshold(
                threshold=float(record["threshold"]),
                source=f"calibration #{record['id']} ({k}, {record['operating']}, {record['created_at']}): "
                       f"{record['data']}",
                target_far=report.get("target_far"),
            )
    if scorer == "cosine":
        return model_default(card)
    from facerec.decisions.scorers import default_threshold, get_scorer  # lazy: scorers imports this module

    return default_threshold(get_scorer(scorer, card.id), card)
