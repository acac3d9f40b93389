"""Gallery at scale (issue 21): bulk enrollment from precomputed embeddings (whole chunks under SIGKILL, a re-run
resumes, other processes catch up), and the index rebuilt beside live searches (exact answers during the
rebuild, a SIGKILL mid-rebuild leaves a loadable index).

Embeddings are random unit vectors of the default model's dimension: these tests are about transactions,
files and concurrency; the real model's path into the same store is covered by tests/test_engine.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from conftest import REPO, TEST_MODEL, run_cli
from facerec.api import FaceRec, Settings, upgrade_database
from facerec.errors import EmbeddingsFileError
from facerec.gallery import Gallery
from facerec.index import SearchIndex
from facerec.models.registry import model_card

CARD = model_card(TEST_MODEL)


def unit(rng, n: int) -> np.ndarray:
    v = rng.normal(size=(n, CARD.embedding_dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def write_npz(path: Path, n: int, per_person: int = 3, seed: int = 0, **extra) -> tuple[list[str], np.ndarray]:
    names = [f"person {i // per_person:05d}" for i in range(n)]
    vectors = unit(np.random.default_rng(seed), n)
    arrays = {"names": np.array(names), "embeddings": vectors, "model_id": np.array(CARD.id), **extra}
    np.savez(path, **arrays)
    return names, vectors


def query(url: str, sql: str):
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def exact_best(gallery_rows, probes: np.ndarray) -> list[tuple[str, float]]:
    """The best person and score per probe by brute force over the store's templates."""
    scores = probes @ gallery_rows.embeddings.T
    best = scores.argmax(axis=1)
    return [(gallery_rows.person_names[j], float(scores[i, j])) for i, j in enumerate(best)]


def test_bulk_enrollment_from_embeddings_resumes_and_other_processes_catch_up(db_url, tmp_path):
    upgrade_database(Settings.resolve(db=db_url))  # a server database is migrated explicitly
    names, vectors = write_npz(tmp_path / "g.npz", 300)
    watcher = FaceRec(db=db_url, index=str(tmp_path / "watcher.index"))  # another process's engine
    assert watcher.gallery.size == 0
    fr = FaceRec(db=db_url, index=str(tmp_path / "g.index"))
    seen = []
    result = fr.enroll_bulk(tmp_path / "g.npz", chunk=64, progress=lambda done, total: seen.append((done, total)))
    assert (result.added, result.skipped, result.people, result.chunks) == (300, 0, 100, 5)
    assert seen[-1] == (300, 300) and len(seen) == 5
    # one transaction a chunk: one generation, one audit event listing its people, the change log of every id
    assert query(db_url, "SELECT count(*) FROM template_changes WHERE added") == 300
    events = [json.loads(d) if isinstance(d, str) else d for d in
              [r[0] for r in create_engine(db_url).connect().execute(
                  text("SELECT details FROM audit_log WHERE action = 'enroll' ORDER BY id")).all()]]
    assert len(events) == 5 and sum(len(e["people"]) for e in events) >= 100 and all(e["bulk"] for e in events)
    assert fr.verify_audit()["intact"]
    # the other process catches up at its next search; answers are exact
    probes = vectors[::37] + 0.05 * unit(np.random.default_rng(1), len(vectors[::37]))
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    want = exact_best(fr.store.templates(CARD.id), probes)
    got = watcher.gallery.search(probes, 1)
    assert watcher.gallery.size == 300
    assert [(m[0].name, round(m[0].score, 5)) for m in got] == [(n, round(s, 5)) for n, s in want]
    # a re-run skips everything; a grown file adds only the new rows
    again = fr.enroll_bulk(tmp_path / "g.npz", chunk=64)
    assert (again.added, again.skipped) == (0, 300)
    write_npz(tmp_path / "g2.npz", 330)  # the same seed: the first 300 rows are the same vectors
    grown = fr.enroll_bulk(tmp_path / "g2.npz", chunk=64)
    assert (grown.added, grown.skipped) == (30, 300)
    assert query(db_url, "SELECT count(*) FROM templates") == 330 and watcher.gallery.size == 330


def test_embeddings_file_is_checked_before_anything_is_written(sqlite_url, tmp_path):
    fr = FaceRec(db=sqlite_url, index=str(tmp_path / "g.index"))
    rng = np.random.default_rng(3)
    good = {"names": np.array(["a", "b"]), "embeddings": unit(rng, 2)}
    cases = {
        "no model id": (dict(good), "no model id declared"),
        "other model": ({**good, "model_id": np.array("sface_2021dec")}, "not comparable"),
        "dimension": ({**good, "model_id": np.array(CARD.id), "embeddings": unit(rng, 2)[:, :100]}, "dimension 100"),
        "declared dim": ({**good, "model_id": np.array(CARD.id), "dim": np.array(128)}, "declares dimension 128"),
        "nan": ({**good, "model_id": np.array(CARD.id),
                 "embeddings": np.where(np.arange(CARD.embedding_dim) == 5, np.nan, unit(rng, 2))}, "NaN"),
        "zero": ({**good, "model_id": np.array(CARD.id), "embeddings": np.zeros((2, CARD.embedding_dim))}, "zero"),
        "count": ({**good, "model_id": np.array(CARD.id), "names": np.array(["a"])}, "1 names"),
        "sha256": ({**good, "model_id": np.array(CARD.id), "sha256": np.array(["x", "y"])}, "64 hex"),
    }
    for label, (arrays, message) in cases.items():
        np.savez(tmp_path / f"{label}.npz", **arrays)
        with pytest.raises(EmbeddingsFileError, match=message):
            fr.enroll_bulk(tmp_path / f"{label}.npz")
    np.savez(tmp_path / "name.npz", **{**good, "model_id": np.array(CARD.id), "names": np.array(["a", "x/y"])})
    with pytest.raises(EmbeddingsFileError, match="row 1: name 'x/y' looks like a path"):
        fr.enroll_bulk(tmp_path / "name.npz")
    assert fr.people() == []  # nothing written by any refused file
    # not unit norm: normalised, with a note; names are NFC-normalised by validate_name
    scaled = unit(rng, 2) * 3.0
    np.savez(tmp_path / "scaled.npz", names=np.array(["Zoe\u0301", "b"]), embeddings=scaled, model_id=np.array(CARD.id))
    result = fr.enroll_bulk(tmp_path / "scaled.npz")
    assert result.notes == ["2 of 2 embeddings were not unit norm: normalised"]
    assert {p.name for p in fr.people()} == {"b", "Zo\u00e9"}
    rows = fr.store.templates(CARD.id)
    np.testing.assert_allclose(np.linalg.norm(rows.embeddings, axis=1), 1.0, atol=1e-6)


def test_parquet_embeddings_with_source_ids(sqlite_url, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    vectors = unit(np.random.default_rng(5), 40)
    table = pa.table({"name": [f"p{i // 2}" for i in range(40)], "embedding": [v.tolist() for v in vectors],
                      "source": [f"photos/{i}.jpg" for i in range(40)]})
    table = table.replace_schema_metadata({"facerec.model_id": CARD.id, "facerec.dim": str(CARD.embedding_dim)})
    pq.write_table(table, tmp_path / "g.parquet")
    fr = FaceRec(db=sqlite_url, index=str(tmp_path / "g.index"))
    assert fr.enroll_bulk(tmp_path / "g.parquet", chunk=16).added == 40
    assert sorted(fr.store.known_sources("p3", CARD.id)) == sorted(
        __import__("hashlib").sha256(f"photos/{i}.jpg".encode()).hexdigest() for i in (6, 7))
    got = fr.gallery.search(vectors[:5], 1)
    assert [m[0].name for m in got] == ["p0", "p0", "p1", "p1", "p2"]
    assert all(abs(m[0].score - 1.0) < 1e-5 for m in got)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def test_sigkill_during_bulk_enrollment_leaves_whole_chunks(backend, request, tmp_path):
    url = f"sqlite:///{tmp_path / 'g.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    upgrade_database(Settings.resolve(db=url))  # a server database is migrated explicitly
    chunk, n = 200, 6_000
    write_npz(tmp_path / "g.npz", n, per_person=2)
    args = [sys.executable, str(REPO / "cli.py"), "--db", url, "--index", str(tmp_path / "g.index"), "enroll",
            "--embeddings", str(tmp_path / "g.npz"), "--chunk", str(chunk)]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    count = 0
    while time.monotonic() < deadline and proc.poll() is None:
        count = query(url, "SELECT count(*) FROM templates") if _has_schema(url) else 0
        if count >= 2 * chunk:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the enrollment finished before it could be killed"
    stored = query(url, "SELECT count(*) FROM templates")
    assert 0 < stored < n and stored % chunk == 0  # whole chunks only
    assert query(url, "SELECT count(*) FROM template_changes WHERE added") == stored
    assert query(url, "SELECT count(*) FROM audit_log WHERE action = 'enroll'") == stored // chunk
    # the next run resumes: only what is missing is added, and the index (left mid-run) is repaired
    proc = run_cli("--db", url, "--index", str(tmp_path / "g.index"), "enroll", "--embeddings",
                   str(tmp_path / "g.npz"), "--chunk", str(chunk), "--json")
    assert proc.returncode == 0, proc.stderr
    assert (json.loads(proc.stdout)["added"], json.loads(proc.stdout)["skipped"]) == (n - stored, stored)
    assert f"{n}/{n}" in proc.stderr and "/s" in proc.stderr  # the progress bar (count, rate) on stderr
    assert query(url, "SELECT count(*) FROM templates") == n
    fr = FaceRec(db=url, index=str(tmp_path / "g.index"))
    assert fr.gallery.size == n and FaceRec(db=url).verify_audit()["intact"]


def _has_schema(url: str) -> bool:
    try:
        query(url, "SELECT count(*) FROM templates")
        return True
    except Exception:
        return False


def _manifest(path: Path) -> dict:
    return json.loads(path.read_bytes().rstrip(b"\n").rpartition(b"\n")[0])


@pytest.fixture
def small_thresholds(monkeypatch):
    """Compaction thresholds a small gallery reaches (data/index.json's are for large ones)."""
    from facerec.index import policy

    params = json.loads(policy.PARAMS_FILE.read_text())
    params["compact"] = {"tail_rows_min": 100, "tail_fraction": 0.0, "deleted_fraction": 0.05}
    params["kinds"]["ivf"]["nprobe"] = 100_000  # every list: exact, to compare with brute force
    monkeypatch.setattr(policy, "index_params", lambda: params)
    monkeypatch.setattr("facerec.index.faiss_index.index_params", lambda: params)
    return params


@pytest.mark.parametrize("kind", ["hnsw", pytest.param("ivf", marks=pytest.mark.slow)])
def test_searches_stay_exact_while_the_index_is_rebuilt_beside_them(kind, sqlite_url, tmp_path, small_thresholds,
                                                                      monkeypatch):
    write_npz(tmp_path / "g.npz", 3000, per_person=3)
    fr = FaceRec(db=sqlite_url, index=str(tmp_path / "g.index"), index_kind=kind)
    fr.enroll_bulk(tmp_path / "g.npz", chunk=1000)  # ends with one rebuild: no tail left
    gallery = fr.gallery
    assert gallery._index.describe()["tail"] == 0
    tag_before = _manifest(tmp_path / "g.index")["tag"]
    # hold the worker between its snapshot and its build, to change the gallery meanwhile
    snapped, release = threading.Event(), threading.Event()
    real_build = SearchIndex.build_from

    def held_build(self, snap):
        snapped.set()
        assert release.wait(60)
        return real_build(self, snap)

    monkeypatch.setattr(SearchIndex, "build_from", held_build)
    rng = np.random.default_rng(9)
    extra = unit(rng, 150)
    from facerec.store import NewTemplate

    for i in range(0, 150, 3):  # past the tail threshold: the worker starts
        gallery.add(f"late {i:03d}", [NewTemplate(v, CARD.id, CARD.version, f"{i:03d}{k}".ljust(64, "0"), "x", 1.0, {})
                                      for k, v in enumerate(extra[i:i + 3])])
    assert snapped.wait(30) and gallery._worker is not None
    other = Gallery(fr.store, CARD.id, CARD.embedding_dim, tmp_path / "other.index", kind)  # another process
    other.remove("person 00001")
    other.add("during", [NewTemplate(extra[0] * -1, CARD.id, CARD.version, "d".ljust(64, "0"), "d", 1.0, {})])
    gallery.remove("late 003")
    base_rows = fr.store.templates(CARD.id).embeddings[::150]
    probes = np.concatenate([extra[:12], -extra[:1], base_rows]) + 0.03 * unit(rng, 13 + len(base_rows))
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)

    def check() -> None:
        rows = fr.store.templates(CARD.id)
        at = {int(t): k for k, t in enumerate(rows.ids)}
        for probe, (name, score), matches in zip(probes, exact_best(rows, probes), gallery.search(probes, 3)):
            assert not {"person 00001", "late 003"} & {m.name for m in matches}  # removed: never returned
            assert (matches[0].name, matches[0].score) == (name, pytest.approx(score, abs=1e-5))
            for m in matches:  # every returned score is the exact cosine of that template
                assert m.score == pytest.approx(float(rows.embeddings[at[m.template_id]] @ probe), abs=1e-5)

    check()  # during the rebuild: the old structure plus its exact tail, removals filtered
    stop = threading.Event()

    batch = unit(rng, 4000)

    def tight_loop() -> None:  # a busy searcher (long searches, no pause) must not starve the worker's swap
        while not stop.is_set():
            gallery.search(batch, 1)

    busy = threading.Thread(target=tight_loop)
    busy.start()
    worker = gallery._worker
    release.set()
    worker.join(60)
    stop.set()
    busy.join()
    assert not worker.is_alive(), "the rebuild never got the lock back from a busy searcher"
    gallery.finish_maintenance()
    d = gallery._index.describe()
    assert gallery._worker is None and d["tail"] < 100  # the base now holds what the snapshot saw
    assert _manifest(tmp_path / "g.index")["tag"] != tag_before
    check()  # after the swap: the changes made meanwhile were carried over
    gallery.add("after", [NewTemplate(extra[1] * -1, CARD.id, CARD.version, "e".ljust(64, "0"), "e", 1.0, {})])
    assert gallery.search(-extra[1:2], 1)[0][0].name == "after"
    # the committed files are current: a new process loads them without a rebuild and answers the same
    fresh = FaceRec(db=sqlite_url, index=str(tmp_path / "g.index"), index_kind=kind)
    index, meta = SearchIndex.load(tmp_path / "g.index")
    assert meta.generation == fr.store.state().generation and index.ntotal == len(fr.store.templates(CARD.id).ids)
    assert [m[0].name for m in fresh.gallery.search(probes, 1)] == [m[0].name for m in gallery.search(probes, 1)]


KILLER = r"""
import json, sys, time
import numpy as np
from facerec.index import policy
policy.index_params()["compact"].update(tail_rows_min=100, tail_fraction=0.0)
from facerec.api import FaceRec, Settings, upgrade_database
from facerec.store import NewTemplate
fr = FaceRec(db=sys.argv[1], index=sys.argv[2], index_kind="hnsw")
g = fr.gallery
g.sync()
rng = np.random.default_rng(4)
v = rng.normal(size=(150, fr.card.embedding_dim)).astype(np.float32)
v /= np.linalg.norm(v, axis=1, keepdims=True)
g.add("late", [NewTemplate(x, fr.card.id, fr.card.version, f"{k:064d}", "x", 1.0, {}) for k, x in enumerate(v)])
print("rebuilding", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("when", [pytest.param("building", marks=pytest.mark.slow), "writing"])
def test_sigkill_mid_rebuild_leaves_a_loadable_index(when, sqlite_url, tmp_path):
    write_npz(tmp_path / "g.npz", 6000, per_person=2)
    index_path = tmp_path / "g.index"
    FaceRec(db=sqlite_url, index=str(index_path), index_kind="hnsw").enroll_bulk(tmp_path / "g.npz", chunk=3000)
    before = _manifest(index_path)["tag"]
    proc = subprocess.Popen([sys.executable, "-c", KILLER, sqlite_url, str(index_path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "rebuilding"
    deadline = time.monotonic() + 60
    while when == "writing" and time.monotonic() < deadline:  # kill as the new base's files appear
        if any(before not in p.name for p in tmp_path.glob("g.index.*.*") if not p.name.endswith(".lock")):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    index, meta = SearchIndex.load(index_path)  # the manifest and the parts it names are whole
    index.verify(index_path)
    fr = FaceRec(db=sqlite_url, index=str(index_path), index_kind="hnsw")
    rows = fr.store.templates(CARD.id)
    assert fr.gallery.size == len(rows.ids) == 6150
    probes = rows.embeddings[::400]
    assert [m[0].name for m in fr.gallery.search(probes, 1)] == [rows.person_names[i] for i in range(0, 6150, 400)]
    assert os.path.exists(index_path)


def test_bulk_enrollment_from_folders_commits_many_people_per_transaction(sqlite_url, tmp_path, lfw):
    root = tmp_path / "people"
    for person in ("Colin_Powell", "Tony_Blair", "Hugo_Chavez"):
        (root / person).mkdir(parents=True)
        for k in (1, 2):
            (root / person / f"{k}.jpg").symlink_to(lfw / person / f"{person}_{k:04d}.jpg")
    (root / "Tony_Blair" / "broken.jpg").write_bytes(b"not a photo")
    fr = FaceRec(db=sqlite_url, index=str(tmp_path / "g.index"))
    result = fr.enroll_bulk(root, chunk=3)
    assert (result.added, result.people, result.chunks) == (6, 3, 2) and len(result.errors) == 1
    assert "broken.jpg" in result.errors[0]
    assert query(sqlite_url, "SELECT count(*) FROM audit_log WHERE action = 'enroll'") == 2
    probe = fr.identify(lfw / "Colin_Powell" / "Colin_Powell_0003.jpg")
    assert probe.faces[0].name == "Colin_Powell"
    again = fr.enroll_bulk(root, chunk=3)
    assert (again.added, again.skipped, again.chunks) == (0, 6, 0)
