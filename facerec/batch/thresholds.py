"""The clustering threshold in force: a decision with provenance, read from facerec/data/batch_cluster.json.

The merge threshold is an *average* similarity between two groups of faces, not a 1:1 verification
threshold, so it is calibrated on its own: on data that is not the evaluation set (see the file's
provenance). A model without an entry falls back to its verification threshold, and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from facerec.api import models

CLUSTER_FILE = Path(__file__).resolve().parents[1] / "data" / "batch_cluster.json"


@dataclass(frozen=True)
class ClusterThreshold:
    threshold: float
    source: str


def cluster_threshold(model_id: str, path: Path = CLUSTER_FILE) -> ClusterThreshold:
    entries = json.loads(path.read_text()) if path.is_file() else {}
    entry = entries.get(model_id)
    if entry is not None:
        return ClusterThreshold(float(entry["threshold"]), f"{path.name}: {entry['provenance']}")
    card = next(c for c in models() if c.id == model_id)
    return ClusterThreshold(float(card.default_threshold),
                            f"no clustering calibration for {model_id}: its verification threshold "
                            f"({card.threshold_provenance})")
