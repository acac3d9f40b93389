"""`facerec batch reembed JOB --model NEW`: every face re-embedded from its photo and box, resumable after a
SIGKILL of a real process, the same embeddings as a scan with the new model, face ids and every user
decision kept, the old embeddings in force until the one-transaction switch. Real LFW photos, real models."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facerec.api import Settings
from facerec.batch.pipeline import ScanOptions
from facerec.batch.service import BatchService
from tests.conftest import REPO, need
from tests.test_batch import make_folder

NEW = "sface_2021dec"
OPTIONS = ScanOptions(workers=0, chunk=8)
PEOPLE = {"Aaron_Peirsol": 2, "Adam_Sandler": 3, "Amelie_Mauresmo": 2, "Abdullah_Gul": 2}


def count(db: Path, sql: str) -> int:
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return conn.execute(sql).fetchone()[0]
    except sqlite3.Error:
        return 0


def decisions(service: BatchService, job: str) -> dict:
    """Everything the user decided or the clustering answered, by face id."""
    job_id = service.store.job_id(job)
    f = service.store.faces(job_id)
    c = service.store.constraints(job_id)
    return {"ids": f.ids.tolist(), "person": list(f.person), "cluster": f.cluster.tolist(), "match": list(f.match),
            "must": c.must, "cannot": c.cannot, "rejected": c.rejected}


def by_photo(faces) -> dict[tuple[str, int], np.ndarray]:
    return {(p, int(i)): e for p, i, e in zip(faces.paths, faces.face_index, faces.embeddings)}


def test_reembed_resumes_after_sigkill_and_keeps_every_decision(lfw, tmp_path):
    photos = make_folder(lfw, tmp_path, PEOPLE)
    db = tmp_path / "album.db"
    service = BatchService(Settings.resolve(db=str(db)))
    service.scan([str(photos)], "album", OPTIONS)
    service.cluster("album", threshold=0.45)
    views = service.clusters("album")
    service.name("album", views[0].id, "Someone", enroll=False)  # a name (must-link by name)
    big = next(v for v in service.clusters("album") if v.size >= 3 and v.name is None)
    service.split("album", big.id, big.faces[:1])  # cannot-links and a must-link
    service.reject("album", [views[0].faces[-1]])  # "not this person"
    before = decisions(service, "album")
    old = service.store.faces(service.store.job_id("album"))
    assert before["cannot"] and before["rejected"] and "Someone" in before["person"]

    cmd = [sys.executable, str(REPO / "cli.py"), "--db", str(db), "batch", "reembed", "album", "--model", NEW,
           "--chunk", "1", "--json"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and \
            count(db, "SELECT count(*) FROM batch_face_embeddings") < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    staged = count(db, "SELECT count(*) FROM batch_face_embeddings")
    need(staged >= 2, "the re-embedding did not get under way before the deadline")
    assert staged < len(old), "killed too late to test resuming"
    # killed mid-way: the job is still on its old model, its embeddings and decisions untouched and usable
    assert service.store.job_model(service.store.job_id("album")) == "mobilefacenet"
    assert np.array_equal(service.store.faces(service.store.job_id("album")).embeddings, old.embeddings)
    assert decisions(service, "album") == before

    out = service.reembed("album", NEW).to_dict()  # the same command resumed (in this process: no 2nd start-up)
    assert out["switched"] and out["faces"] == len(old) and out["staged"] == len(old)
    assert out["embedded_now"] == len(old) - staged  # nothing done twice
    job_id = service.store.job_id("album")
    assert service.store.job_model(job_id) == NEW
    assert count(db, f"SELECT count(*) FROM batch_faces WHERE model_id != '{NEW}'") == 0
    assert count(db, "SELECT count(*) FROM batch_face_embeddings") == 0
    assert decisions(service, "album") == before  # face ids, names, clusters, links, rejections


    # re-clustering in the new model keeps every user decision
    service.cluster("album")
    after = decisions(service, "album")
    assert after["person"] == before["person"] and after["rejected"] == before["rejected"]
    named = [c for c, p in zip(after["cluster"], after["person"]) if p == "Someone"]
    assert len(set(named)) == 1
    # the gallery is still the database's model: enrolling from the new embeddings is refused, naming is not
    with pytest.raises(Exception, match="--no-enroll"):
        service.name("album", named[0], "Someone")
    assert service.name("album", named[0], "Someone", enroll=False)["faces"] >= len(named)


def test_reembedding_equals_a_scan_with_the_new_model_and_a_changed_photo_blocks_the_switch(lfw, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in sorted((lfw / "Adam_Sandler").glob("*.jpg"))[:3]:
        shutil.copy(path, photos / path.name)
    service = BatchService(Settings.resolve(db=str(tmp_path / "f.db")))
    service.scan([str(photos)], "album", OPTIONS)
    job_id = service.store.job_id("album")
    old = service.store.faces(job_id)
    changed = sorted(photos.glob("*.jpg"))[0]
    Image.open(changed).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(changed)  # content changed after the scan

    result = service.reembed("album", NEW)
    assert not result.switched and result.failed == 1 and "changed since the scan" in result.failures[0][1]
    assert service.store.job_model(job_id) == "mobilefacenet"
    assert np.array_equal(service.store.faces(job_id).embeddings, old.embeddings)  # old results still in force

    service.scan([str(photos)], "album", OPTIONS)  # the old model re-scans the changed photo (a new face row)
    again = service.reembed("album", NEW, retry_failed=True)
    assert again.switched and again.failed == 0 and again.embedded_now == 1  # only the re-scanned face

    # the reference: the same photos scanned with the new model give the same embeddings
    ref_service = BatchService(Settings.resolve(db=str(tmp_path / "ref.db"), model=NEW))
    ref_service.scan([str(photos)], "ref", OPTIONS)
    ref = by_photo(ref_service.store.faces(ref_service.store.job_id("ref")))
    got = by_photo(service.store.faces(job_id))
    assert set(got) == set(ref)
    cosines = [float(got[k] @ ref[k] / np.linalg.norm(got[k]) / np.linalg.norm(ref[k])) for k in got]
    assert min(cosines) > 0.99999  # detection batches differ (one photo vs the scan's chunk): float rounding only
    with pytest.raises(Exception, match="already embedded"):
        service.reembed("album", NEW)
