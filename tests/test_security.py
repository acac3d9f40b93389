"""Security (issue 16): tamper-evident audit, templates sealed at rest, key rotation, erasure.

Real SQLite files and a real PostgreSQL server; tampering is done with raw SQL, as an intruder would.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from conftest import run_cli
from test_reliability import clean, synthetic_gallery


def raw(url: str, *statements: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for sql in statements:
            conn.execute(text(sql))
    engine.dispose()


def test_audit_chain_finds_edits_and_deletions(db_url):
    from facerec.store import AuditEntry

    store = synthetic_gallery(db_url, names=["Ada", "Bob", "Cy"])
    for k in range(5):
        store.audit(AuditEntry("verify", "match", person_name="Ada", score=0.5 + k / 10, threshold=0.4,
                               details={"image": f"door{k}.jpg", "nested": {"k": [k, 1.5]}}))
    assert store.verify_audit().intact
    ids = [r[0] for r in create_engine(db_url).connect().execute(text("select id from audit_log order by id"))]
    raw(db_url, f"update audit_log set outcome = 'below_threshold' where id = {ids[4]}",  # an edit
            f"delete from audit_log where id = {ids[6]}")  # a deletion in the middle
    report = store.verify_audit()
    problems = {(p["id"], p["problem"]) for p in report.problems}
    assert (ids[4], "edited") in problems
    assert (ids[7], "link broken") in problems
    assert len(report.problems) == 2
    raw(db_url, f"delete from audit_log where id = {ids[-1]}")  # the newest event: only the head says so
    assert any(p["problem"] == "head mismatch" for p in store.verify_audit().problems)
    store.close()


def test_audit_verify_command(tmp_path):
    url = f"sqlite:///{tmp_path / 'facerec.db'}"
    synthetic_gallery(url, names=["Ada", "Bob"]).close()
    ok = run_cli("--db", url, "audit", "verify", "--json")
    clean(ok, 0)
    assert json.loads(ok.stdout)["intact"] and json.loads(ok.stdout)["events"] == 2
    raw(url, "update audit_log set details = '{}' where id = 1", "delete from audit_log where id = 2")
    bad = run_cli("--db", url, "audit", "verify")
    clean(bad, 1)
    assert "TAMPERED" in bad.stdout and "event 1: edited" in bad.stdout and "head mismatch" in bad.stdout


def test_migration_chains_events_written_before_it(db_url):
    """A database at revision 0003 with audit events: 0004 chains them, and edits are found from then on."""
    from facerec.store import Store, migrate

    url = db_url
    engine = create_engine(url)
    migrate.upgrade(engine, "0003")
    raw(url, "insert into audit_log (at, action, outcome, details) values ('2026-01-01 10:00:00.000000', 'enroll', "
             "'enrolled', '{\"images\": [\"a.jpg\"]}')",
        "insert into audit_log (at, action, outcome, score, details) values ('2026-01-02 10:00:00.000000', "
        "'verify', 'match', 0.75, '{}')")
    store = Store.open(url, auto_migrate=True)
    assert store.verify_audit().intact and store.verify_audit().events == 2
    raw(url, "update audit_log set score = 0.99 where id = 2")
    assert [p["problem"] for p in store.verify_audit().problems] == ["edited"]
    engine.dispose()
    store.close()


# --- templates at rest ----------------------------------------------------------------------------------
def test_sealed_templates_round_trip_and_need_their_key(db_url, tmp_path):
    from facerec.errors import TemplateKeyError
    from facerec.store import Store
    from facerec.store.crypto import TemplateCipher, write_key_file

    write_key_file(tmp_path / "k1")
    assert (tmp_path / "k1").stat().st_mode & 0o777 == 0o600
    cipher = TemplateCipher.from_file(tmp_path / "k1")
    clear_url = f"sqlite:///{tmp_path / 'clear.db'}"
    sealed, clear = synthetic_gallery(db_url, cipher=cipher), synthetic_gallery(clear_url)
    got, expected = sealed.templates("mobilefacenet"), clear.templates("mobilefacenet")  # same seed: same vectors
    np.testing.assert_array_equal(got.embeddings, expected.embeddings)
    blobs = [bytes(r[0]) for r in create_engine(db_url).connect().execute(text("select embedding from templates"))]
    for vec in expected.embeddings:
        assert all(vec.astype("<f4").tobytes() not in b for b in blobs)  # nothing in the clear
    with pytest.raises(TemplateKeyError, match="sealed with key"):
        Store.open(db_url).templates("mobilefacenet")
    write_key_file(tmp_path / "other")
    with pytest.raises(TemplateKeyError, match="sealed with key"):
        Store.open(db_url, cipher=TemplateCipher.from_file(tmp_path / "other")).templates("mobilefacenet")
    # a sealed template moved onto another person's row fails to open
    raw(db_url, "insert into people (name, created_at) values ('Mallory', '2026-01-01 00:00:00')",
        "update templates set person_id = (select id from people where name = 'Mallory') "
        "where id = (select min(id) from templates)")
    with pytest.raises(TemplateKeyError, match="failed authentication"):
        sealed.templates("mobilefacenet")


def test_key_rotation_reseals_everything_in_one_transaction(tmp_path):
    from facerec.api import FaceRec, generate_key
    from facerec.errors import TemplateKeyError

    db = tmp_path / "facerec.db"
    synthetic_gallery(f"sqlite:///{db}", names=["Ada", "Bob", "Cy"]).close()
    before = FaceRec(db=str(db)).store.templates("mobilefacenet").embeddings
    FaceRec(db=str(db)).rebuild_index()
    assert (tmp_path / "facerec.db.faiss").exists()
    generate_key(tmp_path / "k1")
    generate_key(tmp_path / "k2")
    with FaceRec(db=str(db)) as fr:  # clear -> k1: the unencrypted index file goes
        assert fr.rotate_key(tmp_path / "k1")["templates"] == 6
    assert not (tmp_path / "facerec.db.faiss").exists()
    with FaceRec(db=str(db), key_file=tmp_path / "k1") as fr:
        assert fr.key_usage() == {fr.store.cipher.key_id: 6}
        result = fr.rotate_key(tmp_path / "k2")
        assert result["from_key"] != result["to_key"]
    with FaceRec(db=str(db), key_file=tmp_path / "k2") as fr:
        np.testing.assert_array_equal(fr.store.templates("mobilefacenet").embeddings, before)
        fr.rebuild_index()  # in memory only: never written while templates are sealed
        assert fr.gallery.size == 6
    assert not (tmp_path / "facerec.db.faiss").exists()
    with FaceRec(db=str(db), key_file=tmp_path / "k1") as fr, pytest.raises(TemplateKeyError):
        fr.store.templates("mobilefacenet")
    # a failed rotation changes nothing: k1 cannot open what k2 sealed
    with FaceRec(db=str(db), key_file=tmp_path / "k1") as fr, pytest.raises(TemplateKeyError):
        fr.rotate_key(tmp_path / "k1")
    assert FaceRec(db=str(db), key_file=tmp_path / "k2").key_usage() == {
        FaceRec(db=str(db), key_file=tmp_path / "k2").store.cipher.key_id: 6}


def test_keys_cli(tmp_path):
    db = str(tmp_path / "facerec.db")
    synthetic_gallery(f"sqlite:///{db}").close()
    clean(run_cli("keys", "generate", str(tmp_path / "k"), "--json"), 0)
    again = run_cli("keys", "generate", str(tmp_path / "k"), "--json")
    clean(again, 2)
    assert "never overwritten" in json.loads(again.stdout)["message"]
    rotated = run_cli("--db", db, "keys", "rotate", "--new-key-file", str(tmp_path / "k"), "--json")
    clean(rotated, 0)
    status = run_cli("--db", db, "--key-file", str(tmp_path / "k"), "keys", "status", "--json")
    clean(status, 0)
    assert list(json.loads(status.stdout).values()) == [2]
    (tmp_path / "k").chmod(0o644)
    loose = run_cli("--db", db, "--key-file", str(tmp_path / "k"), "list", "--json")
    clean(loose, 2)
    assert "readable by group or others" in json.loads(loose.stdout)["message"]


# --- erasure --------------------------------------------------------------------------------------------
def test_erase_leaves_no_biometric_trace(tmp_path, monkeypatch):
    from facerec import api
    from facerec.api import FaceRec, register_eraser

    monkeypatch.setattr(api, "_ERASERS", [])  # this test's eraser stays in this test

    db = tmp_path / "facerec.db"
    store = synthetic_gallery(f"sqlite:///{db}", names=["Ada", "Bob"])
    ada = store.templates("mobilefacenet", name="Ada").embeddings
    store.close()
    evidence = tmp_path / "evidence" / "Ada"
    evidence.mkdir(parents=True)
    (evidence / "crop.png").write_bytes(b"crop")

    @register_eraser
    def evidence_crops(engine, name):  # what a kiosk would register for its evidence folder
        folder = tmp_path / "evidence" / name
        gone = [f"evidence {p}" for p in folder.iterdir()]
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
        return gone

    with FaceRec(db=str(db)) as fr:
        fr.rebuild_index()
        (tmp_path / "facerec.db.faiss.999999.abc.tmp").write_bytes(b"a crashed writer's leftovers")
        result = fr.erase("Ada")
    assert result.removed_templates == 2
    assert any("evidence" in t for t in result.traces) and any(".tmp deleted" in t for t in result.traces)
    assert not evidence.exists() and not list(tmp_path.glob("*.tmp"))
    for path in tmp_path.iterdir():
        if path.is_file():
            blob = path.read_bytes()
            assert not any(v.astype("<f4").tobytes()[:64] in blob for v in ada), path
    events = FaceRec(db=str(db)).audit_events()
    assert [e["action"] for e in events[:2]] == ["erase", "erase"]
    assert all("embedding" not in json.dumps(e) for e in events)
    assert FaceRec(db=str(db)).verify_audit()["intact"]


def test_remove_erase_cli(tmp_path):
    db = tmp_path / "facerec.db"
    synthetic_gallery(f"sqlite:///{db}", names=["Ada"]).close()
    result = run_cli("--db", str(db), "remove", "Ada", "--erase", "--json")
    clean(result, 0)
    assert json.loads(result.stdout)["removed_templates"] == 2
