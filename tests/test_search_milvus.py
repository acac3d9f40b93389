"""The Milvus backend (through milvus-lite) answers like exact FAISS and is rebuilt from (ids, vectors)."""

from __future__ import annotations

import numpy as np
import pytest

from facerec.index import IndexMeta, SearchIndex

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from facerec.index.milvus_index import MilvusIndex  # noqa: E402

DIM = 32


def test_milvus_matches_faiss_and_follows_add_remove(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(600, dtype=np.int64) * 7 + 1
    q = x[:20] + 0.3 * rng.normal(size=(20, DIM)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)

    milvus = MilvusIndex.build(ids[:500], x[:500], DIM, "flat", uri=str(tmp_path / "m.db"), collection="t")
    faiss = SearchIndex.build(ids[:500], x[:500], DIM, "flat")
    for index in (milvus, faiss):
        index.add(ids[500:], x[500:])
        assert index.remove(ids[:10])
    assert milvus.ntotal == faiss.ntotal == 590
    (ms, mi), (fs, fi) = milvus.search(q, 10), faiss.search(q, 10)
    np.testing.assert_array_equal(mi, fi)
    np.testing.assert_allclose(ms, fs, atol=1e-5)

    milvus.save(tmp_path / "g.milvus", IndexMeta("m", DIM, "flat", 3, milvus.ntotal, "flat"))
    milvus.close()
    again, meta = MilvusIndex.load(tmp_path / "g.milvus")
    assert meta.generation == 3 and again.ntotal == 590
    np.testing.assert_array_equal(again.search(q, 10)[1], fi)
    again.close()
