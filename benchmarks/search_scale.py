"""1:K search at scale (issue 21): build time, memory, single-query p50/p99, batched q/s, recall@1/@10 vs exact.

Data: real 192-d MobileFaceNet embeddings of every LFW and CelebA face (`faces` step, once, niced; saved in
pack/, not committed) as queries and mated entries, padded to K with distractors drawn from a Gaussian
with the real embeddings' mean and covariance (x = mu + L z, L the Cholesky factor, z ~ N(0, I)), each then
L2-normalised like a real template. Queries: one image of each person with 2+ images (mated: the rest
of that person is in the gallery) and 1,000 images of people left out of the gallery (non-mated: the
score an impostor gets sets FPIR, so its exactness matters too). Recall is against exact fp32 search.

    # once: embed the faces (59 min niced on the shared, loaded 2-core box)
    PYTHONPATH=. nice python benchmarks/search_scale.py faces
    # CPU (this box): one size at a time, niced (PYTHONPATH=. so the checkout's facerec is used)
    PYTHONPATH=. nice python benchmarks/search_scale.py cpu --sizes 1e3 1e4 1e5 --json benchmarks/results/search_cpu_small.json
    # K = 1e7 on CPU: gallery streamed to a float16 file (exact top-10 merged chunk by chunk), index built from it
    PYTHONPATH=. nice python benchmarks/search_scale.py cpu --stream --sizes 1e7 --kinds pcaivfsq8 --nprobe 64 128 256
    # GPU (device run): torch int8 search / torch IVF, one GPU, sharded or replicated over all GPUs of the host
    PYTHONPATH=. python3 benchmarks/search_scale.py gpu --sizes 1e6 1e8 --layouts one shard replica shard-ivf \
        --ivf-min 5e7 --gpu-nprobe 1024 2048 4096 --json $OUT/search_gpu.json
    # tables for BENCHMARKS.md
    python benchmarks/search_scale.py report benchmarks/results/search_*.json
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import sys
import time
import traceback
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

SEED = 21


def make_faces(data: Path, out: Path, cache: Path) -> None:
    """Embed every LFW and CelebA face once with the default pipeline (MobileFaceNet, 192-d)."""
    from facerec.api import evaluation_pipeline
    from facerec.evaluation.pairs import embed_images

    pipeline = evaluation_pipeline("mobilefacenet")  # the model its committed results were measured with
    paths = sorted((data / "faces" / "lfw").glob("*/*.jpg")) + sorted((data / "faces" / "celeba_wild").glob("*/*.jpg"))
    t0 = time.time()
    done = [0]

    def progress(n: int) -> None:
        done[0] += n
        if done[0] % 500 < n:
            print(f"{done[0]}/{len(paths)} {time.time() - t0:.0f}s", flush=True)

    embedded = embed_images(pipeline, paths, progress, cache_dir=cache)
    keys = sorted(embedded.embeddings)
    vectors = np.stack([embedded.embeddings[k] for k in keys]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.array([f"{k.parent.parent.name}/{k.parent.name}" for k in keys])
    np.savez(out, vectors=vectors, labels=labels, paths=np.array([str(k) for k in keys]))
    print(f"{len(keys)} faces embedded ({len(embedded.failed)} failed) in {time.time() - t0:.0f}s -> {out}")


# --- data ----------------------------------------------------------------------------------------
def split_faces(faces: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(gallery_real, queries, mated mask, mean/cov source) from the embedded faces."""
    f = np.load(faces)
    x, labels = f["vectors"].astype(np.float32), f["labels"]
    rng = np.random.default_rng(SEED)
    _, first, counts = np.unique(labels, return_index=True, return_counts=True)
    multi = first[counts >= 2]  # one query image of each person with 2+ images; the rest stay enrolled
    singles = first[counts == 1]
    held_out = rng.choice(singles, min(1000, len(singles)), replace=False)  # non-mated queries: never enrolled
    is_query = np.zeros(len(x), bool)
    is_query[multi] = is_query[held_out] = True
    queries = np.concatenate([x[multi], x[held_out]])
    mated = np.concatenate([np.ones(len(multi), bool), np.zeros(len(held_out), bool)])
    return x[~is_query], queries, mated, x


def distractor_model(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = real.mean(0)
    cov = np.cov(real, rowvar=False) + 1e-6 * np.eye(real.shape[1])
    return mu.astype(np.float64), np.linalg.cholesky(cov)


def gallery_chunks(real: np.ndarray, k: int, mu: np.ndarray, chol: np.ndarray):
    """(start, block) of K vectors: the real faces (all, or the first K) then Gaussian distractors, unit length."""
    n_real = min(k, len(real))
    yield 0, real[:n_real]
    rng = np.random.default_rng(SEED + k)
    for s in range(n_real, k, 1 << 18):
        e = min(k, s + (1 << 18))
        z = rng.standard_normal((e - s, real.shape[1]))
        v = (mu + z @ chol.T).astype(np.float32)
        yield s, v / np.linalg.norm(v, axis=1, keepdims=True)


def gallery_numpy(real: np.ndarray, k: int, mu: np.ndarray, chol: np.ndarray) -> np.ndarray:
    out = np.empty((k, real.shape[1]), np.float32)
    for s, block in gallery_chunks(real, k, mu, chol):
        out[s:s + len(block)] = block
    return out


def gallery_file(real: np.ndarray, k: int, mu: np.ndarray, chol: np.ndarray, path: Path, dtype: str,
                 queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Write the gallery to a memory-mapped .npy in `dtype`, a chunk at a time, and return the exact float32
    top-10 of the queries over it (merged chunk by chunk): K = 1e7 never sits in memory."""
    import faiss

    from facerec.index.merge import merge_topk

    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(k, real.shape[1]))
    best = (np.full((len(queries), 10), -np.inf, np.float32), np.full((len(queries), 10), -1, np.int64))
    for s, block in gallery_chunks(real, k, mu, chol):
        out[s:s + len(block)] = block
        sc, ix = faiss.knn(queries, np.ascontiguousarray(block), min(10, len(block)), metric=faiss.METRIC_INNER_PRODUCT)
        best = merge_topk([best[0], sc], [best[1], ix + s], 10)
    out.flush()
    del out
    return best


def recall(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    r1 = float((found[:, 0] == truth[:, 0]).mean())
    r10 = float(np.mean([len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(found, truth)]))
    return r1, r10


def accuracy(found_s: np.ndarray, found: np.ndarray, truth_s: np.ndarray, truth: np.ndarray, mated: np.ndarray) -> dict:
    """Recall@1/@10 vs exact, per query group, and how far below the exact top score the returned one is
    for queries with no mate: that score decides a false positive identification, not which distractor."""
    r1, r10 = recall(found, truth)
    gap = truth_s[~mated, 0] - found_s[~mated, 0]
    return {"recall@1": r1, "recall@10": r10, "recall@1_mated": float((found[mated, 0] == truth[mated, 0]).mean()),
            "recall@1_nonmated": float((found[~mated, 0] == truth[~mated, 0]).mean()),
            "nonmated_top1_deficit_mean": float(gap.mean()), "nonmated_top1_deficit_p99": float(np.percentile(gap, 99)),
            "nonmated_top1_deficit_max": float(gap.max())}


def load() -> str:
    """The box's load average when a row was measured (it is shared with other jobs)."""
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def sweep_values(index, args) -> tuple[str | None, list]:
    """The search parameter this index's plan tunes and the values asked for it."""
    if "nprobe" in index.plan.search:
        return "nprobe", [v for v in args.nprobe if v <= index.plan.nlist]
    if "efSearch" in index.plan.search:
        return "efSearch", args.ef
    return None, [None]


def rss_mb() -> float:
    """Resident memory after handing freed heap back to the OS (so a freed index does not hide the next)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed_singles(search, queries: np.ndarray, n: int) -> dict:
    lat = []
    for q in queries[:n]:
        t = time.perf_counter()
        search(q[None], 10)
        lat.append(time.perf_counter() - t)
    lat = np.array(lat[min(10, len(lat) // 10):]) * 1e3  # first calls warm caches
    return {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)), "single_n": len(lat)}


def timed_batch(search, queries: np.ndarray, batch: int, budget_s: float = 3.0) -> float:
    """Queries/s answering `queries` in batches of `batch`, for about `budget_s` (at least one batch)."""
    search(queries[:batch], 10)
    t, done = time.perf_counter(), 0
    while True:
        for s in range(0, len(queries), batch):
            search(queries[s:s + batch], 10)
            done += len(queries[s:s + batch])
            if time.perf_counter() - t > budget_s:
                return done / (time.perf_counter() - t)


# --- CPU -----------------------------------------------------------------------------------------
def run_cpu(args, record) -> None:
    import faiss

    from facerec.index import SearchIndex

    real, queries, mated, allx = split_faces(args.faces)
    mu, chol = distractor_model(allx)
    for k in (int(float(s)) for s in args.sizes):
        x = gallery_numpy(real, k, mu, chol)
        ids = np.arange(k, dtype=np.int64)
        t = time.perf_counter()
        truth_s, truth = faiss.knn(queries, x, 10, metric=faiss.METRIC_INNER_PRODUCT)
        exact_s = time.perf_counter() - t
        print(f"K={k:,}: data ready, exact reference {exact_s:.1f}s", flush=True)
        for kind in args.kinds:
            if kind == "flat" and k > args.flat_max:
                continue
            before = rss_mb()
            t = time.perf_counter()
            index = SearchIndex.build(ids, x, x.shape[1], kind)
            build_s = time.perf_counter() - t
            mem = rss_mb() - before
            measure(index, kind, k, build_s, mem, queries, mated, truth_s, truth, args, record)
            if args.persist and index.kind == args.persist_kind:
                record(persistence(index, x, args.tmp / f"bench-{k}.faiss"))
            del index
            gc.collect()


def run_cpu_stream(args, record) -> None:
    """Galleries too big for memory in float32 (K = 1e7 is 7.7 GB): the gallery is written to a memory-mapped
    float16 file a chunk at a time (exact float32 top-10 merged on the way), the index is built from that
    file (coarse quantizer trained on a sample, codes added in chunks), saved, and searched as a serving
    process opens it: memory-mapped parts, re-ranked from the float16 vectors on disk."""
    from facerec.index import IndexMeta, SearchIndex

    real, queries, mated, allx = split_faces(args.faces)
    mu, chol = distractor_model(allx)
    for k in (int(float(s)) for s in args.sizes):
        source, cached = args.tmp / f"gallery-{k}.f16.npy", args.tmp / f"gallery-{k}.exact.npz"
        if cached.exists() and source.exists():  # same seed, same file: the exact top-10 of an earlier run
            truth_s, truth = np.load(cached)["scores"], np.load(cached)["ids"]
        else:
            t = time.perf_counter()
            truth_s, truth = gallery_file(real, k, mu, chol, source, "float16", queries)
            np.savez(cached, scores=truth_s, ids=truth)
            record({"K": k, "gallery_file": str(source), "generate_and_exact_s": time.perf_counter() - t, "load": load()})
        for kind in args.kinds:
            x = np.load(source, mmap_mode="r")
            before = rss_mb()
            t = time.perf_counter()
            index = SearchIndex.build(np.arange(k, dtype=np.int64), x, x.shape[1], kind)
            build_s = time.perf_counter() - t
            build_rss = rss_mb() - before
            path = args.tmp / f"bench-{k}-{kind}.faiss"
            t = time.perf_counter()
            index.save(path, IndexMeta("mobilefacenet", x.shape[1], kind, 1, index.ntotal, index.kind))
            save_s = time.perf_counter() - t
            del index, x
            gc.collect()
            before = rss_mb()
            t = time.perf_counter()
            index, _ = SearchIndex.load(path)
            open_s = time.perf_counter() - t
            files_mb = sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2 ** 20
            measure(index, kind, k, build_s, build_rss, queries, mated, truth_s, truth, args, record,
                    save_s=save_s, open_s=open_s, files_mb=files_mb, open_rss_mb=rss_mb() - before,
                    peak_rss_mb=peak_rss_mb())
            del index
            gc.collect()


def peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(index, kind: str, k: int, build_s: float, mem: float, queries: np.ndarray, mated: np.ndarray,
            truth_s: np.ndarray, truth: np.ndarray, args, record, **extra) -> None:
    """One row per value of the plan's search parameter: single-query latency on 1 thread (a serving
    process), batched q/s on `args.threads`, accuracy vs exact."""
    import faiss

    for param in args.rerank if args.rerank and index.plan.rerank > 1 else [index.plan.rerank]:  # exact kinds: 1
        index.plan = replace(index.plan, rerank=param)
        sweep, values = sweep_values(index, args)
        for v in values:
            if v is not None:
                index.plan.search[sweep] = v
                index._searcher._cache_key = None
            faiss.omp_set_num_threads(1)
            single = timed_singles(index.search, queries, args.singles if kind != "flat" or k <= 1e5 else 50)
            faiss.omp_set_num_threads(args.threads)
            qps = timed_batch(index.search, queries, 1000)
            found_s, found = index.search(queries, 10)
            structure = getattr(index._searcher, "structure", None)
            search_dim = structure.chain.at(0).d_out if isinstance(structure, faiss.IndexPreTransform) else None
            record({"K": k, "kind": index.kind, "factory": index.plan.factory, "param": sweep, "value": v,
                    "rerank": index.plan.rerank, "project": index.plan.project, "search_dim": search_dim,
                    "store": index.plan.store,
                    "build_s": build_s, "rss_mb": mem, **single, "batch_qps": qps,
                    **accuracy(found_s, found, truth_s, truth, mated), "load": load(), **extra})


def persistence(index, x: np.ndarray, path: Path) -> dict:
    """Full save, open, one enrollment + save, one removal + save: what the kiosk pays."""
    from facerec.index import IndexMeta, SearchIndex

    meta = IndexMeta("mobilefacenet", x.shape[1], index.requested, 1, index.ntotal, index.kind)
    t = time.perf_counter()
    index.save(path, meta)
    full = time.perf_counter() - t
    t = time.perf_counter()
    loaded, _ = SearchIndex.load(path)
    load = time.perf_counter() - t
    t = time.perf_counter()
    loaded.search(x[:1], 10)
    first = time.perf_counter() - t
    t = time.perf_counter()
    loaded.add(np.array([10 ** 12]), x[:1])
    loaded.save(path, meta)
    add_save = time.perf_counter() - t
    t = time.perf_counter()
    loaded.remove(np.array([5]))
    loaded.save(path, meta)
    remove_save = time.perf_counter() - t
    t = time.perf_counter()
    loaded.verify(path)
    verify = time.perf_counter() - t
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    for p in path.parent.glob(path.name + "*"):
        p.unlink()
    return {"K": index.ntotal, "kind": index.kind, "persistence": True, "full_save_s": full, "open_s": load,
            "first_search_s": first, "add_one_and_save_s": add_save, "remove_one_and_save_s": remove_save,
            "full_verify_s": verify, "files_mb": size / 2 ** 20}


# --- GPU -----------------------------------------------------------------------------------------
def run_gpu(args, record) -> None:
    import torch

    from facerec.index.merge import ReplicatedIndex, ShardedIndex, merge_topk
    from facerec.index.policy import make_plan
    from facerec.index.torch_search import TorchIVFSearcher, TorchSearcher

    torch.backends.cuda.matmul.allow_tf32 = False
    real, queries, mated, allx = split_faces(args.faces)
    mu, chol = distractor_model(allx)
    ngpu = torch.cuda.device_count()
    devices = args.devices or [f"cuda:{g}" for g in range(ngpu)] or ["cpu"]  # "cpu cpu": checks the code here
    dim = real.shape[1]

    def sync() -> None:
        for g in range(ngpu):
            torch.cuda.synchronize(g)
    empty = np.empty(0, np.int64)

    class Shard:
        """A TorchSearcher whose rows are ids id0, id0 + step, ... (the id % n routing of ShardedIndex)."""

        def __init__(self, searcher, id0: int, step: int) -> None:
            self.s, self.id0, self.step = searcher, id0, step

        @property
        def ntotal(self) -> int:
            return self.s.n

        def search(self, q, k):
            sc, r = self.s.search(q, k, empty, 0)
            return sc, np.where(r >= 0, self.id0 + self.step * r, -1)

    def fill(device: str, ids_of: np.ndarray, shard: int, ivf: bool) -> TorchSearcher:
        """The gallery rows id = shard, shard + nshards, ... generated on the device (real faces first):
        distractors never cross the bus, so 1e8 rows cost seconds, not a 38 GB transfer."""
        dev = torch.device(device)
        n = len(ids_of)
        plan = make_plan("torchivf" if ivf else "torch", n, dim, ngpu)
        s = (TorchIVFSearcher if ivf else TorchSearcher)(plan, dim, device)
        s.reserve(n)
        g = torch.Generator(device=dev).manual_seed(SEED + shard)
        mu_t = torch.tensor(mu, dtype=torch.float32, device=dev)
        chol_t = torch.tensor(chol, dtype=torch.float32, device=dev)
        real_rows = ids_of[ids_of < len(real)]
        s.put(0, torch.from_numpy(real[real_rows]).to(dev))
        for a in range(len(real_rows), n, 1 << 22):
            b = min(n, a + (1 << 22))
            v = mu_t + torch.randn((b - a, dim), generator=g, device=dev) @ chol_t.T
            s.put(a, v / v.norm(dim=1, keepdim=True))
        s.n = n
        if ivf:
            s.train()
            s.fold(None)
        return s

    def exact(parts: list[Shard], q: np.ndarray) -> np.ndarray:
        """fp32 top-10 over all shards (the reference), chunked to bound memory."""
        out_s, out_i = [], []
        for p in parts:
            qt = torch.from_numpy(q).to(p.s.device)
            best_s, best_r = [], []
            for a in range(0, p.s.n, 1 << 18):
                t = torch.topk(qt @ p.s.x32[a:min(p.s.n, a + (1 << 18))].T, 10, dim=1)
                best_s.append(t.values)
                best_r.append(t.indices + a)
            t = torch.topk(torch.cat(best_s, 1), 10, dim=1)
            out_s.append(t.values.cpu().numpy())
            rows = p.s._rows(torch.gather(torch.cat(best_r, 1), 1, t.indices))
            out_i.append(p.id0 + p.step * rows.cpu().numpy())
        return merge_topk(out_s, out_i, 10)[1]

    def timed_device(parts: list[Shard], b: int, copies: int, budget_s: float = 1.0) -> float:
        """Queries/s with the queries already on each GPU (as when the embedder runs there): every
        shard's kernels are launched before any is awaited, so the GPUs work at once; no host merge.
        `copies`: how many different batches one round answers (replicas: each answers its own)."""
        qs = [torch.from_numpy(bench_q[:b]).to(p.s.device) for p in parts]
        for p, q in zip(parts, qs):
            p.s.search_tensor(q, 10)
        sync()
        t, done = time.perf_counter(), 0
        while time.perf_counter() - t < budget_s:
            for p, q in zip(parts, qs):
                p.s.search_tensor(q, 10)
            sync()
            done += b * copies
        return done / (time.perf_counter() - t)

    def profile(part: Shard) -> None:
        """Where a single query's time goes: kernels of 50 eager searches (device time per kernel)."""
        from torch.profiler import ProfilerActivity
        with torch.profiler.profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for q in queries[:50]:
                part.s.search_tensor(torch.from_numpy(q[None]).to(part.s.device), 10)
            sync()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15), flush=True)

    def dense_variants(parts: list[Shard], truth: np.ndarray) -> list[dict]:
        """Batched q/s on the device and recall@1 for other tiles of the tensor-core kernel (large batches)."""
        from facerec.index import torch_search
        default, out = torch_search.DENSE_TILES[0], []
        for v in args.dense_variants:
            torch_search.DENSE_TILES[0] = tuple(int(x) for x in v.split(","))
            try:
                found = np.concatenate([parts[0].search(queries[i:i + 4096], 10)[1]
                                        for i in range(0, len(queries), 4096)])
                out.append({"tiles BM,BN,G,warps,stages": v, "recall@1": recall(found, truth)[0],
                            "device_qps": {b: timed_device(parts, b, 1) for b in (4096, 16384)}})
            except Exception as exc:
                out.append({"tiles BM,BN,G,warps,stages": v, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            print(json.dumps(out[-1]), flush=True)
        torch_search.DENSE_TILES[0] = default
        return out

    def graph_mode(s) -> str:
        graphs = list(s._graphs.values())
        if not graphs:
            return "none"
        if all(g.copies_inside for g in graphs):
            return "copies inside"
        return "kernels only" if all(g.graph is not None for g in graphs) else f"eager ({s.graph_error})"

    def recall_of(found: np.ndarray, truth: np.ndarray, tag: str, is_mated: np.ndarray) -> dict:
        r1, r10 = recall(found, truth)
        return {f"recall@1{tag}": r1, f"recall@10{tag}": r10,
                f"recall@1{tag}_mated": float((found[is_mated, 0] == truth[is_mated, 0]).mean()),
                f"recall@1{tag}_nonmated": float((found[~is_mated, 0] == truth[~is_mated, 0]).mean())}

    bench_q = np.tile(queries, (max(1, args.batch_queries // len(queries)), 1))
    for k in (int(float(s)) for s in args.sizes):
        for layout in args.layouts:
            ivf = layout.endswith("-ivf")
            base = layout.removesuffix("-ivf")
            n = len(devices) if base in ("shard", "replica") else 1
            if (n == 1 and base != "one") or (base == "replica" and k > args.replica_max) or \
                    (ivf and k < args.ivf_min) or (base == "one" and k > args.one_max) or \
                    (ivf and base == "one" and k > args.one_ivf_max):
                continue
            sync()
            t = time.perf_counter()
            index = parts = None
            try:
                if base == "replica":
                    parts = [Shard(fill(devices[g], np.arange(k), 0, ivf), 0, 1) for g in range(n)]
                    index = ReplicatedIndex(parts)
                else:
                    parts = [Shard(fill(devices[g], np.arange(g, k, n), g, ivf), g, n) for g in range(n)]
                    index = ShardedIndex(parts) if n > 1 else parts[0]
                sync()
                build_s = time.perf_counter() - t
                mem = [torch.cuda.memory_allocated(g) / 2 ** 30 for g in range(min(n, ngpu))]
                truth = exact(parts if base != "replica" else parts[:1], queries)
                for nprobe in (args.gpu_nprobe if ivf else [None]):
                    for p in parts:
                        if nprobe is not None:
                            p.s.nprobe = nprobe
                        p.s._graphs.clear()
                        p.search(queries[:1], 10)  # capture each shard's graph one at a time
                    single = timed_singles(index.search, queries, args.singles)
                    if args.profile and base == "one":
                        profile(parts[0])
                    # recall through the single-query path: every query, or every `stride`-th at large K
                    stride = 1 if k <= args.single_recall_all else max(1, len(queries) // args.single_recall_max)
                    found = np.concatenate([index.search(q[None], 10)[1] for q in queries[::stride]])
                    row = {"K": k, "layout": layout, "gpus": n, "kind": "torchivf" if ivf else "torch",
                           "factory": parts[0].s.plan.factory, "nprobe": nprobe, "backend": parts[0].s.backend,
                           "graph": graph_mode(parts[0].s), "build_s": build_s,
                           "gpu_mem_gib": mem, **single, "recall_stride": stride,
                           **recall_of(found, truth[::stride], "", mated[::stride])}
                    if nprobe in (None, args.gpu_nprobe[0]):
                        row["batch_qps"] = {b: timed_batch(index.search, bench_q, b, 1.0) for b in args.batches}
                        row["device_qps"] = {b: timed_device(parts, b, n if base == "replica" else 1)
                                             for b in args.batches}
                        found = np.concatenate([index.search(queries[i:i + 4096], 10)[1]
                                                for i in range(0, len(queries), 4096)])
                        row.update(recall_of(found, truth, "_batch", mated))
                    if args.dense_variants and base == "one" and nprobe is None:
                        row["dense_variants"] = dense_variants(parts, truth)
                    record(row)
            except Exception as exc:  # one layout failing (out of memory, say) must not lose the others
                record({"K": k, "layout": layout, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
                        "traceback": traceback.format_exc()[-3000:]})
            del index, parts
            gc.collect()
            if ngpu:
                torch.cuda.empty_cache()


def report(files: list[Path]) -> None:
    """Markdown tables (as in BENCHMARKS.md) from result files."""
    for f in files:
        d = json.loads(f.read_text())
        print(f"\n`{d['command']}` ({d['started']}, {d['cpus']} CPUs)\n")
        rows = [r for r in d["rows"] if "p50_ms" in r]
        if rows and "layout" in rows[0] and "device_qps" not in str(rows):
            print("| K | layout | GPUs | method | nprobe | top-k | p50 ms | p99 ms | batched q/s | recall@1 (mated / non-mated) | recall@10 | GPU GiB |")
            print("|---|---|---|---|---|---|---|---|---|---|---|---|")
            for r in rows:
                qps = ", ".join(f"{v:,.0f} (b={b})" for b, v in r["batch_qps"].items()) or "-"
                print(f"| {r['K']:.0e} | {r['layout']} | {r['gpus']} | {r['factory']} | {r['nprobe'] or '-'} | "
                      f"{r.get('topk_chunk') or 'one'} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {qps} | "
                      f"{r['recall@1']:.4f} ({r['recall@1_mated']:.4f} / {r['recall@1_nonmated']:.4f}) | "
                      f"{r['recall@10']:.4f} | {' + '.join(f'{m:.1f}' for m in r['gpu_mem_gib'])} |")
        elif rows and "layout" in rows[0]:
            print("| K | layout | GPUs | method | nprobe | p50 ms | p99 ms | q/s from host | q/s on device | "
                  "recall@1 single path (mated / non-mated) | recall@10 | recall@1 batch path | build s | GPU GiB |")
            print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
            for r in rows:
                qps, dev = (", ".join(f"{v:,.0f} (b={b})" for b, v in r.get(key, {}).items()) or "-"
                            for key in ("batch_qps", "device_qps"))
                print(f"| {r['K']:.0e} | {r['layout']} | {r['gpus']} | {r['factory']} | {r['nprobe'] or '-'} | "
                      f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {qps} | {dev} | {r['recall@1']:.4f} "
                      f"({r['recall@1_mated']:.4f} / {r['recall@1_nonmated']:.4f}) | {r['recall@10']:.4f} | "
                      f"{r.get('recall@1_batch', float('nan')):.4f} | {r['build_s']:.1f} | "
                      f"{' + '.join(f'{m:.1f}' for m in r['gpu_mem_gib'])} |")
        elif rows:
            print("| K | index | param | build s | +RSS MB | p50 ms | p99 ms | batched q/s | recall@1 (mated / non-mated) | "
                  "recall@10 | non-mated top-1 deficit mean / max | load |")
            print("|---|---|---|---|---|---|---|---|---|---|---|---|")
            for r in rows:
                param = f"{r['param']}={r['value']}" if r["param"] else "-"
                factory = (f"PCA-{r['project']} → " if r.get("project") else "") + r["factory"] + \
                    (f" + re-rank ×{r['rerank']} ({r.get('store', 'float32')})" if r.get("rerank", 1) > 1 else "")
                deficit = (f"{r['nonmated_top1_deficit_mean']:.5f} / {r['nonmated_top1_deficit_max']:.4f}"
                           if "nonmated_top1_deficit_mean" in r else "-")
                print(f"| {r['K']:.0e} | {factory} | {param} | {r['build_s']:.1f} | {r['rss_mb']:.0f} | "
                      f"{r['p50_ms']:.3f} | {r['p99_ms']:.2f} | {r['batch_qps']:,.0f} | {r['recall@1']:.4f} "
                      f"({r['recall@1_mated']:.4f} / {r['recall@1_nonmated']:.4f}) | {r['recall@10']:.4f} | "
                      f"{deficit} | {r.get('load', '-')} |")
            stream = [r for r in rows if "files_mb" in r][:1]
            for r in stream:
                print(f"\nK={r['K']:.0e} {r['factory']}: build {r['build_s']:.0f} s, save {r['save_s']:.0f} s, "
                      f"open {1e3 * r['open_s']:.0f} ms, files {r['files_mb']:,.0f} MB, peak RSS {r['peak_rss_mb']:,.0f} MB")
        persist = [r for r in d["rows"] if r.get("persistence")]
        if persist:
            print("\n| K | kind | full save s | open ms | first search ms | add 1 + save ms | remove 1 + save ms | full verify s | files MB |")
            print("|---|---|---|---|---|---|---|---|---|")
            for r in persist:
                print(f"| {r['K']:.0e} | {r['kind']} | {r['full_save_s']:.2f} | {1e3 * r['open_s']:.1f} | "
                      f"{1e3 * r['first_search_s']:.1f} | {1e3 * r['add_one_and_save_s']:.1f} | "
                      f"{1e3 * r['remove_one_and_save_s']:.1f} | {r['full_verify_s']:.2f} | {r['files_mb']:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["faces", "cpu", "gpu", "report"])
    ap.add_argument("results", nargs="*", type=Path, help="report: result JSON files")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--faces", type=Path, default=Path("pack/faces.npz"))
    ap.add_argument("--crop-cache", type=Path, default=Path("pack/crops"))
    ap.add_argument("--sizes", nargs="+", default=["1e3", "1e4", "1e5"])
    ap.add_argument("--kinds", nargs="+", default=["flat", "ivf", "hnsw"])
    ap.add_argument("--nprobe", nargs="+", type=int, default=[8, 16, 32, 64])
    ap.add_argument("--ef", nargs="+", type=int, default=[32, 64, 128])
    ap.add_argument("--flat-max", type=float, default=1e6)
    ap.add_argument("--singles", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rerank", nargs="+", type=int,
                    help="shortlist multiples (k x this, re-scored exactly) to compare on kinds that re-rank")
    ap.add_argument("--stream", action="store_true",
                    help="cpu: gallery in a float16 file built chunk by chunk, index built from it, saved and reopened")
    ap.add_argument("--persist", action="store_true", help="also time save/open/append for --persist-kind")
    ap.add_argument("--persist-kind", default="ivf")
    ap.add_argument("--tmp", type=Path, default=Path("pack"))
    ap.add_argument("--layouts", nargs="+", default=["one", "shard", "replica", "one-ivf", "shard-ivf"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1024, 4096, 16384])
    ap.add_argument("--batch-queries", type=int, default=65536)
    ap.add_argument("--single-recall-all", type=float, default=1e6,
                    help="largest K whose recall pass sends every query through the single-query path")
    ap.add_argument("--single-recall-max", type=int, default=2000,
                    help="above that K, how many queries (evenly strided) that pass sends")
    ap.add_argument("--gpu-nprobe", nargs="+", type=int, default=[32, 64, 128, 256])
    ap.add_argument("--ivf-min", type=float, default=1e6, help="smallest K for the IVF layouts")
    ap.add_argument("--one-max", type=float, default=1e9, help="largest K on one GPU")
    ap.add_argument("--one-ivf-max", type=float, default=5e7,
                    help="largest K for IVF on one GPU (sorting the lists copies the fp32 rows once)")
    ap.add_argument("--devices", nargs="+", help="torch devices (default: every GPU)")
    ap.add_argument("--replica-max", type=float, default=2e7, help="largest K copied whole onto every GPU")
    ap.add_argument("--dense-variants", nargs="*", default=[],
                    help="BM,BN,G,warps,stages tiles of the batched kernel to compare (layout one)")
    ap.add_argument("--profile", action="store_true", help="print a kernel profile of single queries (layout one)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    if a.mode == "faces":
        make_faces(a.data, a.faces, a.crop_cache)
        return
    if a.mode == "report":
        report(a.results)
        return
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows: list[dict] = []

    def record(row: dict) -> None:
        """Print a result row and rewrite the JSON, so a run cut short keeps what it measured."""
        rows.append(row)
        print(json.dumps(row), flush=True)
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps({"command": " ".join(["benchmarks/search_scale.py", *sys.argv[1:]]),
                                          "started": started, "machine": platform.node(), "cpus": os.cpu_count(),
                                          "platform": platform.platform(), "rows": rows}, indent=1))

    (run_gpu if a.mode == "gpu" else run_cpu_stream if a.stream else run_cpu)(a, record)


if __name__ == "__main__":
    main()
