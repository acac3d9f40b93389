"""The clustering thresholds of `facerec batch cluster`: two single faces merge at the model card's threshold at
FAR r / N, which grows with the number of faces N (a face of someone seen once meets N - 1 strangers),
interpolated in log FAR; large groups at the 1:1 threshold; and the size-aware linkage between them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facerec.batch.thresholds import CLUSTER_FILE, cluster_threshold
from facerec.decisions.thresholds import card_far_points, interpolated_threshold
from facerec.models.registry import model_card


def test_interpolation_hits_the_card_points_and_clamps():
    card = model_card("mobilefacenet")
    points = card_far_points(card)
    assert points[1e-3] == card.default_threshold and len(points) >= 3
    for far, t in points.items():
        assert interpolated_threshold(card, far) == pytest.approx((t, far))
    # halfway in log10(FAR) between two points: halfway between their thresholds
    middle = interpolated_threshold(card, float(np.sqrt(1e-4 * 1e-5)))[0]
    assert middle == pytest.approx((points[1e-4] + points[1e-5]) / 2)
    assert interpolated_threshold(card, 0.5) == (card.default_threshold, max(points))  # never below the 1:1 point
    assert interpolated_threshold(card, 1e-12) == (points[min(points)], min(points))  # strictest resolved
    assert interpolated_threshold(model_card("lbph"), 1e-4) is None  # no table: no rule


def test_cluster_threshold_grows_with_the_number_of_faces(tmp_path):
    entry = json.loads(CLUSTER_FILE.read_text())["mobilefacenet"]
    rate = entry["false_edges_per_face"]
    sizes = (100, 1_000, 10_000, 100_000)
    points = [cluster_threshold("mobilefacenet", n) for n in sizes]
    pairs = [p.pair_threshold for p in points]
    assert pairs == sorted(pairs) and pairs[0] < pairs[-1]  # single faces: stricter as the collection grows
    card = model_card("mobilefacenet")
    for n, p in zip(sizes, points):
        assert p.threshold == card.default_threshold  # groups: the 1:1 threshold, whatever the size
        assert p.pair_threshold == pytest.approx(max(p.threshold, interpolated_threshold(card, rate / n)[0]), abs=1e-4)
        assert f"among {n} faces" in p.source and "CelebA" in p.source
    per_pair = tmp_path / "per_pair.json"
    per_pair.write_text(json.dumps({"mobilefacenet": entry | {"rule": "per-pair"}}))
    strict = cluster_threshold("mobilefacenet", 10_000, per_pair)
    assert strict.pair_threshold is None and strict.threshold == pytest.approx(pairs[2], abs=1e-4)
    # a fixed threshold in the file is honoured; a model without an entry falls back to its 1:1 threshold
    fixed = tmp_path / "cluster.json"
    fixed.write_text(json.dumps({"mobilefacenet": {"threshold": 0.5, "provenance": "test"}}))
    assert cluster_threshold("mobilefacenet", 10_000, fixed).threshold == 0.5
    fallback = cluster_threshold("dlib_resnet29", 10_000, fixed)
    assert fallback.threshold == model_card("dlib_resnet29").default_threshold and "no clustering" in fallback.source


def test_size_aware_linkage_holds_single_faces_to_the_pair_threshold():
    """Two single faces at similarity s merge only when s >= pair threshold; two groups of two faces whose
    average similarity is s merge when s >= group + (pair - group) / 2."""
    from facerec.batch.cluster import ClusterInput, cluster

    def unit(angle: float) -> np.ndarray:
        return np.array([np.cos(angle), np.sin(angle), 0.0, 0.0], dtype=np.float32)

    def run(vectors: list[np.ndarray], pair: float | None) -> int:
        data = ClusterInput(np.arange(len(vectors)), [(f"{i:04d}", 0) for i in range(len(vectors))],
                            np.stack(vectors), np.arange(len(vectors)), [None] * len(vectors))
        return len(set(cluster(data, 0.4, k=5, pair_threshold=pair).values()))

    two = [unit(0.0), unit(np.arccos(0.55))]  # similarity 0.55
    assert run(two, None) == 1 and run(two, 0.6) == 2 and run(two, 0.5) == 1
    # two tight pairs (within-pair similarity ~1) whose cross similarity is 0.55: a group merge, bar 0.4 + 0.2 / 2
    groups = [unit(0.0), unit(0.001), unit(np.arccos(0.55)), unit(np.arccos(0.55) + 0.001)]
    assert run(groups, 0.6) == 1 and run(groups, 0.75) == 2  # bar 0.5: merged; bar 0.575: kept apart


def test_sface_has_its_own_size_aware_entry():
    """sface_2021dec, the model of new databases, has its own CelebA calibration: no fallback to its 1:1
    threshold for every merge, and single faces held to a stricter bar as the collection grows."""
    small, large = (cluster_threshold("sface_2021dec", n) for n in (1_000, 100_000))
    assert small.pair_threshold is not None and small.pair_threshold < large.pair_threshold
    assert small.threshold == model_card("sface_2021dec").default_threshold and "CelebA" in small.source
