"""Bad input never crashes and never loses data: one line on stderr, exit code 2, database and index unchanged.

Every case runs the real CLI in a new process against a database holding one enrolled person.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine, text

from conftest import REPO, lfw_image, run_cli
from test_io import huge_png


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory, lfw):
    """A SQLite database + index with Tony Blair enrolled, built once and copied for each test."""
    root = tmp_path_factory.mktemp("enrolled")
    db = root / "facerec.db"
    result = run_cli("--db", str(db), "enroll", "Tony Blair", str(lfw_image(lfw, "Tony_Blair", 1)))
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture
def world(enrolled, tmp_path):
    for f in enrolled.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def snapshot(world: Path) -> tuple:
    """Everything a command could damage: database rows and the index file bytes."""
    engine = create_engine(f"sqlite:///{world / 'facerec.db'}")
    with engine.connect() as conn:
        rows = tuple(
            tuple(conn.execute(text(q)).all())
            for q in ("select id, name from people order by id",
                      "select id, person_id, embedding from templates order by id",
                      "select key, value from facerec_info order by key",
                      "select count(*) from audit_log")
        )
    engine.dispose()
    index = world / "facerec.db.faiss"
    return rows, hashlib.sha256(index.read_bytes()).hexdigest() if index.exists() else None


def facerec(world: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return run_cli("--db", str(world / "facerec.db"), *args, **kw)


def assert_refused(world: Path, result: subprocess.CompletedProcess, before: tuple, message: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert snapshot(world) == before


def make_bad_file(kind: str, folder: Path, lfw: Path) -> Path:
    jpeg = lfw_image(lfw, "Colin_Powell", 1).read_bytes()
    path = folder / f"{kind}.jpg"
    if kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(jpeg[: len(jpeg) // 3])
    elif kind == "corrupt":
        path.write_bytes(jpeg[:2] + bytes(len(jpeg) - 2))
    elif kind == "not_an_image":
        path.write_text("name,score\nada,1\n")
    elif kind == "unsupported":
        path = folder / "icon.ico"
        Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(path)
    elif kind == "bomb":
        path = folder / "bomb.png"
        path.write_bytes(huge_png(40000, 40000))
    elif kind == "no_face":
        path = folder / "sky.png"
        Image.fromarray(np.tile(np.linspace(0, 255, 300, dtype=np.uint8), (200, 1))).save(path)
    elif kind == "two_faces":
        a = Image.open(lfw_image(lfw, "Colin_Powell", 1))
        b = Image.open(lfw_image(lfw, "Tony_Blair", 2))
        both = Image.new("RGB", (a.width + b.width, max(a.height, b.height)))
        both.paste(a, (0, 0))
        both.paste(b, (a.width, 0))
        path = folder / "two.png"
        both.save(path)
    return path


IMAGE_CASES = {
    "zero_byte": "empty file",
    "truncated": "truncated",
    "corrupt": "corrupt",
    "not_an_image": "not an image",
    "unsupported": "unsupported image format",
    "bomb": "too large",
    "no_face": "no face found",
    "two_faces": "2 faces found",
}


@pytest.mark.parametrize("kind", sorted(IMAGE_CASES))
@pytest.mark.parametrize("command", ["enroll", "verify"])
def test_bad_images(world, lfw, kind, command):
    bad = make_bad_file(kind, world, lfw)
    before = snapshot(world)
    args = ["enroll", "Colin Powell", str(bad)] if command == "enroll" else ["verify", "Tony Blair", str(bad)]
    assert_refused(world, facerec(world, *args), before, IMAGE_CASES[kind])


def test_missing_path_and_directory(world):
    before = snapshot(world)
    assert_refused(world, facerec(world, "enroll", "Ada", str(world / "nope.jpg")), before, "no such file")
    assert_refused(world, facerec(world, "identify", str(world)), before, "is a directory")
    assert_refused(world, facerec(world, "enroll", "--from-dir", str(world / "none")), before, "no such directory")


def test_unreadable_file(world, lfw, monkeypatch):
    photo = world / "locked.jpg"
    photo.write_bytes(lfw_image(lfw, "Colin_Powell", 1).read_bytes())
    photo.chmod(0)
    before = snapshot(world)
    if os.geteuid() != 0:
        assert_refused(world, facerec(world, "enroll", "Colin Powell", str(photo)), before, "permission denied")
        return
    # root reads anything: run the CLI as 'nobody' where it can reach the interpreter and the repo ...
    as_nobody = dict(capture_output=True, text=True, cwd=REPO, user=65534, group=65534, extra_groups=[])
    try:
        nobody_can_run = subprocess.run([sys.executable, "-c", "import facerec"], **as_nobody).returncode == 0
    except OSError:  # e.g. the interpreter lives under root's private home
        nobody_can_run = False
    if nobody_can_run:
        shared = Path(tempfile.mkdtemp(prefix="facerec-perm-"))
        shared.chmod(0o755)
        locked = shared / "locked.jpg"
        shutil.copy(photo, locked)
        locked.chmod(0)
        env = {**os.environ, "HOME": str(shared), "FACEREC_HOME": str(shared)}
        result = subprocess.run([sys.executable, str(REPO / "cli.py"), "--db", str(shared / "x.db"), "enroll",
                                 "Colin Powell", str(locked)], env=env, **as_nobody)
        shutil.rmtree(shared)
        assert_refused(world, result, before, "permission denied")
        return
    # ... else check the same code path in-process, with the permission check answering as for 'nobody'
    from facerec.api import FaceRec
    from facerec.errors import InputPathError

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == photo else real_access(p, mode))
    with pytest.raises(InputPathError, match="permission denied"):
        FaceRec(db=str(world / "facerec.db")).enroll("Colin Powell", [photo])
    assert snapshot(world) == before


@pytest.mark.parametrize("name,message", [
    ("", "empty name"),
    ("   ", "empty name"),
    ("x" * 200, "name too long"),
    ("Ada\x07Lovelace", "control characters"),
    ("../etc/passwd", "looks like a path"),
    ("a/b", "looks like a path"),
])
def test_bad_names(world, lfw, name, message):
    before = snapshot(world)
    photo = str(lfw_image(lfw, "Colin_Powell", 1))
    assert_refused(world, facerec(world, "enroll", name, photo), before, message)


def test_unknown_person(world, lfw):
    before = snapshot(world)
    photo = str(lfw_image(lfw, "Colin_Powell", 1))
    assert_refused(world, facerec(world, "verify", "Nobody", photo), before, "unknown person 'Nobody'")
    assert_refused(world, facerec(world, "remove", "Nobody"), before, "unknown person 'Nobody'")


def test_bad_databases(world, tmp_path):
    before = snapshot(world)
    for url, message in [
        ("nosuchdialect://x/y", "database"),
        ("postgresql+psycopg://nobody:secret@127.0.0.1:1/none", "cannot use database"),
        (str(tmp_path), "is a directory"),
    ]:
        result = run_cli("--db", url, "list")
        assert_refused(world, result, before, message)
        assert "secret" not in result.stderr
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 1000)
    assert_refused(world, run_cli("--db", str(junk), "list"), before, "not a database")
    assert junk.read_bytes() == b"not a database" * 1000


def test_database_made_for_another_model(world):
    engine = create_engine(f"sqlite:///{world / 'facerec.db'}")
    with engine.begin() as conn:
        conn.execute(text("update facerec_info set value='some_other_model' where key='model_id'"))
    engine.dispose()
    before = snapshot(world)
    result = facerec(world, "list")
    assert_refused(world, result, before, "made for model 'some_other_model'")
    assert "re-enroll" in result.stderr
    assert_refused(world, facerec(world, "--model", "no_such_model", "list"), before, "unknown model")


@pytest.mark.parametrize("damage", ["garbage", "flipped_byte", "stale"])
def test_corrupt_or_stale_index_is_rebuilt_with_a_warning(world, lfw, damage):
    index = world / "facerec.db.faiss"
    good = index.read_bytes()
    if damage == "garbage":
        index.write_bytes(b"\x00" * 100)
    elif damage == "flipped_byte":
        index.write_bytes(good[:-5] + bytes([good[-5] ^ 0xFF]) + good[-4:])
    else:
        engine = create_engine(f"sqlite:///{world / 'facerec.db'}")
        with engine.begin() as conn:
            conn.execute(text("update facerec_info set value='99' where key='templates_generation'"))
        engine.dispose()
    result = facerec(world, "identify", str(lfw_image(lfw, "Tony_Blair", 2)), "--json")
    assert result.returncode == 0, result.stderr
    assert "warning: index" in result.stderr and "rebuilding it from the database" in result.stderr
    assert '"name": "Tony Blair"' in result.stdout
    assert facerec(world, "identify", str(lfw_image(lfw, "Tony_Blair", 2))).stderr == ""  # now sound


BULK_PEOPLE = 40  # enough that the enrollment is still running when the signal arrives, on any machine


def _bulk_command(world: Path, root: Path) -> list[str]:
    return [sys.executable, str(REPO / "cli.py"), "--db", str(world / "facerec.db"), "enroll", "--from-dir",
            str(root), "--allow-duplicate", "--force", "--json"]


def _start_bulk_enroll(world: Path, lfw: Path) -> tuple[subprocess.Popen, Path]:
    root = world / "bulk"
    names = sorted(p.name for p in lfw.iterdir() if (p / f"{p.name}_0003.jpg").exists())[:BULK_PEOPLE]
    for name in names:
        (root / name).mkdir(parents=True)
        for n in (1, 2, 3):
            shutil.copy(lfw_image(lfw, name, n), root / name)
    # As from a terminal: Ctrl-C delivers SIGINT with its default disposition. A runner that starts the tests
    # in the background (bash `cmd &`) makes children inherit SIGINT as *ignored*, and Python then never
    # installs its KeyboardInterrupt handler; restore the default in the child.
    proc = subprocess.Popen(_bulk_command(world, root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, root


def _template_counts(world: Path) -> dict[str, int]:
    engine = create_engine(f"sqlite:///{world / 'facerec.db'}")
    with engine.connect() as conn:
        counts = dict(conn.execute(text(
            "select p.name, count(t.id) from people p left join templates t on t.person_id = p.id group by p.id"
        )).all())
    engine.dispose()
    return counts


def _wait_for_people(world: Path, at_least: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if len(_template_counts(world)) >= at_least:
            return
        time.sleep(0.05)
    pytest.fail("bulk enrollment finished or stalled before it could be interrupted")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_bulk_enroll_leaves_whole_people(world, lfw, sig):
    proc, root = _start_bulk_enroll(world, lfw)
    _wait_for_people(world, 3, proc)  # Tony Blair + at least two new people committed
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, stderr
        assert "interrupted" in stderr and "Traceback" not in stderr
    else:
        assert proc.returncode == -signal.SIGKILL
    interrupted = _template_counts(world)
    assert 3 <= len(interrupted) < BULK_PEOPLE + 1
    # the next command repairs the index and sees everyone committed so far
    probe = facerec(world, "identify", str(lfw_image(lfw, "Tony_Blair", 2)), "--json")
    assert probe.returncode == 0 and '"name": "Tony Blair"' in probe.stdout, probe.stderr
    # resuming completes the job; everyone present after the interruption was already whole
    resumed = subprocess.run(_bulk_command(world, root), capture_output=True, text=True, cwd=REPO)
    assert resumed.returncode in (0, 2), resumed.stderr  # 2: some photo of some person has no single face
    final = _template_counts(world)
    assert len(final) >= len(interrupted)
    for name, count in interrupted.items():
        assert final[name] == count, (name, count, final[name])
    # the index agrees with the database after the repair: every template is searchable
    from facerec.index.faiss_index import SearchIndex

    index, meta = SearchIndex.load(world / "facerec.db.faiss")
    engine = create_engine(f"sqlite:///{world / 'facerec.db'}")
    with engine.connect() as conn:
        assert index.ntotal == conn.execute(text("select count(*) from templates")).scalar()
    engine.dispose()


@pytest.mark.parametrize("args,message", [
    (["verify", "--json"], "Missing argument"),
    (["identify", "--top-k", "0", "x.jpg", "--json"], "--top-k"),
    (["nosuchcommand", "--json"], "No such command"),
    (["remove", "--json", "--no-such-flag"], "No such option"),
])
def test_usage_errors_under_json_are_one_json_line(world, args, message):
    """Before: a click box on stderr and nothing on stdout under --json."""
    before = snapshot(world)
    result = facerec(world, *args)
    assert result.returncode == 2, result.stderr
    document = json.loads(result.stdout)
    assert document["error"] == "usage" and message in document["message"]
    assert_refused(world, result, before, message)


def test_unreadable_file_under_json(world, lfw, monkeypatch):
    before = snapshot(world)
    result = facerec(world, "verify", "Tony Blair", str(world / "missing.jpg"), "--json")
    assert json.loads(result.stdout) == {"error": "bad_path", "message": f"{world / 'missing.jpg'}: no such file"}
    assert_refused(world, result, before, "no such file")
