"""Which model runs when nobody chose one: an existing database keeps the model it was made for, a new database
gets the recommended commercial-use model (facerec/data/model_defaults.json), a conflicting choice is refused.

These tests remove the suite's FACEREC_MODEL pin (tests/conftest.py): the unchosen case is what they are about.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from conftest import TEST_MODEL, lfw_image, run_cli
from facerec.api import FaceRec, Settings, models, new_database_model, resolve_model
from facerec.errors import ModelError
from facerec.models.defaults import DEFAULTS_FILE, recommended_models
from facerec.models.defaults import new_database_model as new_model_from
from facerec.store import Store

UNCHOSEN = {"FACEREC_MODEL": ""}  # an empty variable counts as unset, for Settings and for the CLI


@pytest.fixture
def unpinned(monkeypatch):
    monkeypatch.delenv("FACEREC_MODEL", raising=False)


def facts(db) -> dict:
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        rows = dict(conn.execute(text("select key, value from facerec_info")).all())
        rows["templates"] = conn.execute(text("select count(*) from templates")).scalar()
        rows["audit"] = conn.execute(text("select count(*) from audit_log")).scalar()
    engine.dispose()
    return rows


def test_the_new_database_default_is_the_files_commercial_use_model(tmp_path):
    assert new_database_model() == recommended_models()["commercial_use"]["model"] == "sface_2021dec"
    data = json.loads(DEFAULTS_FILE.read_text())
    data["new_database"]["role"] = "most_accurate"  # the decision lives in the file: change it there
    (tmp_path / "a.json").write_text(json.dumps(data))
    assert new_model_from(tmp_path / "a.json") == recommended_models()["most_accurate"]["model"]
    data["new_database"]["role"] = "cheapest"
    (tmp_path / "b.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match="new_database.role"):
        new_model_from(tmp_path / "b.json")


def test_resolution_reads_the_database_and_creates_nothing(tmp_path, unpinned):
    db = tmp_path / "new.db"
    settings = Settings.resolve(db=str(db))
    assert settings.model_id is None
    assert resolve_model(settings).model_id == "sface_2021dec" and not db.exists()
    assert FaceRec(settings).card.id == "sface_2021dec" and not db.exists()  # nothing opened yet
    store = Store.open(f"sqlite:///{db}")
    assert Store.bound_model(f"sqlite:///{db}") is None  # migrated, nothing bound: still a new database
    store.bind_model("dlib_resnet29")
    store.close()
    assert resolve_model(settings).model_id == "dlib_resnet29"
    assert resolve_model(Settings.resolve(db=str(db), model="edgeface_s_gamma05")).model_id == "edgeface_s_gamma05"


def test_the_bound_model_is_read_from_postgresql_too(pg_url, unpinned):
    settings = Settings.resolve(db=pg_url)
    assert resolve_model(settings).model_id == "sface_2021dec"  # an empty database: no tables yet
    store = Store.open(pg_url, auto_migrate=True)
    assert Store.bound_model(pg_url) is None
    store.bind_model(TEST_MODEL)
    store.close()
    assert resolve_model(settings).model_id == TEST_MODEL


def test_a_new_database_without_a_model_gets_the_commercial_use_default(tmp_path):
    db = tmp_path / "new.db"
    listed = run_cli("--db", str(db), "list", "--json", env=UNCHOSEN)
    assert listed.returncode == 0, listed.stderr
    assert facts(db)["model_id"] == "sface_2021dec"
    models = json.loads(run_cli("models", "--json", env=UNCHOSEN).stdout)
    assert [m["id"] for m in models if m["default"]] == ["sface_2021dec"]
    shown = run_cli("models", env=UNCHOSEN).stdout
    assert "A new database gets sface_2021dec" in " ".join(shown.split())


def test_an_existing_database_keeps_its_model_and_refuses_another(tmp_path, lfw):
    db = tmp_path / "old.db"
    enrolled = run_cli("--db", str(db), "--model", TEST_MODEL, "enroll", "Tony Blair",
                       str(lfw_image(lfw, "Tony_Blair", 1)), env=UNCHOSEN)
    assert enrolled.returncode == 0, enrolled.stderr
    before = facts(db)
    assert before["model_id"] == TEST_MODEL and before["templates"] == 1

    # another process, no flag and no variable: the database's own model decides (as before the upgrade)
    found = run_cli("--db", str(db), "identify", str(lfw_image(lfw, "Tony_Blair", 4)), "--json", env=UNCHOSEN)
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    assert result["faces"][0]["name"] == "Tony Blair"
    assert TEST_MODEL in result["threshold_source"]  # one person enrolled: the model's own 1:1 point decides
    assert result["threshold"] == pytest.approx(next(c for c in models() if c.id == TEST_MODEL).default_threshold,
                                                abs=1e-4)
    after_identify = facts(db)
    assert after_identify["model_id"] == TEST_MODEL and after_identify["templates"] == 1

    # an explicit other model: the one-line error with the recipe, nothing written
    refused = run_cli("--db", str(db), "--model", "sface_2021dec", "identify",
                      str(lfw_image(lfw, "Tony_Blair", 4)), env=UNCHOSEN)
    assert refused.returncode == 2
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"was made for model '{TEST_MODEL}', not 'sface_2021dec'" in lines[0]
    assert f"--model {TEST_MODEL}" in lines[0] and "re-enroll" in lines[0]
    assert facts(db) == after_identify


def test_reading_the_bound_model_fails_like_opening(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    result = run_cli("--db", str(junk), "list", env=UNCHOSEN)
    assert result.returncode == 2 and "cannot use database" in result.stderr and "not a database" in result.stderr
    assert junk.read_bytes() == b"not a database" * 100
    assert os.environ["FACEREC_MODEL"] == TEST_MODEL  # the suite's pin is untouched by these tests


def test_a_new_database_takes_the_model_an_embeddings_file_declares(tmp_path):
    """`enroll --embeddings` into a new database with no model chosen: the file's declared model, not the
    new-database default (its vectors could not be searched by another model); an existing database keeps
    its own and refuses the file."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(4, 192)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    path = tmp_path / "gallery.npz"
    np.savez(path, names=np.array(["Ada", "Ada", "Bob", "Bob"]), embeddings=vectors,
             model_id=np.array(TEST_MODEL))
    assert TEST_MODEL != new_database_model()
    db = tmp_path / "new.db"
    done = run_cli("--db", str(db), "enroll", "--embeddings", str(path), "--json", env=UNCHOSEN)
    assert done.returncode == 0, done.stderr
    assert facts(db)["model_id"] == TEST_MODEL and facts(db)["templates"] == 4

    other = tmp_path / "other.db"
    FaceRec(Settings.resolve(db=f"sqlite:///{other}", model=new_database_model())).people()  # bound to sface
    before = facts(other)
    assert before["model_id"] == new_database_model()
    refused = run_cli("--db", str(other), "enroll", "--embeddings", str(path), "--json", env=UNCHOSEN)
    assert refused.returncode == 2 and TEST_MODEL in json.loads(refused.stdout)["message"]
    assert facts(other) == before
