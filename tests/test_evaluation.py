"""`facerec evaluate pairs` and `facerec evaluate ident` through the whole pipeline on real LFW photos.

CI runs a representative slice (40 View 1 pairs, a 1:K split of a few identities); the full View 2
protocol is marked slow (`make test-all`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cli


def small_pairs_file(lfw: Path, tmp_path: Path, per_class: int = 20) -> Path:
    """The first matched and mismatched pairs of pairsDevTest.txt, in the same format."""
    lines = (lfw / "pairsDevTest.txt").read_text().splitlines()
    n = int(lines[0])
    chosen = [str(per_class)] + lines[1:1 + per_class] + lines[1 + n:1 + n + per_class]
    path = tmp_path / "pairs_small.txt"
    path.write_text("\n".join(chosen) + "\n")
    return path


def test_evaluate_pairs_slice(lfw, tmp_path):
    pairs = small_pairs_file(lfw, tmp_path)
    plots = tmp_path / "plots"
    result = run_cli("evaluate", "pairs", "--pairs", str(pairs), "--root", str(lfw), "--plots", str(plots),
                     "--crop-cache", str(tmp_path / "crops"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["pairs"] == 40 and report["genuine"] == 20
    assert report["roc_auc"] > 0.95 and report["eer"] < 0.1
    assert (plots / "roc.png").stat().st_size > 1000 and (plots / "det.png").stat().st_size > 1000
    # a second run reuses the aligned crops and gives the same numbers
    again = run_cli("evaluate", "pairs", "--pairs", str(pairs), "--root", str(lfw), "--crop-cache",
                    str(tmp_path / "crops"), "--json")
    assert json.loads(again.stdout)["roc_auc"] == report["roc_auc"]


def test_evaluate_ident_small_split(lfw, tmp_path):
    root = tmp_path / "ident"
    people = ["Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder", "Ariel_Sharon",
              "Hugo_Chavez", "Jean_Chretien", "John_Ashcroft", "Junichiro_Koizumi", "Jacques_Chirac"]
    for person in people:
        (root / person).mkdir(parents=True)
        for photo in sorted((lfw / person).glob("*.jpg"))[:4]:
            shutil.copy(photo, root / person)
    result = run_cli("evaluate", "ident", "--root", str(root), "--unknown-fraction", "0.3", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["identities_known"] == 7 and report["identities_unknown"] == 3
    assert report["mated_probes"] == 21 and report["non_mated_probes"] == 12
    assert report["rank1"] >= 0.9


@pytest.mark.slow
def test_lfw_view2_accuracy_of_the_default_model(lfw, tmp_path):
    result = run_cli("evaluate", "pairs", "--pairs", str(lfw / "pairs.txt"), "--json", timeout=3600)
    report = json.loads(result.stdout)
    assert report["accuracy_mean"] >= 0.99


def test_learned_scorer_and_classical_models_through_the_cli(lfw, tmp_path):
    """`--scorer learned` decides verify with its own threshold; classical models evaluate by the same code."""
    db = str(tmp_path / "f.db")
    enrolled = run_cli("--db", db, "--model", "dlib_resnet29", "enroll", "Tony Blair",
                       str(lfw / "Tony_Blair" / "Tony_Blair_0001.jpg"))
    assert enrolled.returncode == 0, enrolled.stderr
    same = run_cli("--db", db, "--model", "dlib_resnet29", "--scorer", "learned", "verify", "Tony Blair",
                   str(lfw / "Tony_Blair" / "Tony_Blair_0002.jpg"), "--json")
    other = run_cli("--db", db, "--model", "dlib_resnet29", "--scorer", "learned", "verify", "Tony Blair",
                    str(lfw / "Colin_Powell" / "Colin_Powell_0001.jpg"), "--json")
    assert same.returncode == 0 and other.returncode == 1, same.stdout + other.stdout
    assert json.loads(same.stdout)["threshold_source"].startswith("default of verifier")
    assert json.loads(same.stdout)["score"] > json.loads(other.stdout)["score"]

    pairs = small_pairs_file(lfw, tmp_path)
    for args, floor in ((["--model", "dlib_resnet29", "--scorer", "learned"], 0.95), (["--model", "fisherfaces"], 0.6),
                        (["--model", "lbph", "--scorer", "chi2"], 0.6)):
        result = run_cli(*args, "evaluate", "pairs", "--pairs", str(pairs), "--root", str(lfw),
                         "--crop-cache", str(tmp_path / "crops"), "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["roc_auc"] > floor, (args, result.stdout)
