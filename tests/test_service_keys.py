"""`facerec serve keys create/list/revoke/rotate` as a user runs them; the database keeps only hashes."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from conftest import run_cli


def test_keys_cli_lifecycle(tmp_path):
    db = tmp_path / "keys.db"
    made = run_cli("--db", str(db), "serve", "keys", "create", "--name", "door 1", "--scope", "recognize",
                   "--gallery", "office", "--expires-days", "30", "--json")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    assert key["scopes"] == ["recognize"] and key["galleries"] == ["office"] and key["expires_at"]
    prefix, key_id, secret = key["token"].split("_", 2)
    assert (prefix, key_id) == ("frk", key["id"])

    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT secret_sha256 FROM api_keys WHERE id = ?", (key_id,)).fetchone()[0]
        dump = "\n".join(conn.iterdump())
    assert stored == hashlib.sha256(secret.encode()).hexdigest() and secret not in dump

    rotated = run_cli("--db", str(db), "serve", "keys", "rotate", key_id, "--grace-minutes", "10", "--json")
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)
    assert new["replaces"] == key_id and new["scopes"] == ["recognize"] and new["galleries"] == ["office"]
    assert new["expires_at"] == key["expires_at"] or new["expires_at"] <= key["expires_at"]

    revoked = run_cli("--db", str(db), "serve", "keys", "revoke", key_id, "--json")
    assert revoked.returncode == 0 and json.loads(revoked.stdout)["revoked_at"]
    listed = json.loads(run_cli("--db", str(db), "serve", "keys", "list", "--json").stdout)
    assert {k["id"] for k in listed} == {key_id, new["id"]} and "token" not in json.dumps(listed)

    bad = run_cli("--db", str(db), "serve", "keys", "create", "--name", "x", "--scope", "everything", "--json")
    assert bad.returncode == 2 and json.loads(bad.stdout)["error"] == "usage"


def test_unknown_key_id_is_a_usage_error(tmp_path):
    from facerec.api import FaceRec, Settings
    from facerec.errors import UsageError

    with FaceRec(Settings.resolve(db=str(tmp_path / "k.db"))) as fr, pytest.raises(UsageError, match="no API key"):
        fr.keys.revoke("000000000000")


def test_orphan_worker_indexes_are_removed(tmp_path):
    """A worker killed without shutdown leaves its index (embeddings) behind: the next start removes it."""
    pytest.importorskip("fastapi")
    from facerec.service.app import remove_orphan_indexes

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    index = tmp_path / "gallery.faiss"
    files = [index, tmp_path / f"gallery.worker-{dead.pid}.faiss", tmp_path / f"gallery.worker-{os.getpid()}.faiss"]
    for f in files:
        f.write_bytes(b"x")
    remove_orphan_indexes(index)
    assert [f.exists() for f in files] == [True, False, True]
