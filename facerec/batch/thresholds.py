"""The clustering thresholds in force: a decision with provenance, read from facerec/data/batch_cluster.json.

Why they depend on the number of faces: a face of someone who appears once is merged wrongly as soon as one
of the N - 1 other faces scores above the bar with it, so at a per-pair false-accept rate FAR it gets about
N x FAR false edges, and a fixed threshold chosen on a small collection chains ever more strangers together
as the archive grows. The rule keeps the expected number of false edges per face constant for merges that
rest on one comparison, and relaxes the bar for merges of groups, whose average similarity is steadier:

    pair threshold  = the model card's threshold at FAR per pair = false_edges_per_face / N
    group threshold = the card's 1:1 threshold (FAR 1e-3)
    merging A and B = group + (pair - group) / sqrt(|A| x |B|)      (facerec.batch.cluster)

(card thresholds interpolated in log FAR between its points, measured on LFW View 1 DevTrain, clamped to the
range they resolve). An entry with "rule": "per-pair" applies the pair threshold to every merge instead.
The rule and its constant are calibrated on archive-like collections drawn from CelebA, not on the
evaluation set (see the entry's provenance). An entry with a fixed `threshold`, a model without an entry,
or a card without a FAR table fall back to one fixed threshold and say so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from facerec.api import models
from facerec.decisions.thresholds import interpolated_threshold

CLUSTER_FILE = Path(__file__).resolve().parents[1] / "data" / "batch_cluster.json"


@dataclass(frozen=True)
class ClusterThreshold:
    threshold: float  # the merge bar of large groups (of every merge when pair_threshold is None)
    source: str
    pair_threshold: float | None = None  # the bar of two single faces


def scaled_threshold(model_id: str, faces: int, false_edges_per_face: float) -> tuple[float, float] | None:
    """(threshold, FAR per pair) keeping `false_edges_per_face` expected false edges per face among `faces`
    faces; None when the model's card has no FAR table."""
    card = next(c for c in models() if c.id == model_id)
    return interpolated_threshold(card, false_edges_per_face / max(2, faces))


def cluster_threshold(model_id: str, faces: int, path: Path = CLUSTER_FILE) -> ClusterThreshold:
    """The merge thresholds for clustering `faces` faces with model `model_id`."""
    entries = json.loads(path.read_text()) if path.is_file() else {}
    entry = entries.get(model_id)
    if entry is not None and "false_edges_per_face" in entry:
        rate = float(entry["false_edges_per_face"])
        scaled = scaled_threshold(model_id, faces, rate)
        if scaled is not None:
            pair, far = scaled
            if entry.get("rule") == "per-pair":  # every merge at the pair threshold
                return ClusterThreshold(round(pair, 4), f"FAR {far:.2g} per pair = {rate:g} expected false edges "
                                                        f"per face among {faces} faces; {path.name}: "
                                                        f"{entry['provenance']}")
            card = next(c for c in models() if c.id == model_id)
            group = float(card.default_threshold)
            return ClusterThreshold(group, f"groups {group:.4f} (the {model_id} 1:1 threshold), single faces "
                                           f"{pair:.4f} (FAR {far:.2g} per pair = {rate:g} expected false edges per "
                                           f"face among {faces} faces); {path.name}: {entry['provenance']}",
                                    round(max(pair, group), 4))
    if entry is not None and "threshold" in entry:
        return ClusterThreshold(float(entry["threshold"]), f"{path.name}: {entry['provenance']}")
    card = next(c for c in models() if c.id == model_id)
    return ClusterThreshold(float(card.default_threshold),
                            f"no clustering calibration for {model_id}: its verification threshold "
                            f"({card.threshold_provenance})")
