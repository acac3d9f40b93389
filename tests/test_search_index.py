"""1:K search (issue 21): every kind, shards and persistence checked against exact numpy search."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facerec.errors import SearchIndexError
from facerec.index import IndexMeta, SearchIndex, ShardedIndex, merge_topk
from facerec.index import storage
from facerec.index.policy import make_plan, needs_retrain

DIM = 24


def unit(rng, n):
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def exact(ids, vectors, queries, k):
    s = queries @ vectors.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), ids[order]


def meta(index, generation=1):
    return IndexMeta("m", DIM, index.requested, generation, index.ntotal, index.kind)


@pytest.fixture
def gallery():
    rng = np.random.default_rng(7)
    return rng, np.arange(3000, dtype=np.int64) * 5 + 11, unit(rng, 3000), unit(rng, 40)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivfsq8"])
def test_returned_scores_are_exact_cosines(gallery, kind):
    """Whatever the kind found, the scores it returns are the exact cosines of those templates."""
    _, ids, x, q = gallery
    index = SearchIndex.build(ids, x, DIM, kind)
    assert index.kind == kind
    scores, found = index.search(q, 10)
    by_id = dict(zip(ids.tolist(), x))
    want = np.array([[by_id[i] @ qq for i in row] for row, qq in zip(found, q)])
    np.testing.assert_allclose(scores, want, atol=2e-6)
    assert (np.diff(scores, axis=1) <= 1e-7).all()
    _, truth = exact(ids, x, q, 10)
    assert (found[:, 0] == truth[:, 0]).mean() >= (1.0 if kind == "flat" else 0.5)


def test_shard_merge_equals_one_exact_index(gallery):
    _, ids, x, q = gallery
    one = SearchIndex.build(ids, x, DIM, "flat")
    for n in (1, 2, 3, 5):
        sharded = ShardedIndex.split(ids, x, n, lambda s, i, v: SearchIndex.build(i, v, DIM, "flat"))
        assert sharded.ntotal == len(ids)
        for got, want in zip(sharded.search(q, 15), one.search(q, 15)):
            np.testing.assert_array_equal(got, want)


def test_torch_shards_merge_to_one_exact_index(gallery):
    """The GPU layout (one torch / torchivf index a device, merged by score) on CPU devices: the same
    top-k as one exact index, including after a removal in one shard and an add routed to another."""
    pytest.importorskip("torch")
    _, ids, x, q = gallery

    def make(kind):
        def shard(s, i, v):
            index = SearchIndex.build(i, v, DIM, kind, device="cpu")
            if kind == "torchivf":
                index._searcher.nprobe = index.plan.nlist  # every list: exact
            return index
        return shard

    for kind in ("torch", "torchivf"):
        one = SearchIndex.build(ids, x, DIM, "flat")
        sharded = ShardedIndex.split(ids, x, 2, make(kind))
        for index in (sharded, one):
            index.remove(ids[:3])
            index.add(np.array([10**9 + 1]), q[:1])
        got, want = sharded.search(q, 10), one.search(q, 10)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_allclose(got[0], want[0], atol=2e-6)


def test_add_remove_keep_shards_consistent(gallery):
    rng, ids, x, q = gallery
    sharded = ShardedIndex.split(ids[:2000], x[:2000], 3, lambda s, i, v: SearchIndex.build(i, v, DIM, "flat"))
    live = dict(zip(ids[:2000].tolist(), x[:2000]))
    for step in range(5):
        new = ids[2000 + 200 * step:2200 + 200 * step]
        sharded.add(new, x[2000 + 200 * step:2200 + 200 * step])
        live.update(zip(new.tolist(), x[2000 + 200 * step:2200 + 200 * step]))
        gone = rng.choice(sorted(live), 150, replace=False)
        assert sharded.remove(gone)
        for g in gone.tolist():
            del live[g]
    assert sharded.ntotal == len(live) == sum(s.ntotal for s in sharded.shards)
    for shard_no, shard in enumerate(sharded.shards):  # every id sits in its own shard only
        _, held = shard.search(np.stack(list(live.values())), 1)
        assert (held[held >= 0] % 3 == shard_no).all()
    lid = np.array(sorted(live))
    want = exact(lid, np.stack([live[i] for i in lid]), q, 10)
    got = sharded.search(q, 10)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], atol=2e-6)


def test_merge_pads_and_breaks_ties_by_id():
    s, i = merge_topk([np.array([[0.5, 0.2]], np.float32), np.array([[0.5, -np.inf]], np.float32)],
                      [np.array([[9, 4]]), np.array([[3, -1]])], 5)
    assert i.tolist() == [[3, 9, 4, -1, -1]] and s[0, 3] == -np.inf


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_removed_templates_never_come_back(gallery, kind):
    _, ids, x, q = gallery
    index = SearchIndex.build(ids, x, DIM, kind)
    _, top = index.search(x[:50], 1)
    assert (top[:, 0] == ids[:50]).all()  # each vector finds itself
    assert index.remove(ids[:50])
    assert index.ntotal == len(ids) - 50
    _, after = index.search(x[:50], 10)
    assert not np.isin(after, ids[:50]).any()
    index.add(ids[:5], x[:5])  # enrolled again
    assert (index.search(x[:5], 1)[1][:, 0] == ids[:5]).all()


def test_save_after_one_enrollment_appends_and_load_replays(tmp_path, gallery):
    _, ids, x, q = gallery
    path = tmp_path / "g.faiss"
    index = SearchIndex.build(ids[:2500], x[:2500], DIM, "ivf")
    index.save(path, meta(index))
    tag = storage.Manifest.read(path).tag
    base_files = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob(f"g.faiss.{tag}.*") if not p.name.endswith("log")}
    index.add(ids[2500:2501], x[2500:2501])
    index.remove(ids[:3])
    index.save(path, meta(index, 2))
    after = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob(f"g.faiss.{tag}.*") if not p.name.endswith("log")}
    assert after == base_files  # the bulky files were not rewritten
    manifest = storage.Manifest.read(path)
    assert manifest.tag == tag and manifest.log_bytes > 0 and manifest.meta["generation"] == 2
    loaded, m = SearchIndex.load(path)
    assert m.generation == 2 and loaded.ntotal == index.ntotal == 2498
    for got, want in zip(loaded.search(q, 10), index.search(q, 10)):
        np.testing.assert_array_equal(got, want)
    # a torn append (bytes past what the manifest vouches for) is ignored
    with storage.part(path, tag, "log").open("ab") as fh:
        fh.write(b"garbage")
    assert SearchIndex.load(path)[0].ntotal == 2498


def test_damage_is_detected(tmp_path, gallery, monkeypatch):
    _, ids, x, _ = gallery
    monkeypatch.setattr(storage, "EDGE", 4096)  # this small file stands for a large one: edges != whole file
    path = tmp_path / "g.faiss"
    index = SearchIndex.build(ids, x, DIM, "flat")
    index.add(ids[:0] + 99991, x[:1])
    index.save(path, meta(index))
    index.add(np.array([99992]), x[1:2])
    index.save(path, meta(index, 2))
    tag = storage.Manifest.read(path).tag
    vectors = storage.part(path, tag, "vectors.npy")
    blob = bytearray(vectors.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # a flipped byte in the middle: only the full check sees it
    vectors.write_bytes(bytes(blob))
    SearchIndex.load(path)
    with pytest.raises(SearchIndexError, match=r"corrupt index file \(chunk 0"):
        index.verify(path)
    vectors.write_bytes(bytes(blob[:-8]))  # truncated: seen at open
    with pytest.raises(SearchIndexError, match="changed or truncated"):
        SearchIndex.load(path)
    vectors.write_bytes(bytes(blob))
    log = storage.part(path, tag, "log")
    raw = bytearray(log.read_bytes())
    raw[-1] ^= 0xFF
    log.write_bytes(bytes(raw))
    with pytest.raises(SearchIndexError, match="corrupt index log"):
        SearchIndex.load(path)
    manifest = path.read_bytes()
    path.write_bytes(manifest.replace(b'"generation": 2', b'"generation": 3'))
    with pytest.raises(SearchIndexError, match="corrupt index manifest"):
        SearchIndex.load(path)
    path.write_text(json.dumps({"format": "facerec-index-1"}))
    with pytest.raises(SearchIndexError, match="rebuild"):
        SearchIndex.load(path)


def test_compaction_folds_tail_and_drops_deleted(tmp_path, gallery, monkeypatch):
    _, ids, x, q = gallery
    from facerec.index import policy

    params = json.loads(policy.PARAMS_FILE.read_text())
    params["compact"] = {"tail_rows_min": 100, "tail_fraction": 0.0, "deleted_fraction": 0.05}
    monkeypatch.setattr(policy, "index_params", lambda: params)
    monkeypatch.setattr("facerec.index.faiss_index.index_params", lambda: params)
    index = SearchIndex.build(ids[:2000], x[:2000], DIM, "ivf")
    trained = index.trained_rows
    for s in range(2000, 2400, 50):
        index.add(ids[s:s + 50], x[s:s + 50])
    d = index.describe()
    assert d["tail"] <= 100 and d["rows"] - d["tail"] >= 2300 and index.trained_rows == trained  # folded, not retrained
    index.remove(ids[:150])  # 150 / 2400 > 5 %: compacted
    assert index.describe()["deleted"] == 0 and index.ntotal == 2250
    live_ids, live_x = ids[150:2400], x[150:2400]
    want = exact(live_ids, live_x, q, 5)
    index.plan.search["nprobe"] = index.plan.nlist  # all lists: exact, to compare ids
    index._searcher._cache_key = None
    np.testing.assert_array_equal(index.search(q, 5)[1], want[1])


def test_plan_by_size_and_retrain_on_growth():
    assert make_plan("auto", 100, 192).kind == "flat"
    assert make_plan("auto", 200_000, 192).kind == "pcahnsw"
    big = make_plan("auto", 1_000_000, 192)
    assert big.kind == "pcahnsw" and big.search["efSearch"] == 384 and big.project > 0 and big.rerank > 1
    huge = make_plan("auto", 20_000_000, 192)
    assert huge.kind == "pcaivfsq8" and huge.rerank > 1 and huge.factory.startswith("IVF") and huge.store == "float16"
    assert make_plan("auto", 1_000_000, 192, gpus=2).kind == "torch"
    assert make_plan("auto", 1_000, 192, gpus=2).kind == "flat"
    shard = make_plan("auto", 50_000_000, 192, gpus=2)  # one GPU's shard of 1e8: probed lists
    assert shard.kind == "torchivf" and shard.search["nprobe"] == 2048
    assert make_plan("ivf", 50, 192).kind == "flat"  # too few to train
    plan = make_plan("ivf", 10_000, 192)
    assert not needs_retrain(plan, 10_000, 15_000, "ivf", 192)
    assert needs_retrain(plan, 10_000, 20_001, "ivf", 192)
    assert needs_retrain(make_plan("ivf", 50, 192), 50, 10_000, "ivf", 192)  # grows out of flat
    with pytest.raises(SearchIndexError, match="unknown index kind"):
        make_plan("annoy", 10, 192)


def test_small_ivf_gallery_becomes_ivf_as_it_grows(gallery):
    _, ids, x, _ = gallery
    index = SearchIndex.build(ids[:100], x[:100], DIM, "ivf")
    assert index.kind == "flat"
    index.add(ids[100:], x[100:])
    assert index.kind == "ivf" and index.trained_rows == len(ids)


def test_torch_kind_matches_flat(gallery):
    """fp16 shortlist + fp32 re-score returns exactly what exact fp32 search returns."""
    pytest.importorskip("torch")
    _, ids, x, q = gallery
    a = SearchIndex.build(ids, x, DIM, "torch").search(q, 10)
    b = SearchIndex.build(ids, x, DIM, "flat").search(q, 10)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], atol=2e-6)


def test_torch_ivf_probing_all_lists_is_exact_and_follows_changes(gallery):
    pytest.importorskip("torch")
    _, ids, x, q = gallery
    ivf = SearchIndex.build(ids, x, DIM, "torchivf")
    flat = SearchIndex.build(ids, x, DIM, "flat")
    assert ivf.plan.nlist > 1
    ivf._searcher.nprobe = ivf.plan.nlist  # every list probed: must equal exact search
    for index in (ivf, flat):
        index.remove(ids[:40])
        index.add(np.array([10**9]), q[:1])
    for batch in (q[:5], np.repeat(q, 3, axis=0)):  # the probing path and the exhaustive batch path
        got, want = ivf.search(batch, 10), flat.search(batch, 10)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_allclose(got[0], want[0], atol=2e-6)


def test_loaded_memory_mapped_index_compacts_and_saves_again(tmp_path, gallery, monkeypatch):
    _, ids, x, q = gallery
    from facerec.index import policy

    params = json.loads(policy.PARAMS_FILE.read_text())
    params["compact"] = {"tail_rows_min": 100, "tail_fraction": 0.0, "deleted_fraction": 0.5}
    monkeypatch.setattr("facerec.index.faiss_index.index_params", lambda: params)
    path = tmp_path / "g.faiss"
    built = SearchIndex.build(ids[:2000], x[:2000], DIM, "ivf")
    built.save(path, meta(built))
    loaded, _ = SearchIndex.load(path)  # structure and vectors memory-mapped, read-only
    loaded.add(ids[2000:2300], x[2000:2300])  # past the tail limit: folded into the structure
    loaded.remove(ids[:7])
    loaded.save(path, meta(loaded, 2))
    again, m = SearchIndex.load(path)
    assert m.generation == 2 and again.ntotal == 2293
    for index in (loaded, again):
        index.plan.search["nprobe"] = index.plan.nlist
        index._searcher._cache_key = None
        np.testing.assert_array_equal(index.search(q, 5)[1], exact(ids[7:2300], x[7:2300], q, 5)[1])


def test_replicas_answer_like_one_index_and_take_every_change(gallery):
    from facerec.index import ReplicatedIndex

    _, ids, x, q = gallery
    one = SearchIndex.build(ids, x, DIM, "flat")
    replicas = ReplicatedIndex([SearchIndex.build(ids, x, DIM, "flat") for _ in range(3)])
    for index in (one, replicas):
        index.remove(ids[:10])
        index.add(np.array([10**9]), q[:1])
    assert replicas.ntotal == one.ntotal == len(ids) - 9
    np.testing.assert_array_equal(replicas.search(q, 7)[1], one.search(q, 7)[1])  # a batch split over replicas
    np.testing.assert_array_equal(replicas.search(q[:1], 7)[1], one.search(q[:1], 7)[1])  # one query, one replica


def test_triton_kernels_equal_the_torch_stages():
    """The GPU kernels (run by Triton's interpreter on the CPU, in a child process because the switch is
    read at import) give the same top-k and exact scores as the torch stages, with deleted rows, on the
    scan path (one query, IVF lists) and the tensor-core path (a batch), for the flat and IVF kinds."""
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = """
import numpy as np
from facerec.index import gpu_kernels
from facerec.index.policy import make_plan
from facerec.index.torch_search import TorchIVFSearcher, TorchSearcher
rng = np.random.default_rng(3)
x = rng.normal(size=(800, 64)).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
q = x[rng.choice(800, 17)] + 0.05 * rng.normal(size=(17, 64)).astype(np.float32)
for cls, kind in ((TorchSearcher, "torch"), (TorchIVFSearcher, "torchivf")):
    plan = make_plan(kind, len(x), 64)
    ref, tri = cls.build(plan, 64, x), cls.build(plan, 64, x)
    tri.kernels, tri.backend = gpu_kernels, "triton"
    tri.batch_dense = tri.batch_exhaustive = 16
    dead = np.array([3, 99, 700])
    for b in (1, 17):
        got, want = tri.search(q[:b], 10, dead), ref.search(q[:b], 10, dead)
        assert np.array_equal(got[1], want[1]), (kind, b)
        assert np.abs(got[0] - want[0]).max() < 1e-6, (kind, b)
        assert not np.isin(got[1], dead).any()
print("ok")
"""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_torch_kind_on_a_gallery_smaller_than_one_group():
    """Fewer rows than a stage-1 group and than k: every row once, exact scores, then -1 / -inf."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x, q = unit(rng, 5), unit(rng, 3)
    ids = np.arange(5) * 7
    index = SearchIndex.build(ids, x, DIM, "torch")
    index.remove(ids[1:2])
    scores, found = index.search(q, 10)
    want_s, want_i = exact(np.delete(ids, 1), np.delete(x, 1, 0), q, 4)
    np.testing.assert_array_equal(found[:, :4], want_i)
    np.testing.assert_allclose(scores[:, :4], want_s, atol=2e-6)
    assert (found[:, 4:] == -1).all() and np.isneginf(scores[:, 4:]).all()


@pytest.fixture
def low_rank():
    """Templates that span 8 of 24 dimensions (plus faint noise), as MobileFaceNet's 192-d ones span 64."""
    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.normal(size=(DIM, 8)))[0]
    x = rng.normal(size=(3000, 8)) @ basis.T + 1e-4 * rng.normal(size=(3000, DIM))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return np.arange(3000, dtype=np.int64) * 3 + 1, x[:2960], x[2960:]


@pytest.mark.parametrize("kind, tol", [("pcahnsw", 2e-6), ("pcaivfsq8", 2e-3)])
def test_principal_subspace_kinds(tmp_path, low_rank, kind, tol):
    """pca* kinds search 8 dimensions instead of 24, return exact (float32) or float16-exact scores,
    never return removed templates, and come back from disk (memory-mapped, log replayed) unchanged."""
    ids, x, q = low_rank
    ids = ids[:len(x)]
    index = SearchIndex.build(ids, x, DIM, kind)
    assert index._searcher.structure.chain.at(0).d_out == 8  # the subspace the templates span
    assert index.plan.store == ("float16" if kind == "pcaivfsq8" else "float32")
    scores, found = index.search(q, 10)
    want = np.einsum("qkd,qd->qk", x[(found - 1) // 3], q)
    np.testing.assert_allclose(scores, want, atol=tol)
    if kind == "pcaivfsq8":
        stored = x.astype(np.float16).astype(np.float32)
        np.testing.assert_allclose(scores, np.einsum("qkd,qd->qk", stored[(found - 1) // 3], q), atol=2e-6)
    truth = exact(ids, x, q, 10)[1]
    assert (found[:, 0] == truth[:, 0]).mean() >= 0.9
    index.remove(ids[:60])
    index.add(np.array([10**9]), q[:1])
    _, top = index.search(x[:60], 10)
    assert not np.isin(top, ids[:60]).any()
    assert (index.search(q[:1], 1)[1][:, 0] == 10**9).all()
    path = tmp_path / "g.faiss"
    index.save(path, meta(index))
    index.remove(ids[60:61])
    index.save(path, meta(index, 2))
    loaded, m = SearchIndex.load(path)
    assert m.generation == 2 and loaded.ntotal == index.ntotal == len(ids) - 60
    assert loaded.plan == index.plan
    for got, exp in zip(loaded.search(q, 10), index.search(q, 10)):
        np.testing.assert_allclose(got, exp, atol=tol)
    assert not np.isin(loaded.search(x[:61], 10)[1], ids[:61]).any()
    loaded.remove(ids[61:800])  # past 20 % deleted: compacted (the trained projection and lists are reused)
    assert loaded.describe()["deleted"] == 0 and loaded.ntotal == len(ids) - 800 + 1
    assert loaded._searcher.structure.chain.at(0).d_out == 8
    assert not np.isin(loaded.search(x[:800], 10)[1], ids[:800]).any()
    assert (loaded.search(x[800:900], 1)[1][:, 0] == ids[800:900]).mean() >= 0.95
