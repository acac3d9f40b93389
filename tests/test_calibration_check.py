"""Calibration names its domain, and `facerec calibrate check FOLDER` measures the threshold in force on a user's
own labelled photos (real LFW people), against an independent computation on the same scores."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import confusion_matrix, roc_auc_score
from sqlalchemy import create_engine, text

from conftest import TEST_MODEL, lfw_image, run_cli
from facerec.decisions.calibration import check_rate

PEOPLE = ("Colin_Powell", "Tony_Blair", "George_W_Bush", "Donald_Rumsfeld", "Gerhard_Schroeder", "Ariel_Sharon",
          "Hugo_Chavez", "Junichiro_Koizumi")
PHOTOS = 4
LOOSE = 0.15  # far below any FAR 1e-3 threshold of the model: about a quarter of LFW impostor pairs pass it


@pytest.fixture(scope="module")
def people(tmp_path_factory, lfw) -> Path:
    """Eight LFW people with four photos each, as a folder per person (symlinks, as a user's folder)."""
    root = tmp_path_factory.mktemp("check") / "people"
    for person in PEOPLE:
        (root / person).mkdir(parents=True)
        for n in range(1, PHOTOS + 1):
            (root / person / f"{person}_{n:04d}.jpg").symlink_to(lfw_image(lfw, person, n))
    return root


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> Path:
    """One aligned-crop cache for the module: detection runs once per photo, not once per test."""
    return tmp_path_factory.mktemp("crops")


def rows(db: Path) -> dict:
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        out = {table: conn.execute(text(f"select * from {table} order by 1")).all()
               for table in ("people", "templates", "calibrations")}
        # the audit chain's head moves with every audit event; every other fact must stay
        out["facerec_info"] = conn.execute(text("select * from facerec_info where key != 'audit_head'")).all()
        out["audit"] = conn.execute(text("select action, outcome from audit_log order by id")).all()
    engine.dispose()
    return out


def test_check_rates_and_verdicts_on_hand_made_counts():
    assert check_rate("FAR", 0, 448, 1e-3).verdict == "consistent"  # 448 pairs cannot show 1e-3
    assert check_rate("FAR", 0, 10_000, 1e-3).verdict == "confirmed"  # upper bound 3.7e-4
    drifted = check_rate("FAR", 30, 10_000, 1e-3)
    assert drifted.drifted and drifted.ci[0] > 1e-3
    assert check_rate("FRR", 3, 100, None).verdict == "not promised"
    ci = binomtest(7, 250).proportion_ci(confidence_level=0.95, method="exact")
    assert check_rate("FAR", 7, 250, 0.01).ci == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_calibrate_check_flags_a_loose_threshold_and_not_the_shipped_one(tmp_path, people, crops):
    from facerec.api import FaceRec
    from facerec.models.registry import model_card
    from facerec.store import Store

    db = tmp_path / "f.db"
    card = model_card(TEST_MODEL)
    shipped = run_cli("--db", str(db), "calibrate", "check", str(people), "--json", "--crop-cache", str(crops))
    assert shipped.returncode == 0, shipped.stderr
    report = json.loads(shipped.stdout)
    assert report["drifted"] is False and report["threshold"] == card.default_threshold
    assert report["far"]["promised"] == card.extra["default_threshold_far"]
    assert report["frr"]["promised"] == card.extra["default_threshold_frr"]
    assert report["threshold_source"].startswith(f"default of model {TEST_MODEL}: FAR 0.001 on LFW View 1")
    n_genuine = len(PEOPLE) * len(list(combinations(range(PHOTOS), 2)))
    n_impostor = len(list(combinations(range(len(PEOPLE) * PHOTOS), 2))) - n_genuine
    assert (report["frr"]["pairs"], report["far"]["pairs"]) == (n_genuine, n_impostor)
    assert report["data"]["people"] == len(PEOPLE) and len(report["data"]["fingerprint"]) == 64

    store = Store.open(f"sqlite:///{db}")
    store.save_calibration(TEST_MODEL, "verification", "cosine", "deliberately loose", 1, 1, None, LOOSE,
                           "far=0.001", {"target_far": 1e-3, "points": [{"target_far": 1e-3, "frr": 0.0}]})
    store.close()
    before = rows(db)
    loose = run_cli("--db", str(db), "calibrate", "check", str(people), "--json", "--crop-cache", str(crops))
    assert loose.returncode == 1, loose.stderr
    assert "warning: the threshold in force has drifted" in loose.stderr
    drifted = json.loads(loose.stdout)
    assert drifted["drifted"] is True and drifted["far"]["verdict"] == "drifted" and drifted["threshold"] == LOOSE
    assert drifted["threshold_source"].startswith("calibration #1 (verification, far=0.001")
    after = rows(db)  # only an audit event was written
    assert {k: v for k, v in after.items() if k != "audit"} == {k: v for k, v in before.items() if k != "audit"}
    assert after["audit"] == before["audit"] + [("calibration_check", "drifted")]

    # the same check in process, its numbers recomputed independently from its scores
    with FaceRec(db=str(db), model=TEST_MODEL) as fr:
        result = fr.check_calibration(people, cache_dir=crops)
    genuine, impostor = result.genuine_scores, result.impostor_scores
    assert (genuine.size, impostor.size) == (n_genuine, n_impostor)
    labels = np.r_[np.ones(genuine.size), np.zeros(impostor.size)]
    scores = np.r_[genuine, impostor]
    assert roc_auc_score(labels, scores) > 0.98  # real same/different-person scores, not noise
    tn, fp, fn, tp = confusion_matrix(labels, scores >= LOOSE).ravel()
    assert (result.far.errors, result.frr.errors) == (fp, fn) == (drifted["far"]["errors"], drifted["frr"]["errors"])
    ci = binomtest(int(fp), int(fp + tn)).proportion_ci(confidence_level=0.95, method="exact")
    assert result.far.ci == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert ci.low > 1e-3  # the drift is real on these photos
    shipped_fp = int(np.sum(impostor >= card.default_threshold))
    shipped_ci = binomtest(shipped_fp, impostor.size).proportion_ci(confidence_level=0.95, method="exact")
    assert report["far"]["errors"] == shipped_fp and shipped_ci.low <= 1e-3


def test_calibration_records_its_domain(tmp_path, people, crops):
    db = tmp_path / "f.db"
    result = run_cli("--db", str(db), "calibrate", "--from-dir", str(people), "--far", "0.01",
                     "--report", str(tmp_path / "report"), "--crop-cache", str(crops))
    assert result.returncode == 0, result.stderr
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        report = json.loads(conn.execute(text("select report from calibrations")).scalar())
    engine.dispose()
    domain = report["domain"]
    assert domain["source"] == "folder" and domain["path"] == str(people.resolve())
    assert (domain["people"], domain["images"]) == (len(PEOPLE), len(PEOPLE) * PHOTOS)
    assert (domain["genuine_pairs"], domain["model"]) == (report["n_genuine"], TEST_MODEL)
    check = json.loads(run_cli("--db", str(db), "calibrate", "check", str(people), "--json",
                               "--crop-cache", str(crops)).stdout)
    assert check["data"]["fingerprint"] == domain["fingerprint"]  # the same photos: the same fingerprint
    assert check["calibration_domain"] == domain
    shown = run_cli("--db", str(db), "calibrate", "show")
    assert shown.returncode == 0 and f"data fingerprint {domain['fingerprint'][:12]}" in shown.stdout
    assert f"{len(PEOPLE)} people" in shown.stdout


def test_check_refuses_bad_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    for folder, message in ((tmp_path / "missing", "no such directory"), (tmp_path / "empty", "no person sub-folders")):
        result = run_cli("--db", str(tmp_path / "f.db"), "calibrate", "check", str(folder))
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_the_promised_frr_of_each_card_is_the_frr_its_threshold_provenance_states():
    import re

    from facerec.models.registry import model_card

    for model in ("mobilefacenet", "sface_2021dec", "edgeface_s_gamma05", "dlib_resnet29"):
        card = model_card(model)
        stated = float(re.search(r"FRR there ([0-9.]+)", card.threshold_provenance).group(1))
        assert abs(card.extra["default_threshold_frr"] - stated) <= 5e-4, model
