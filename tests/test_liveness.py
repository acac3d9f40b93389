"""Liveness: ISO/IEC 30107-3 metrics worked out by hand, the shipped model's declaration, and the shipped model
on real NUAA test-session frames (session 03, never used for training, selection or the threshold)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from facerec.errors import ModelError

from facerec.decisions.liveness_metrics import (
    acer,
    apcer_bpcer,
    apcer_per_species,
    bpcer_at_apcer,
    eer_threshold,
    liveness_report,
    roc_auc,
)
from facerec.models.liveness import (
    LIVENESS_FOLDER,
    SPOOF_REASON,
    LivenessDecision,
    LivenessModel,
    context_crops,
    lbp_histograms,
)

# ---------------------------------------------------------------------------------------------------------
# Metrics by hand
# ---------------------------------------------------------------------------------------------------------

# 4 bona fide (label 1), 6 attacks (label 0); score = P(live).
SCORES = np.array([0.95, 0.80, 0.60, 0.30, 0.70, 0.40, 0.20, 0.10, 0.05, 0.01])
LIVE = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])


def test_apcer_bpcer_acer_by_hand():
    # threshold 0.5: accepted = {0.95, 0.80, 0.60, 0.70}; attacks accepted: 0.70 -> 1/6; live rejected: 0.30 -> 1/4
    a, b = apcer_bpcer(SCORES, LIVE, 0.5)
    assert a == pytest.approx(1 / 6)
    assert b == pytest.approx(1 / 4)
    assert acer(SCORES, LIVE, 0.5) == pytest.approx((1 / 6 + 1 / 4) / 2)
    # accept when score >= threshold: a score equal to the threshold is accepted (the attack at 0.70 passes;
    # the live 0.60 and 0.30 are rejected)
    assert apcer_bpcer(SCORES, LIVE, 0.70) == pytest.approx((1 / 6, 2 / 4))
    assert apcer_bpcer(SCORES, LIVE, 0.7000001) == pytest.approx((0.0, 2 / 4))
    # extremes
    assert apcer_bpcer(SCORES, LIVE, 0.0) == (1.0, 0.0)
    assert apcer_bpcer(SCORES, LIVE, 1.1) == (0.0, 1.0)


def test_bpcer_at_apcer_by_hand():
    # 6 attacks: APCER can only be 0, 1/6, 2/6...; at APCER <= 1% and 5% no attack may pass, so the threshold
    # sits just above the highest attack (0.70) and the live 0.60 and 0.30 are rejected: BPCER 2/4.
    bpcer, t = bpcer_at_apcer(SCORES, LIVE, 0.01)
    assert bpcer == pytest.approx(0.5) and 0.70 < t < 0.80
    assert bpcer_at_apcer(SCORES, LIVE, 0.05)[0] == pytest.approx(0.5)
    # at APCER <= 1/6 one attack may pass: the threshold drops just above the second attack (0.40): BPCER 1/4
    bpcer, t = bpcer_at_apcer(SCORES, LIVE, 1 / 6)
    assert bpcer == pytest.approx(0.25) and 0.40 < t <= 0.60


def test_auc_and_eer_by_hand():
    # pairs (live, attack) with live > attack: 0.95, 0.80 beat all 6; 0.60 beats 5; 0.30 beats 4 -> 21/24
    assert roc_auc(SCORES, LIVE) == pytest.approx(21 / 24)
    perfect = np.array([0.9, 0.8, 0.2, 0.1])
    assert roc_auc(perfect, [1, 1, 0, 0]) == 1.0
    assert eer_threshold(perfect, [1, 1, 0, 0])[0] == 0.0
    e, t = eer_threshold(SCORES, LIVE)
    a, b = apcer_bpcer(SCORES, LIVE, t)
    assert 0.0 < e < 0.5 and abs(a - b) <= 1 / 4 + 1e-9


def test_report_and_species():
    r = liveness_report(SCORES, LIVE, 0.5)
    assert (r.n_bona_fide, r.n_attack) == (4, 6)
    assert r.acer == pytest.approx((r.apcer + r.bpcer) / 2)
    assert set(r.to_dict()) >= {"apcer", "bpcer", "acer", "bpcer_at_apcer_1pct", "bpcer_at_apcer_5pct", "auc"}
    species = ["", "", "", "", "print", "screen", "print", "screen", "print", "screen"]
    # threshold 0.3: print attacks 0.70, 0.20, 0.05 -> 1/3 pass; screen 0.40, 0.10, 0.01 -> 1/3 pass
    assert apcer_per_species(SCORES, LIVE, species, 0.3) == pytest.approx({"print": 1 / 3, "screen": 1 / 3})
    assert apcer_per_species(SCORES, LIVE, species, 0.5) == pytest.approx({"print": 1 / 3, "screen": 0.0})


def test_metrics_refuse_bad_input():
    with pytest.raises(ValueError):
        apcer_bpcer([0.1, 0.2], [1, 1], 0.5)  # one class only
    with pytest.raises(ValueError):
        apcer_bpcer([0.1, np.nan], [1, 0], 0.5)
    with pytest.raises(ValueError):
        apcer_bpcer([0.1, 0.2, 0.3], [1, 0], 0.5)


# ---------------------------------------------------------------------------------------------------------
# The model's pieces and declaration
# ---------------------------------------------------------------------------------------------------------


def test_context_crops_replicate_outside_the_frame():
    rgb = np.zeros((100, 120, 3), np.uint8)
    rgb[:, :60] = 200
    crops = context_crops(rgb, [40, 30, 80, 70], (1.0, 3.0), 32)
    assert [c.shape for c in crops] == [(32, 32, 3)] * 2
    assert crops[1].dtype == np.uint8


def test_lbp_histograms_of_a_flat_image():
    flat = np.full((16, 16, 2), 7, np.uint8)
    h = lbp_histograms(flat)
    assert h.shape == (2, 59) and np.allclose(h.sum(axis=1), 1.0)
    assert np.count_nonzero(h[0]) == 1  # every neighbour >= centre: one uniform code


def test_decision_reason_code():
    assert LivenessDecision.from_score(0.2, 0.5) == LivenessDecision(False, 0.2, 0.5, SPOOF_REASON)
    live = LivenessDecision.from_score(0.5, 0.5)
    assert live.is_live and live.reason is None
    assert live.to_dict()["reason"] is None


def test_shipped_model_declaration():
    raw = json.loads((LIVENESS_FOLDER / "model.json").read_text())
    weights = LIVENESS_FOLDER / raw["weights_file"]
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == raw["weights_sha256"]
    assert raw["kind"] == "liveness"
    assert 0.0 < raw["threshold"] < 1.0 and raw["threshold_provenance"]
    assert "research use only" in raw["training_data_licence"].lower()
    model = LivenessModel()
    assert model._params is None  # lazy: nothing loaded before the first score
    assert model.threshold == raw["threshold"]


def test_model_refuses_a_tampered_weights_file(tmp_path: Path):
    for f in LIVENESS_FOLDER.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    raw = json.loads((tmp_path / "model.json").read_text())
    raw["weights_sha256"] = "0" * 64
    (tmp_path / "model.json").write_text(json.dumps(raw))
    model = LivenessModel(tmp_path)
    with pytest.raises(ModelError, match="sha256"):
        model.score(np.zeros((120, 160, 3), np.uint8), [40, 30, 100, 90])


# ---------------------------------------------------------------------------------------------------------
# Real frames: NUAA session 03
# ---------------------------------------------------------------------------------------------------------

PER_CLASS = 20  # 40 frames: about 15 s of MTCNN on two cores
# A regression guard, not a quality claim: over all 360 session-03 frames the shipped model measured ACER
# 0.284 and AUC 0.81 (MODEL_CARD.md: it does not generalise well to this unseen session). These 40 fixed frames
# gave ACER 0.25 and AUC 0.815 when it was trained; the bounds leave room for small numeric drift only.
ACER_BOUND_40 = 0.35
AUC_FLOOR_40 = 0.7


@pytest.fixture(scope="module")
def session03(data_dir: Path):
    from conftest import need

    root = data_dir / "liveness" / "nuaa"
    need((root / "ClientRaw").is_dir() and (root / "ImposterRaw").is_dir(), f"NUAA not found at {root}")
    from facerec.face.detect import detect_faces
    from facerec.face.pipeline import shared_detector
    from facerec.io import load_image

    picked = []
    for folder, live in (("ClientRaw", 1), ("ImposterRaw", 0)):
        paths = sorted(p for p in (root / folder).glob("*/*.jpg") if p.stem.split("_")[3] == "03")
        step = len(paths) / PER_CLASS
        picked += [(paths[int(i * step)], live) for i in range(PER_CLASS)]
    detector = shared_detector(20)
    frames, boxes, labels = [], [], []
    for path, live in picked:
        rgb = load_image(path)
        faces = detect_faces(detector, rgb, 0.9, 20)
        if faces:
            frames.append(rgb)
            boxes.append(faces[0])
            labels.append(live)
    return frames, boxes, np.array(labels)


def test_shipped_model_on_session03(session03):
    frames, detections, labels = session03
    assert len(labels) >= 2 * PER_CLASS - 2  # MTCNN finds the face in (nearly) every frame
    model = LivenessModel()
    scores = model.score_batch(frames, detections)
    assert scores.shape == labels.shape and np.all((scores >= 0) & (scores <= 1))
    # score() and score_batch() agree
    assert model.score(frames[0], detections[0]) == pytest.approx(scores[0])
    decisions = [model.decide(f, d) for f, d in zip(frames[:1], detections[:1])]
    assert decisions[0].score == pytest.approx(scores[0])

    t = model.threshold
    assert np.any(scores[labels == 0] < t), "no printed-photo attack was refused"
    assert np.any(scores[labels == 1] >= t), "no live face was accepted"
    spoof = int(np.flatnonzero((labels == 0) & (scores < t))[0])
    refused = model.decide(frames[spoof], detections[spoof])
    assert not refused.is_live and refused.reason == SPOOF_REASON
    assert acer(scores, labels, t) <= ACER_BOUND_40
    assert roc_auc(scores, labels) >= AUC_FLOOR_40
