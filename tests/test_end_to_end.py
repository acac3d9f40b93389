"""The one-shot path on real LFW people, through the CLI in fresh processes, on SQLite and PostgreSQL.

enroll (one photo each) → identify another photo → verify → open-set rejection of a stranger → remove,
with a restart between every step (each CLI call is a new process) and an index rebuild after its file
is deleted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import lfw_image, run_cli

# People with several LFW photos; the first photo enrolls them, the second is the probe.
GALLERY = ["Colin_Powell", "Tony_Blair", "Gerhard_Schroeder", "Hugo_Chavez", "Jean_Chretien"]
STRANGER = ("Serena_Williams", 1)


def cli(db_url: str, index: Path, *args: str):
    return run_cli("--db", db_url, "--index", str(index), *args)


def ok_json(result):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def gallery(db_url, tmp_path, lfw):
    index = tmp_path / "gallery.faiss"
    if db_url.startswith("postgresql"):
        assert cli(db_url, index, "db", "upgrade").returncode == 0
    for person in GALLERY:
        enrolled = ok_json(cli(db_url, index, "enroll", person.replace("_", " "),
                               str(lfw_image(lfw, person, 1)), "--json"))
        assert enrolled["added"] == 1
    return db_url, index


def test_enroll_identify_verify_remove(gallery, lfw):
    db_url, index = gallery
    people = ok_json(cli(db_url, index, "list", "--json"))
    assert sorted(p["name"] for p in people) == sorted(p.replace("_", " ") for p in GALLERY)

    for person in GALLERY:
        found = ok_json(cli(db_url, index, "identify", str(lfw_image(lfw, person, 2)), "--json"))
        central = found["faces"][0]
        assert central["name"] == person.replace("_", " "), found

    stranger = ok_json(cli(db_url, index, "identify", str(lfw_image(lfw, *STRANGER)), "--json", "--top-k", "3"))
    assert [f["name"] for f in stranger["faces"]] == ["unknown"]
    assert len(stranger["faces"][0]["candidates"]) == 3

    match = cli(db_url, index, "verify", "Tony Blair", str(lfw_image(lfw, "Tony_Blair", 3)), "--json")
    assert match.returncode == 0 and json.loads(match.stdout)["match"] is True
    no_match = cli(db_url, index, "verify", "Tony Blair", str(lfw_image(lfw, "Colin_Powell", 3)), "--json")
    assert no_match.returncode == 1 and json.loads(no_match.stdout)["match"] is False

    # a deleted index file is rebuilt from the database, silently when missing
    index.unlink()
    again = ok_json(cli(db_url, index, "identify", str(lfw_image(lfw, "Hugo_Chavez", 2)), "--json"))
    assert again["faces"][0]["name"] == "Hugo Chavez" and index.exists()

    removed = ok_json(cli(db_url, index, "remove", "Hugo Chavez", "--json"))
    assert removed["removed_templates"] == 1
    after = ok_json(cli(db_url, index, "identify", str(lfw_image(lfw, "Hugo_Chavez", 2)), "--json"))
    assert after["faces"][0]["name"] != "Hugo Chavez"
    gone = cli(db_url, index, "verify", "Hugo Chavez", str(lfw_image(lfw, "Hugo_Chavez", 2)))
    assert gone.returncode == 2 and "unknown person" in gone.stderr

    audit = ok_json(cli(db_url, index, "audit", "--json", "--limit", "100"))
    actions = {e["action"] for e in audit}
    assert {"enroll", "identify", "verify", "remove"} <= actions
    assert any(e["action"] == "enroll" and e["person"] == "Hugo Chavez" for e in audit)  # trail kept


def test_enroll_from_dir_is_idempotent(sqlite_url, tmp_path, lfw):
    root = tmp_path / "people"
    for person in GALLERY[:2]:
        (root / person).mkdir(parents=True)
        for n in (1, 2):
            src = lfw_image(lfw, person, n)
            (root / person / src.name).write_bytes(src.read_bytes())
    index = tmp_path / "g.faiss"
    first = ok_json(cli(sqlite_url, index, "enroll", "--from-dir", str(root), "--json"))
    assert [r["added"] for r in first] == [2, 2]
    second = ok_json(cli(sqlite_url, index, "enroll", "--from-dir", str(root), "--json"))
    assert [(r["added"], r["skipped"]) for r in second] == [(0, 2), (0, 2)]


def test_duplicate_identity_is_refused_unless_allowed(sqlite_url, tmp_path, lfw):
    index = tmp_path / "g.faiss"
    photo = str(lfw_image(lfw, "Tony_Blair", 1))
    ok_json(cli(sqlite_url, index, "enroll", "Tony Blair", photo, "--json"))
    # the same face in another file (mirrored and re-encoded): a different hash, certainly the same person
    other = str(tmp_path / "blair_again.jpg")
    Image.open(photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other, quality=85)
    refused = cli(sqlite_url, index, "enroll", "Not Blair", other)
    assert refused.returncode == 2 and "already matches enrolled person 'Tony Blair'" in refused.stderr
    assert ok_json(cli(sqlite_url, index, "enroll", "Not Blair", other, "--allow-duplicate", "--json"))["added"] == 1
