"""Exact search on a GPU (or CPU) with torch: int8 group-maximum scan, int8 re-scan of the best groups,
fp32 exact re-score of the best rows.

Why: on a GPU a search is memory- and launch-bound. Rows are stored twice: int8 codes with one fp32 scale
a row (the scan reads a quarter of fp32's bytes) and fp32 (the exact re-score, so returned scores are the
cosines thresholds were calibrated on). Stage 1 keeps the maximum of each group of `group` rows (a group
holding one of the top k has a maximum at least the k-th score, so the best groups hold the best rows);
stage 2 scores the rows of the best `k * shortlist` groups; stage 3 re-scores the best `k * shortlist`
rows in fp32. Every shape is fixed by (batch, k), so a small batch runs as one CUDA graph (copy in, all
kernels, copy out): a single query costs one launch and one synchronisation. On CUDA the scans are the
Triton kernels of facerec.index.gpu_kernels; on the CPU (tests) the same stages run as torch products.
This module is the one place in facerec.index that imports torch, and only the torch kinds load it
(import-linter: see pyproject.toml).
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

from facerec.index.policy import Plan

SCORE_BYTES = 1 << 30  # largest stage-1 output (queries x groups, fp32) of one gallery slab in a batch
SCAN_BLOCK = 256  # rows a scan program reads (segment_scan)
QUERY_CHUNK = 4096  # queries searched together (bounds the stage-2/3 gathers)
GRAPH_MAX_BATCH = 64  # batches up to this size are captured as CUDA graphs
_CAPTURE = threading.Lock()  # one capture at a time in a process (shards capture from their threads)
# int8_group_max tiles for batch <= key (0: larger): queries BM, rows BN, group G, warps, stages
# (0: 128, 64, 64, 4, 3 was the fastest of six tiles at 1e6 rows: benchmarks/results/search_gpu_h200x2_int8_run2.json)
DENSE_TILES = {16: (16, 128, 32, 4, 3), 64: (64, 128, 32, 4, 3), 0: (128, 64, 64, 4, 3)}


def _kernels():
    """The Triton kernels, or None without triton (the torch stages then run on the GPU too)."""
    try:
        from facerec.index import gpu_kernels
    except ImportError:
        return None
    return gpu_kernels


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 codes with one scale a row: x ~ codes * scale."""
    scale = x.abs().amax(1).clamp_min(1e-12) / 127.0
    return torch.round(x / scale[:, None]).clamp_(-127, 127).to(torch.int8), scale.float()


class TorchSearcher:
    """All rows of one index on one device: int8 codes + scales (scans), fp32 (exact re-score), deleted flags."""

    def __init__(self, plan: Plan, dim: int, device: str) -> None:
        self.plan, self.dim, self.device = plan, dim, torch.device(device)
        self.shortlist = int(plan.search.get("shortlist", 4))
        self.min_shortlist = int(plan.search.get("min_shortlist", 32))
        self.group = int(plan.search.get("group", SCAN_BLOCK))  # rows a stage-1 maximum covers (scan path)
        self.batch_dense = int(plan.search.get("batch_dense", 2))  # from here one tensor-core product per slab
        self.kernels = _kernels() if self.device.type == "cuda" else None
        self.backend = "triton" if self.kernels is not None and dim % 16 == 0 else "torch"
        self.codes = torch.empty((0, dim), dtype=torch.int8, device=self.device)
        self.scale = torch.empty(0, dtype=torch.float32, device=self.device)
        self.x32 = torch.empty((0, dim), dtype=torch.float32, device=self.device)
        self.flags = torch.empty(0, dtype=torch.uint8, device=self.device)  # 1: deleted, by storage position
        self.n = 0
        self._dead_key: np.ndarray | None = None
        self._graphs: dict[tuple[int, int], _Graphed] = {}
        self.graph_error: str | None = None  # why a CUDA graph could not be captured (then: eager)

    @classmethod
    def build(cls, plan: Plan, dim: int, vectors: np.ndarray, gpus: int = 0, device: str | None = None) -> "TorchSearcher":
        if device is None:
            device = "cuda:0" if gpus > 0 and torch.cuda.is_available() else "cpu"
        searcher = cls(plan, dim, device)
        searcher.add_tail(vectors)
        return searcher

    # --- storage ------------------------------------------------------------------------------------
    def reserve(self, n: int) -> None:
        """Room for `n` rows (capacity doubles, so n single adds cost O(n) copies in all)."""
        if n <= len(self.x32):
            return
        cap = max(n, 2 * len(self.x32), 1024)
        for name in ("codes", "scale", "x32", "flags"):
            old = getattr(self, name)
            new = torch.zeros((cap, *old.shape[1:]), dtype=old.dtype, device=self.device)
            new[:self.n] = old[:self.n]
            setattr(self, name, new)
        self._graphs.clear()

    def put(self, lo: int, x32: torch.Tensor) -> None:
        """Write rows lo ... from fp32 vectors already on the device (codes, scales, fp32)."""
        hi = lo + len(x32)
        self.x32[lo:hi] = x32
        self.codes[lo:hi], self.scale[lo:hi] = quantize(x32)
        self.flags[lo:hi] = 0

    def add_tail(self, vectors: np.ndarray) -> None:
        need = self.n + len(vectors)
        self.reserve(need)
        for start in range(0, len(vectors), 1 << 20):
            chunk = torch.from_numpy(np.array(vectors[start:start + (1 << 20)], np.float32)).to(self.device)
            self.put(self.n + start, chunk)
        self.n = need
        self._dead_key = None
        self._graphs.clear()

    def fold(self, vectors) -> None:
        """Nothing to do: added rows are already in the device matrices."""

    def _positions(self, rows: torch.Tensor) -> torch.Tensor:
        """Storage positions of rows (the same here; not once IVF sorts rows by list)."""
        return rows

    def _rows(self, positions: torch.Tensor) -> torch.Tensor:
        return positions

    def _sync_dead(self, dead: np.ndarray) -> None:
        """Deleted flags updated in place (captured graphs read the same buffer)."""
        if self._dead_key is dead:
            return
        self.flags[:self.n] = 0
        if len(dead):
            self.flags[self._positions(torch.from_numpy(np.asarray(dead, np.int64)).to(self.device))] = 1
        self._dead_key = dead

    # --- search -------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, dead: np.ndarray, base: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Top-k alive rows by exact fp32 score (rows numbered as added; -1 / -inf where fewer exist)."""
        self._sync_dead(dead)
        q = np.ascontiguousarray(queries, np.float32).reshape(-1, self.dim)
        if self.device.type == "cuda" and len(q) <= GRAPH_MAX_BATCH and self.n:
            key = (len(q), k)
            if key not in self._graphs:
                self._graphs[key] = _Graphed(self, len(q), k)
            return self._graphs[key](q)
        scores, rows = self.search_tensor(torch.from_numpy(q).to(self.device), k)
        return scores.cpu().numpy(), rows.cpu().numpy()

    @torch.inference_mode()
    def search_tensor(self, q32: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The three stages on the device, with no host synchronisation (graph-capturable for small batches)."""
        if self.device.type != "cuda":
            return self._search(q32, k)
        with torch.cuda.device(self.device):  # Triton launches on the current device, not the tensors'
            return self._search(q32, k)

    def _search(self, q32: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        b = len(q32)
        if self.n == 0:
            return (torch.full((b, k), float("-inf"), device=self.device),
                    torch.full((b, k), -1, dtype=torch.long, device=self.device))
        if b > QUERY_CHUNK:
            parts = [self._search(q32[a:a + QUERY_CHUNK], k) for a in range(0, b, QUERY_CHUNK)]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        short = max(k * self.shortlist, self.min_shortlist)
        if self._dense(b):
            starts, lens, g = self._dense_groups(q32, short)
        else:
            starts, lens, g = self._scan_groups(q32, short)
        return self._finish(q32, starts, lens, k, short, g)

    def _dense(self, b: int) -> bool:
        return self.backend == "torch" or b >= self.batch_dense

    def _segments(self, q32: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(starts, lengths) of the storage ranges each query scans, and the longest range: all rows here."""
        b = len(q32)
        return (torch.zeros((b, 1), dtype=torch.long, device=self.device),
                torch.full((b, 1), self.n, dtype=torch.long, device=self.device), self.n)

    def _scan(self, q32: torch.Tensor, starts: torch.Tensor, lens: torch.Tensor, longest: int, block: int,
              group: int) -> torch.Tensor:
        """Group maxima (b, segments * chunks * block // group) of the rows of each query's segments."""
        b, p = starts.shape
        chunks = max(1, math.ceil(longest / block))
        if self.backend == "triton":
            out = torch.empty((b, p * chunks * (block // group)), dtype=torch.float32, device=self.device)
            self.kernels.segment_scan[(b * p * chunks,)](
                q32.contiguous(), self.codes, self.scale, self.flags, starts.contiguous(), lens.contiguous(), out,
                p, chunks, D=self.dim, BLOCK=block, G=group, BD=_pow2_divisor(self.dim, 64), num_warps=4)
            return out
        offs = torch.arange(chunks * block, device=self.device)
        dtype = torch.half if self.device.type == "cuda" else torch.float32
        step = max(1, (256 << 20) // (p * len(offs) * self.dim * 4))  # queries a gather of <= 256 MB serves
        out = []
        for a in range(0, b, step):
            valid = offs < lens[a:a + step, :, None]
            pos = torch.where(valid, starts[a:a + step, :, None] + offs, 0)
            s = torch.einsum("bpld,bd->bpl", self.codes[pos].to(dtype), q32[a:a + step].to(dtype)).float()
            s = torch.where(valid & (self.flags[pos] == 0), s * self.scale[pos], float("-inf"))
            out.append(s.view(len(s), p, -1, group).amax(3).reshape(len(s), -1))
        return torch.cat(out)

    def _scan_groups(self, q32: torch.Tensor, short: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Stage 1 by segments: the `short` best groups as (start, length) storage ranges, and their size."""
        g = self.group
        starts, lens, longest = self._segments(q32)
        maxima = self._scan(q32, starts, lens, longest, SCAN_BLOCK, g)
        top = torch.topk(maxima, min(short, maxima.shape[1]), dim=1, sorted=False).indices
        per_segment = maxima.shape[1] // starts.shape[1]
        seg, offset = top // per_segment, (top % per_segment) * g
        return starts.gather(1, seg) + offset, (lens.gather(1, seg) - offset).clamp(0, g), g

    def _dense_groups(self, q32: torch.Tensor, short: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Stage 1 over every row, a slab of rows at a time: the `short` best groups as storage ranges."""
        b, n = len(q32), self.n
        bm, bn, g, warps, stages = next(v for key, v in DENSE_TILES.items() if key == 0 or b <= key)
        slab = max(bn, SCORE_BYTES // (4 * b) * g // bn * bn)
        if self.backend == "triton":
            qc, qs = quantize(q32)
        else:
            qh = q32.half() if self.device.type == "cuda" else q32
        cand_v, cand_g = [], []
        for row0 in range(0, n, slab):
            rows = min(slab, n - row0)
            if self.backend == "triton":
                width = math.ceil(rows / bn) * (bn // g)
                maxima = torch.empty((b, width), dtype=torch.float32, device=self.device)
                self.kernels.int8_group_max[(math.ceil(b / bm) * math.ceil(rows / bn),)](
                    qc, qs, self.codes, self.scale, self.flags, maxima, b, rows, row0, width, D=self.dim, BM=bm,
                    BN=bn, BK=_pow2_divisor(self.dim, 64), G=g, num_warps=warps, num_stages=stages)
            else:
                s = (qh @ self.codes[row0:row0 + rows].to(qh.dtype).T).float() * self.scale[row0:row0 + rows]
                s = s.masked_fill(self.flags[row0:row0 + rows].bool(), float("-inf"))
                s = torch.nn.functional.pad(s, (0, -rows % g), value=float("-inf"))
                maxima = s.view(b, -1, g).amax(2)
            top = torch.topk(maxima, min(short, maxima.shape[1]), dim=1, sorted=False)
            cand_v.append(top.values)
            cand_g.append(top.indices + row0 // g)
        groups = cand_g[0]
        if len(cand_g) > 1:
            values = torch.cat(cand_v, 1)
            groups = torch.gather(torch.cat(cand_g, 1), 1, torch.topk(values, min(short, values.shape[1]), dim=1,
                                                                          sorted=False).indices)
        starts = groups * g
        return starts, (n - starts).clamp(0, g), g

    def _finish(self, q32: torch.Tensor, starts: torch.Tensor, lens: torch.Tensor, k: int,
                short: int, g: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 2 (every row of the chosen groups of `g` rows, int8) and stage 3 (the best rows, exact fp32)."""
        s2 = self._scan(q32, starts, lens, g, g, 1)
        pos = (starts[..., None] + torch.arange(g, device=self.device)).reshape(len(q32), -1)
        top = torch.topk(s2, min(short, s2.shape[1]), dim=1, sorted=False)
        cand = pos.gather(1, top.indices).clamp(0, self.n - 1)
        exact = torch.bmm(self.x32[cand], q32.unsqueeze(2)).squeeze(2)
        exact = torch.where(torch.isinf(top.values), float("-inf"), exact)
        best = torch.topk(exact, min(k, exact.shape[1]), dim=1)
        scores, rows = best.values, self._rows(cand.gather(1, best.indices))
        if scores.shape[1] < k:
            scores = torch.nn.functional.pad(scores, (0, k - scores.shape[1]), value=float("-inf"))
            rows = torch.nn.functional.pad(rows, (0, k - rows.shape[1]), value=-1)
        return scores, torch.where(torch.isinf(scores), -1, rows)


def _pow2_divisor(n: int, most: int) -> int:
    """The largest power of two <= `most` dividing `n` (a Triton block must be a power of two)."""
    d = most
    while n % d:
        d //= 2
    return d


class _Graphed:
    """One (batch, k) search captured as a CUDA graph: pinned copy in, the three stages, pinned copy out.

    Why: a single query at 1e6 rows is ~0.05 ms of memory traffic but a dozen kernel launches and three
    copies; a replay is one launch. If the copies cannot be captured, only the kernels are (copies
    around the replay); if nothing can be captured, searches run eagerly (`searcher.graph_error` says why)."""

    def __init__(self, searcher: TorchSearcher, b: int, k: int) -> None:
        self.s, self.k = searcher, k
        dev = searcher.device
        self.q_host = torch.empty((b, searcher.dim), dtype=torch.float32, pin_memory=True)
        self.s_host = torch.empty((b, k), dtype=torch.float32, pin_memory=True)
        self.r_host = torch.empty((b, k), dtype=torch.long, pin_memory=True)
        self.q_dev = torch.zeros((b, searcher.dim), dtype=torch.float32, device=dev)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.copies_inside = False
        with _CAPTURE, torch.cuda.device(dev):
            for copies in (True, False):
                try:
                    self._capture(copies)
                    self.copies_inside = copies
                    break
                except RuntimeError as exc:
                    searcher.graph_error = f"capture with copies={copies}: {str(exc).splitlines()[0]}"
                    self.graph = None
                    torch.cuda.synchronize(dev)

    def _body(self, copies: bool) -> None:
        if copies:
            self.q_dev.copy_(self.q_host, non_blocking=True)
        self.out = self.s.search_tensor(self.q_dev, self.k)
        if copies:
            self.s_host.copy_(self.out[0], non_blocking=True)
            self.r_host.copy_(self.out[1], non_blocking=True)

    def _capture(self, copies: bool) -> None:
        stream = torch.cuda.Stream(self.s.device)
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # compiles the kernels and sets up cuBLAS outside the capture
                self._body(copies)
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            self._body(copies)
        self.graph = graph

    def __call__(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.cuda.device(self.s.device):
            self.q_host.numpy()[:] = q
            if self.graph is None:
                out = self.s.search_tensor(self.q_host.to(self.s.device, non_blocking=True), self.k)
                return out[0].cpu().numpy(), out[1].cpu().numpy()
            if not self.copies_inside:
                self.q_dev.copy_(self.q_host, non_blocking=True)
            self.graph.replay()
            if not self.copies_inside:
                self.s_host.copy_(self.out[0], non_blocking=True)
                self.r_host.copy_(self.out[1], non_blocking=True)
            torch.cuda.current_stream().synchronize()
            return self.s_host.numpy().copy(), self.r_host.numpy().copy()


class TorchIVFSearcher(TorchSearcher):
    """Inverted lists on the device: spherical k-means centroids, rows stored list by list.

    Why: a single query over 1e8 rows cannot be brute-forced in a few milliseconds (19 GB of int8 to
    read); probing `nprobe` of `nlist` lists reads a few hundred thousand rows. A query's probed lists are
    the segments of one scan kernel (one program per list chunk; the grid is fixed by the longest list,
    so the search is graph-capturable). Rows added after the last sort are one more segment (the tail),
    and `fold` sorts them in. Batches of `batch_exhaustive` queries or more take the dense path over all
    rows, where one tensor-core product per slab beats gathering lists query by query.
    """

    def __init__(self, plan: Plan, dim: int, device: str) -> None:
        super().__init__(plan, dim, device)
        self.nprobe = int(plan.search.get("nprobe", 64))
        self.batch_exhaustive = int(plan.search.get("batch_exhaustive", 64))
        self.centroids: torch.Tensor | None = None
        self.offsets = self.counts = self.perm = self.inv = None
        self.sorted_n = self.longest = 0

    @classmethod
    def build(cls, plan: Plan, dim: int, vectors: np.ndarray, gpus: int = 0, device: str | None = None) -> "TorchIVFSearcher":
        searcher = super().build(plan, dim, vectors, gpus, device)
        searcher.train()
        searcher.fold(None)
        return searcher

    def _dense(self, b: int) -> bool:
        return b >= self.batch_exhaustive

    @torch.inference_mode()
    def train(self, iterations: int = 10, per_list: int = 64, seed: int = 0) -> None:
        """Spherical k-means on a sample of the stored rows (half products on a GPU, fp32 sums)."""
        g = torch.Generator(device=self.device).manual_seed(seed)
        nlist = self.plan.nlist
        pick = torch.randperm(self.n, generator=g, device=self.device)[:nlist * per_list]
        sample = self.x32[pick]
        cent = sample[torch.randperm(len(sample), generator=g, device=self.device)[:nlist]].clone()
        for _ in range(iterations):
            assign = self._assign(sample, cent)
            sums = torch.zeros_like(cent).index_add_(0, assign, sample)
            filled = torch.bincount(assign, minlength=nlist) > 0
            cent = torch.where(filled[:, None], sums / sums.norm(dim=1, keepdim=True).clamp_min(1e-12), cent)
        self.centroids = cent
        self._graphs.clear()

    def _assign(self, x: torch.Tensor, cent: torch.Tensor) -> torch.Tensor:
        half = self.device.type == "cuda"
        c = cent.half() if half else cent
        step = max(1, SCORE_BYTES // (4 * len(c)))
        return torch.cat([((x[a:a + step].half() if half else x[a:a + step]) @ c.T).argmax(1)
                          for a in range(0, len(x), step)])

    @torch.inference_mode()
    def fold(self, vectors) -> None:
        """Sort every row into its list (the tail joins the lists; no retraining), permuting in place a
        slice of columns at a time so a gallery filling most of the card can still be sorted."""
        n = self.n
        lists = self._assign(self.x32[:n], self.centroids)
        order = torch.argsort(lists, stable=True)
        counts = torch.bincount(lists, minlength=self.plan.nlist)
        del lists
        for t in (self.codes, self.x32):
            for c in range(0, self.dim, 16):
                t[:n, c:c + 16] = t[:n, c:c + 16][order]
        for t in (self.scale, self.flags):
            t[:n] = t[:n][order]
        self.counts, self.offsets = counts, torch.cumsum(counts, 0) - counts
        self.longest = int(counts.max())
        self.perm = order if self.perm is None else self.perm[order]
        self.inv = torch.empty_like(self.perm)
        self.inv[self.perm] = torch.arange(n, device=self.device)
        self.sorted_n = n
        self._graphs.clear()

    def add_tail(self, vectors: np.ndarray) -> None:
        super().add_tail(vectors)
        if self.perm is not None and len(self.perm) < self.n:  # new rows keep their own row numbers
            extra = torch.arange(len(self.perm), self.n, device=self.device)
            self.perm, self.inv = torch.cat([self.perm, extra]), torch.cat([self.inv, extra])

    def _positions(self, rows: torch.Tensor) -> torch.Tensor:
        return rows if self.inv is None else self.inv[rows]

    def _rows(self, positions: torch.Tensor) -> torch.Tensor:
        return positions if self.perm is None else self.perm[positions]

    def _segments(self, q32: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The `nprobe` nearest lists of each query, and the tail."""
        c = self.centroids.half() if self.device.type == "cuda" else self.centroids
        probe = torch.topk(q32.to(c.dtype) @ c.T, min(self.nprobe, len(c)), dim=1, sorted=False).indices
        b, tail = len(q32), self.n - self.sorted_n
        starts = torch.cat([self.offsets[probe], torch.full((b, 1), self.sorted_n, device=self.device)], 1)
        lens = torch.cat([self.counts[probe], torch.full((b, 1), tail, device=self.device)], 1)
        return starts, lens, max(self.longest, tail)
