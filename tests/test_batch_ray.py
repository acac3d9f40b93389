"""`--engine ray` (Ray Data in local mode) gives the local engine's results on the same photos.

Slow (Ray starts a local cluster: over a minute on a loaded 2-core machine), so CI's default run skips it;
it needs the optional `[ray]` extra."""

from __future__ import annotations

import numpy as np
import pytest

from facerec.api import Settings
from facerec.batch.pipeline import ScanOptions
from facerec.batch.service import BatchService
from tests.test_batch import make_folder

pytestmark = pytest.mark.slow


def test_ray_local_mode_matches_local_engine(lfw, tmp_path):
    pytest.importorskip("ray", reason="the [ray] extra is not installed")
    photos = make_folder(lfw, tmp_path, {"Aaron_Peirsol": 4, "Adam_Sandler": 3})
    service = BatchService(Settings.resolve(db=str(tmp_path / "facerec.db")))
    options = ScanOptions(workers=1, chunk=4)
    local = service.scan([str(photos)], "local", options)
    ray = service.scan([str(photos)], "ray", options, engine="ray")
    assert (ray.scanned, ray.errors, ray.faces, ray.walk) == (local.scanned, local.errors, local.faces, local.walk)
    a, b = (service.store.faces(service.store.job_id(j)) for j in ("local", "ray"))
    assert a.paths == b.paths and a.face_index.tolist() == b.face_index.tolist()
    assert np.allclose(np.array(a.boxes), np.array(b.boxes), atol=0.11)
    # Ray's batches are not the local engine's chunks: float rounding differs with the batch
    assert (a.embeddings * b.embeddings).sum(1).min() > 0.99999
    assert a.match == b.match and np.allclose(a.score, b.score, atol=1e-5)
    assert service.scan([str(photos)], "ray", options, engine="ray").scanned == 0  # same skip rule
