"""SIGKILL at several points of enroll, remove and index rebuild (issue 16): the database stays consistent, the
next process repairs the index and removes the dead writer's temporaries, and a re-run completes.

The worker goes through the engine's real gallery, store and audit path with synthetic templates: a kill is
about transactions and files, and a torch process per kill would not fit CI. The test polls the database
(or the index folder) until the operation is under way, then kills at a chosen point.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from conftest import REPO
from test_reliability import synthetic_gallery

WORKER = r"""
import sys
import numpy as np
from facerec.api import FaceRec
from facerec.store import NewTemplate

url, index, mode, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
fr = FaceRec(db=url, index=index)
rng = np.random.default_rng(7)
if mode == "enroll":  # people with 3 templates each, one transaction per person; skips who is whole
    for i in range(count):
        name = f"person {i:04d}"
        vecs = rng.normal(size=(3, fr.card.embedding_dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        ts = [NewTemplate(v, fr.card.id, fr.card.version, f"{i:060d}{k:04d}", f"{name}/{k}.jpg", 1.0, {})
              for k, v in enumerate(vecs)]
        fr.gallery.add(name, ts, audit=fr._entry("enroll", "enrolled", person_name=name))
elif mode == "remove":
    for person in fr.people():
        fr.remove(person.name)
elif mode == "rebuild":
    for _ in range(count):
        fr.rebuild_index()
print("done")
"""

GALLERY = 60  # people in the prepared gallery for remove / rebuild


def start(url: str, index: Path, mode: str, count: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, url, str(index), mode, str(count)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def query(url: str, sql: str):
    engine = create_engine(url)
    with engine.connect() as conn:
        value = conn.execute(text(sql)).all()
    engine.dispose()
    return value


def wait_until(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"worker ended before the kill point: {proc.stderr.read()[-2000:]}")
        if ready():
            return
        time.sleep(0.01)
    pytest.fail("kill point never reached")


def assert_consistent(url: str, index: Path, per_person: int) -> None:
    """Whole people only, change log and audit agree with the templates, chain intact, index repaired."""
    counts = dict(query(url, "select p.name, count(t.id) from people p left join templates t "
                             "on t.person_id = p.id group by p.name"))
    assert all(n == per_person for n in counts.values()), counts
    templates = query(url, "select count(*) from templates")[0][0]
    added, removed = query(url, "select sum(case when added then 1 else 0 end), "
                                "sum(case when added then 0 else 1 end) from template_changes")[0]
    assert templates == (added or 0) - (removed or 0)
    enrolled = {r[0] for r in query(url, "select person_name from audit_log where action = 'enroll'")}
    removed_people = {r[0] for r in query(url, "select person_name from audit_log where action = 'remove'")}
    assert set(counts) == enrolled - removed_people
    from facerec.api import FaceRec

    with FaceRec(db=url, index=index) as fr:
        assert fr.verify_audit()["intact"]
        assert fr.gallery.size == templates  # the next process trusts or rebuilds the index, never a wrong one
    assert not list(index.parent.glob(index.name + ".*.tmp")), "a dead writer's temporaries were left"


def kill_and_check(url: str, index: Path, mode: str, count: int, ready, per_person: int) -> None:
    proc = start(url, index, mode, count)
    wait_until(proc, ready)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert_consistent(url, index, per_person)
    rerun = start(url, index, mode, 1 if mode == "rebuild" else count)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0 and "done" in out, err[-2000:]
    assert_consistent(url, index, per_person)


# kill points: people committed so far (enroll), people left (remove)
@pytest.mark.parametrize("point", [3, pytest.param(17, marks=pytest.mark.slow), pytest.param(31, marks=pytest.mark.slow)])
def test_sigkill_during_enroll(tmp_path, point):
    url, index = f"sqlite:///{tmp_path / 'facerec.db'}", tmp_path / "facerec.db.faiss"
    synthetic_gallery(url, names=[]).close()
    kill_and_check(url, index, "enroll", 40,
                   lambda: query(url, "select count(*) from people")[0][0] >= point, per_person=3)
    assert query(url, "select count(*) from people")[0][0] == 40


@pytest.mark.parametrize("point", [50, pytest.param(25, marks=pytest.mark.slow), pytest.param(5, marks=pytest.mark.slow)])
def test_sigkill_during_remove(tmp_path, point):
    url, index = f"sqlite:///{tmp_path / 'facerec.db'}", tmp_path / "facerec.db.faiss"
    synthetic_gallery(url, names=[f"p{i:03d}" for i in range(GALLERY)]).close()
    kill_and_check(url, index, "remove", 0,
                   lambda: query(url, "select count(*) from people")[0][0] <= point, per_person=2)
    assert query(url, "select count(*) from people")[0][0] == 0


@pytest.mark.parametrize("when", ["temporary", pytest.param("renamed", marks=pytest.mark.slow)])
def test_sigkill_during_index_rebuild(tmp_path, when):
    """Killed while a temporary index is being written (or right after a rename): the next process removes
    the temporary, and trusts the file only if it matches the database."""
    url, index = f"sqlite:///{tmp_path / 'facerec.db'}", tmp_path / "facerec.db.faiss"
    synthetic_gallery(url, names=[f"p{i:03d}" for i in range(150)], per_person=20).close()
    first_mtime = index.stat().st_mtime_ns if index.exists() else 0

    def ready() -> bool:
        if when == "temporary":
            return bool(list(tmp_path.glob("facerec.db.faiss.*.tmp")))
        return index.exists() and index.stat().st_mtime_ns != first_mtime

    kill_and_check(url, index, "rebuild", 200, ready, per_person=20)
    assert os.path.getsize(index) > 0
