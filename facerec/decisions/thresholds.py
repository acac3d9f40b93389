"""Which similarity threshold decides, and why: a stored calibration, else the model's declared default."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from facerec.models.base import ModelCard


@dataclass(frozen=True)
class DecisionThreshold:
    threshold: float  # cosine similarity: accept when score >= threshold
    source: str  # "calibration #<id> (FAR 1e-3 on ...)" or "model default (...)"
    target_far: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def model_default(card: ModelCard) -> DecisionThreshold:
    return DecisionThreshold(
        threshold=card.default_threshold,
        source=f"default of model {card.id}: {card.threshold_provenance}",
        target_far=card.extra.get("default_threshold_far"),
    )

