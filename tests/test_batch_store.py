"""The batch tables on both backends (SQLite and a real PostgreSQL): chunks written whole, a changed photo
replaces its faces, labels and constraints stay with face ids, clusters set in one transaction."""

from __future__ import annotations

import numpy as np

from facerec.store import Store
from facerec.store.batch import CANNOT, MUST, NOT, BatchStore, ScannedFace, ScannedFile


def face(seed: int, match: str | None = None) -> ScannedFace:
    e = np.random.default_rng(seed).normal(size=192).astype(np.float32)
    return ScannedFace(box=[1.0, 2.0, 30.0, 40.0], detection_score=0.99, quality={"passed": True},
                       quality_passed=True, embedding=e / np.linalg.norm(e), match=match, score=0.1, margin=0.05,
                       candidates=[{"name": "x", "score": 0.1}])


def test_batch_tables_on_both_backends(db_url):
    store = Store.open(db_url, auto_migrate=True)
    batch = BatchStore(store)
    job = batch.open_job("album", "mobilefacenet", ["/photos"])
    assert batch.open_job("album", "mobilefacenet") == job
    files = [ScannedFile(f"/photos/{i}.jpg", 1000 + i, 10**18 + i, f"{i:064d}", 640, 480, faces=[face(i), face(100 + i)])
             for i in range(3)] + [ScannedFile("/photos/bad.jpg", 5, 1, "f" * 64, error="corrupt")]
    assert batch.write_chunk(job, "mobilefacenet", files) == 6
    known = batch.known_files(job)
    assert sorted(known) == ["/photos/0.jpg", "/photos/1.jpg", "/photos/2.jpg", "/photos/bad.jpg"]
    assert known["/photos/2.jpg"].mtime_ns == 10**18 + 2  # 64-bit mtimes survive
    rows = batch.faces(job)
    assert len(rows) == 6 and np.allclose(rows.embeddings[0], face(0).embedding)
    ids = rows.ids.tolist()
    batch.name_faces(job, ids[:2], "Ada")
    batch.add_constraints(job, MUST, [(ids[0], ids[2])])
    batch.add_constraints(job, CANNOT, [(ids[0], ids[4])])
    batch.add_constraints(job, NOT, [(ids[5], None)], name="Ada")
    batch.set_clusters(job, {ids[0]: ids[0], ids[2]: ids[0], ids[4]: ids[4]})
    rows = batch.faces(job)
    assert rows.cluster.tolist() == [ids[0], -1, ids[0], -1, ids[4], -1]
    assert rows.person[:2] == ["Ada", "Ada"]
    c = batch.constraints(job)
    assert c.must == [(ids[0], ids[2])] and c.cannot == [(ids[0], ids[4])] and c.rejected == [(ids[5], "Ada")]
    # the content of 1.jpg changed: its faces (and their labels) go, the others keep their ids
    batch.write_chunk(job, "mobilefacenet", [ScannedFile("/photos/1.jpg", 7, 8, "e" * 64, 640, 480, faces=[face(7)])])
    after = batch.faces(job)
    assert len(after) == 5 and set(ids[:2]) <= set(after.ids.tolist()) and not set(ids[2:4]) & set(after.ids.tolist())
    assert batch.file_errors(job) == [("/photos/bad.jpg", "corrupt")]
    assert [j["faces"] for j in batch.jobs()] == [5]
    store.close()
