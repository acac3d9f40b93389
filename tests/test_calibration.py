"""Calibration: operating points from hand-made score sets, and the stored one deciding verify/identify."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import TEST_MODEL, lfw_image, run_cli
from facerec.decisions.calibration import calibrate_scores, fpir_threshold


def test_operating_points_on_hand_made_scores():
    genuine = np.array([0.9, 0.8, 0.7, 0.6])
    impostor = np.linspace(0.0, 0.65, 1000)  # one impostor at 0.65 beats the weakest genuine pair
    c = calibrate_scores(genuine, impostor, "m", "hand-made", far=1e-2)
    p = c.point_for(1e-2)
    # FAR 1e-2 of 1000 impostors: 10 may pass, so the threshold sits just above the 11th highest
    assert p.far <= 1e-2 and np.sum(impostor >= p.threshold) == 10
    assert p.frr == 0.25  # 0.6 falls below it
    assert c.point_for(1e-3).resolution_limited is False and np.sum(impostor >= c.point_for(1e-3).threshold) == 1
    assert c.point_for(1e-4).resolution_limited is True
    assert c.operating == "far=0.01" and c.threshold == p.threshold
    assert 0 < c.eer <= 0.25 and c.eer_ci[0] <= c.eer <= c.eer_ci[1]
    eer_mode = calibrate_scores(genuine, impostor, "m", "hand-made", far=None)
    assert eer_mode.operating == "eer" and eer_mode.threshold == eer_mode.eer_threshold


def test_separable_scores_have_zero_eer():
    c = calibrate_scores(np.array([0.8, 0.9, 0.95]), np.linspace(-0.2, 0.3, 500), "m", "separable")
    assert c.eer == 0.0 and c.point_for(1e-3).frr == 0.0


def test_fpir_threshold_counts_unknown_probes():
    best = np.linspace(0.0, 0.99, 100)
    threshold, measured = fpir_threshold(best, 0.05)
    assert measured <= 0.05 and np.sum(best >= threshold) == 5


@pytest.fixture
def small_gallery(tmp_path, lfw):
    """Three LFW people with three photos each, as a folder per identity."""
    root = tmp_path / "people"
    for person in ("Tony_Blair", "Colin_Powell", "Hugo_Chavez"):
        (root / person).mkdir(parents=True)
        for n in (1, 2, 3):
            shutil.copy(lfw_image(lfw, person, n), root / person)
    return root


def test_stored_calibration_decides_verify(tmp_path, lfw, small_gallery):
    db = str(tmp_path / "f.db")
    assert run_cli("--db", db, "enroll", "Tony Blair", str(lfw_image(lfw, "Tony_Blair", 1))).returncode == 0
    probe = str(lfw_image(lfw, "Tony_Blair", 4))
    before = json.loads(run_cli("--db", db, "verify", "Tony Blair", probe, "--json").stdout)
    assert before["threshold_source"].startswith("default of model")

    report = tmp_path / "report"
    result = run_cli("--db", db, "calibrate", "--from-dir", str(small_gallery), "--far", "0.01",
                     "--report", str(report), "--json")
    assert result.returncode == 0, result.stderr
    calibration = json.loads(result.stdout)
    assert calibration["n_genuine"] == 9 and calibration["n_impostor"] == 27
    for name in ("roc.png", "det.png", "calibration.md"):
        assert (report / name).stat().st_size > 0
    after = json.loads(run_cli("--db", db, "verify", "Tony Blair", probe, "--json").stdout)
    assert after["threshold"] == pytest.approx(calibration["threshold"])
    assert after["threshold_source"].startswith("calibration #1 (verification, far=0.01")

    # a stricter stored calibration changes the decision: the same probe is now refused (exit 1)
    from facerec.store import Store

    Store.open(f"sqlite:///{db}").save_calibration(TEST_MODEL, "verification", "cosine", "strict test", 1, 1,
                                                   None, 0.9999, "far=1e-9", {})
    strict = run_cli("--db", db, "verify", "Tony Blair", probe, "--json")
    assert strict.returncode == 1 and json.loads(strict.stdout)["threshold"] == pytest.approx(0.9999)


def test_duplicate_threshold_grows_with_the_gallery(sqlite_url):
    """Enrollment's duplicate check: per-comparison FAR <= 1 % / N from the card's table, the strictest point
    beyond it, an identification calibration when one is in force; never looser than the 1:1 threshold."""
    from facerec.decisions.thresholds import DUPLICATE_REFUSAL_RATE, IDENTIFICATION, duplicate_threshold
    from facerec.models.registry import model_card
    from facerec.store import Store

    card = model_card("mobilefacenet")
    table = {float(k): v for k, v in card.extra["thresholds_at_far"].items()}
    store = Store.open(sqlite_url)
    small = duplicate_threshold(store, card, 97, "cosine")
    large = duplicate_threshold(store, card, 971, "cosine")
    huge = duplicate_threshold(store, card, 10**6, "cosine")
    assert small.target_far <= DUPLICATE_REFUSAL_RATE / 97 and small.threshold == table[1e-4]
    assert large.target_far <= DUPLICATE_REFUSAL_RATE / 971 and large.threshold == table[1e-5]
    assert huge.threshold == max(table.values()) and "strictest" in huge.source
    assert card.default_threshold <= small.threshold < large.threshold < huge.threshold
    assert "971 people" in large.source
    store.save_calibration(card.id, IDENTIFICATION, "cosine", "strangers", 0, 500, None, 0.61, "fpir=0.01", {})
    calibrated = duplicate_threshold(store, card, 971, "cosine")
    assert calibrated.threshold == 0.61 and "identification calibration" in calibrated.source


def test_identification_threshold_grows_with_the_gallery_and_a_calibration_wins(tmp_path):
    """1:K with no identification calibration: the card's point at FAR <= target FPIR / N (N enrolled),
    never looser than 1:1, decided by the engine for every identify verb; a stored identification
    calibration replaces it (and is what the kiosk calls calibrated)."""
    from facerec.api import FaceRec, Settings
    from facerec.decisions.thresholds import IDENTIFICATION, identification_fpir, identification_threshold
    from facerec.kiosk.loop import calibrated_for_identification

    fpir, provenance = identification_fpir()
    assert 0 < fpir < 1 and provenance
    fr = FaceRec(Settings.resolve(db=f"sqlite:///{tmp_path / 'g.db'}", index=str(tmp_path / "g.faiss")))
    table = {float(k): v for k, v in fr.card.extra["thresholds_at_far"].items()}
    rng = np.random.default_rng(0)

    def enroll(first: int, last: int) -> None:
        for k in range(first, last):
            e = rng.normal(size=(1, fr.card.embedding_dim)).astype(np.float32)
            fr.enroll_embeddings(f"Person {k}", e / np.linalg.norm(e), [f"{k:064x}"], [f"p{k}.jpg"], [1.0],
                                 [{"passed": True}])

    points = []
    for size in (3, 50):  # the engine counts its gallery
        enroll(fr.gallery.person_count(), size)
        points.append(fr.operating_point(IDENTIFICATION))
    points += [identification_threshold(fr.store, fr.card, size) for size in (500, 10**6)]
    for size, point in zip((3, 50, 500, 10**6), points):
        assert point.target_far <= fpir / size or "strictest" in point.source
        assert point.source.startswith("gallery-aware default") and f"{size} people" in point.source
        assert not calibrated_for_identification(point.source)
    assert fr.gallery.person_count() == 50
    # FAR 1e-3 (the 1:1 point), 1e-4, 1e-5, then the strictest the card resolves
    assert [p.threshold for p in points] == [fr.card.default_threshold, table[1e-4], table[1e-5], max(table.values())]
    assert fr.operating_point("verification").threshold == fr.card.default_threshold  # 1:1 unchanged

    fr.store.save_calibration(fr.card.id, IDENTIFICATION, "cosine", "strangers", 0, 500, None, 0.55, "fpir=0.01", {})
    calibrated = fr.operating_point(IDENTIFICATION)
    assert calibrated.threshold == 0.55 and calibrated_for_identification(calibrated.source)
