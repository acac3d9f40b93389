"""The batch tables on both backends (SQLite and a real PostgreSQL): chunks written whole, a changed photo
replaces its faces, labels and constraints stay with face ids, clusters set in one transaction."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_reembedding_tables_on_both_backends(db_url):
    """Staged embeddings of a new model: what is left to do, failures, and a switch that is all or nothing."""
    from facerec.errors import FacerecError

    store = Store.open(db_url, auto_migrate=True)
    batch = BatchStore(store)
    job = batch.open_job("album", "mobilefacenet", ["/photos"])
    batch.write_chunk(job, "mobilefacenet", [ScannedFile(f"/photos/{i}.jpg", 10, 20, f"{i:064d}", 64, 64,
                                                         faces=[face(i), face(10 + i)]) for i in range(3)])
    ids = batch.faces(job).ids.tolist()
    batch.name_faces(job, ids[:1], "Ada")
    new = {i: np.random.default_rng(i).normal(size=128).astype(np.float32) for i in ids}
    assert [len(p.faces) for p in batch.photos_to_reembed(job, "sface")] == [2, 2, 2]
    batch.stage_embeddings(job, "sface", [(ids[0], new[ids[0]], None), (ids[1], None, "not found again")])
    todo = batch.photos_to_reembed(job, "sface")
    assert [p.path for p in todo] == ["/photos/1.jpg", "/photos/2.jpg"]  # photo 0 is done (one face failed)
    status = batch.reembed_status(job, "sface")
    assert (status.faces, status.staged, status.missing, status.complete) == (6, 1, [(ids[1], "not found again")], False)
    with pytest.raises(FacerecError, match="stays on mobilefacenet"):
        batch.switch_model(job, "sface")
    assert batch.job_model(job) == "mobilefacenet" and batch.faces(job).embeddings.shape[1] == 192
    batch.forget_failed(job, "sface")
    batch.stage_embeddings(job, "sface", [(i, new[i], None) for i in ids[1:]])
    assert batch.reembed_status(job, "sface").complete and batch.switch_model(job, "sface") == 6
    after = batch.faces(job)
    assert batch.job_model(job) == "sface" and after.ids.tolist() == ids and after.person[0] == "Ada"
    assert np.allclose(after.embeddings, np.stack([new[i] for i in ids]))
    assert batch.reembed_status(job, "sface").staged == 0  # staging emptied by the switch
    store.close()
