"""Exact search on a GPU (or CPU) with torch: fp16 matrix product + top-k shortlist, fp32 exact re-score.

Why: on a GPU brute force is memory-bound, so fp16 halves the bytes read per query; the shortlist (k x
`shortlist` candidates) is then re-scored in fp32 on the device, so the returned scores are the exact
cosines that thresholds were calibrated on and a candidate fp16 rounding would have misordered is
recovered. This module is the one place in facerec.index that imports torch, and only the `torch` kind
loads it (import-linter: see pyproject.toml).
"""

from __future__ import annotations

import numpy as np
import torch

from facerec.index.policy import Plan

SCORE_BYTES = 2 << 30  # largest fp16 score block (queries x rows) computed at once
TOPK_CHUNK = 0  # rows per first-stage top-k (0: one top-k over the whole row); 0 measured faster on the H200 (benchmarks/results/search_gpu_h200x2_exact.json)


def chunked_topk(s: torch.Tensor, k: int, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unsorted top-k along dim 1 in two stages: top-k of each `chunk` columns, then of those.

    Why: one top-k over a million-column row makes several passes over it; small slices are cheap and
    the global top-k is always inside the union of the per-slice top-k."""
    chunk = TOPK_CHUNK if chunk is None else chunk
    b, n = s.shape
    if not chunk or n <= 4 * chunk or k > chunk // 4:
        top = torch.topk(s, k, dim=1, sorted=False)
        return top.values, top.indices
    c = n // chunk
    top = torch.topk(s[:, :c * chunk].view(b, c, chunk), k, dim=2, sorted=False)
    values = top.values.reshape(b, -1)
    idx = (top.indices + (torch.arange(c, device=s.device) * chunk)[None, :, None]).reshape(b, -1)
    if c * chunk < n:
        rest = torch.topk(s[:, c * chunk:], min(k, n - c * chunk), dim=1, sorted=False)
        values = torch.cat([values, rest.values], 1)
        idx = torch.cat([idx, rest.indices + c * chunk], 1)
    top = torch.topk(values, k, dim=1, sorted=False)
    return top.values, torch.gather(idx, 1, top.indices)


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class TorchSearcher:
    """All rows of one index on one device, as fp16 (for the scan) and fp32 (for the exact re-score)."""

    def __init__(self, plan: Plan, dim: int, device: str) -> None:
        self.plan, self.dim, self.device = plan, dim, torch.device(device)
        self.shortlist = int(plan.search.get("shortlist", 4))
        self.x16 = torch.empty((0, dim), dtype=torch.float16, device=self.device)
        self.x32 = torch.empty((0, dim), dtype=torch.float32, device=self.device)
        self.n = 0
        self._dead_key: np.ndarray | None = None
        self._dead_mask: torch.Tensor | None = None

    @classmethod
    def build(cls, plan: Plan, dim: int, vectors: np.ndarray, gpus: int = 0, device: str | None = None) -> "TorchSearcher":
        if device is None:
            device = "cuda:0" if gpus > 0 and torch.cuda.is_available() else "cpu"
        searcher = cls(plan, dim, device)
        searcher.add_tail(vectors)
        return searcher

    def add_tail(self, vectors: np.ndarray) -> None:
        """Append rows (capacity doubles, so n single adds cost O(n) copies in all)."""
        need = self.n + len(vectors)
        if need > len(self.x32):
            cap = max(need, 2 * len(self.x32), 1024)
            for name in ("x16", "x32"):
                old = getattr(self, name)
                new = torch.empty((cap, self.dim), dtype=old.dtype, device=self.device)
                new[:self.n] = old[:self.n]
                setattr(self, name, new)
        for start in range(0, len(vectors), 1 << 20):
            chunk = torch.from_numpy(np.array(vectors[start:start + (1 << 20)], np.float32)).to(self.device)
            lo = self.n + start
            self.x32[lo:lo + len(chunk)] = chunk
            self.x16[lo:lo + len(chunk)] = chunk.half()
        self.n = need

    def fold(self, vectors: np.ndarray) -> None:
        """Nothing to do: added rows are already in the device matrix."""

    def search(self, queries: np.ndarray, k: int, dead: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k alive rows by exact fp32 score, shortlisted by fp16."""
        if self._dead_key is not dead:
            self._dead_key = dead
            self._dead_mask = None
            if len(dead):
                mask = torch.zeros(self.n, dtype=torch.bool, device=self.device)
                mask[torch.from_numpy(dead).to(self.device)] = True
                self._dead_mask = mask
        q32 = torch.from_numpy(np.ascontiguousarray(queries, np.float32)).to(self.device, non_blocking=True)
        scores, rows = self.search_tensor(q32, k)
        return scores.cpu().numpy(), rows.cpu().numpy()

    def _position_mask(self) -> torch.Tensor | None:
        """Deleted flags by storage position (rows and positions coincide here; not once rows are sorted)."""
        return self._dead_mask

    @torch.inference_mode()
    def search_tensor(self, q32: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Blocks of up to 1024 queries x `SCORE_BYTES` of fp16 scores: each block's shortlist is kept,
        the shortlists merged, then re-scored exactly in fp32."""
        n = self.n
        short = min(n, max(k, k * self.shortlist))
        qb = min(len(q32), 1024)
        rb = max(short, SCORE_BYTES // (2 * qb))
        out_s, out_r = [], []
        x16, x32 = self.x16[:n], self.x32[:n]
        dead = self._position_mask()
        for i in range(0, len(q32), qb):
            q = q32[i:i + qb]
            q16 = q.half()
            cand_s, cand_r = [], []
            for a in range(0, n, rb):
                s = q16 @ x16[a:a + rb].T
                if dead is not None:
                    s.masked_fill_(dead[a:a + rb], float("-inf"))
                values, idx = chunked_topk(s, min(short, s.shape[1]))
                cand_s.append(values)
                cand_r.append(idx + a)
            rows = cand_r[0]
            if len(cand_r) > 1:
                pick = torch.topk(torch.cat(cand_s, 1), short, dim=1, sorted=False).indices
                rows = torch.gather(torch.cat(cand_r, 1), 1, pick)
            exact = torch.bmm(x32[rows], q.unsqueeze(2)).squeeze(2)
            if dead is not None:
                exact.masked_fill_(dead[rows], float("-inf"))
            top = torch.topk(exact, min(k, short), dim=1)
            out_s.append(top.values)
            out_r.append(torch.gather(rows, 1, top.indices))
        scores, rows = torch.cat(out_s), torch.cat(out_r)
        return scores, torch.where(torch.isinf(scores), torch.full_like(rows, -1), rows)


class TorchIVFSearcher(TorchSearcher):
    """Inverted lists on the device: spherical k-means centroids, rows stored list by list.

    Why: a single query over 1e8 rows cannot be brute-forced in a few milliseconds (38 GB of fp16 to
    read); probing `nprobe` of `nlist` lists reads a few hundred thousand rows. Rows added after the last
    sort are scanned exhaustively (the tail), and `fold` sorts them in. Batches of `batch_exhaustive`
    queries or more take the exhaustive path, where matrix products beat gathers.
    """

    def __init__(self, plan: Plan, dim: int, device: str) -> None:
        super().__init__(plan, dim, device)
        self.nprobe = int(plan.search.get("nprobe", 64))
        self.batch_exhaustive = int(plan.search.get("batch_exhaustive", 64))
        self.centroids: torch.Tensor | None = None
        self.offsets = self.counts = self.perm = None
        self.sorted_n = 0

    @classmethod
    def build(cls, plan: Plan, dim: int, vectors: np.ndarray, gpus: int = 0, device: str | None = None) -> "TorchIVFSearcher":
        searcher = super().build(plan, dim, vectors, gpus, device)
        searcher.train()
        searcher.fold(None)
        return searcher

    @torch.inference_mode()
    def train(self, iterations: int = 10, per_list: int = 64, seed: int = 0) -> None:
        """Spherical k-means on a sample of the stored rows (fp16 products, fp32 sums)."""
        g = torch.Generator(device=self.device).manual_seed(seed)
        nlist = self.plan.nlist
        pick = torch.randperm(self.n, generator=g, device=self.device)[:nlist * per_list]
        sample = self.x32[pick]
        cent = sample[torch.randperm(len(sample), generator=g, device=self.device)[:nlist]].clone()
        for _ in range(iterations):
            assign = self._assign(sample.half(), cent.half())
            sums = torch.zeros_like(cent).index_add_(0, assign, sample)
            filled = torch.bincount(assign, minlength=nlist) > 0
            cent = torch.where(filled[:, None], sums / sums.norm(dim=1, keepdim=True).clamp_min(1e-12), cent)
        self.centroids = cent.half()

    @staticmethod
    def _assign(x16: torch.Tensor, c16: torch.Tensor) -> torch.Tensor:
        step = max(1, SCORE_BYTES // (2 * len(c16)))
        return torch.cat([(x16[a:a + step] @ c16.T).argmax(1) for a in range(0, len(x16), step)])

    @torch.inference_mode()
    def fold(self, vectors) -> None:
        """Sort every row into its list (the tail joins the lists); no retraining."""
        n = self.n
        lists = self._assign(self.x16[:n], self.centroids)
        order = torch.argsort(lists, stable=True)
        self.counts = torch.bincount(lists, minlength=self.plan.nlist)
        self.offsets = torch.cumsum(self.counts, 0) - self.counts
        self.x16[:n] = self.x16[:n][order]
        self.x32[:n] = self.x32[:n][order]
        self.perm = order if self.perm is None else self.perm[order]
        self.sorted_n = n
        self._pos_key = None

    def _position_mask(self) -> torch.Tensor | None:
        if self._dead_mask is None:
            return None
        if getattr(self, "_pos_key", None) is not self._dead_mask:
            self._pos_key, self._pos_mask = self._dead_mask, self._dead_mask[self.perm]
        return self._pos_mask

    def add_tail(self, vectors: np.ndarray) -> None:
        super().add_tail(vectors)
        if self.perm is not None and len(self.perm) < self.n:  # new rows keep their own row numbers
            extra = torch.arange(len(self.perm), self.n, device=self.device)
            self.perm = torch.cat([self.perm, extra])

    @torch.inference_mode()
    def search_tensor(self, q32: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if len(q32) >= self.batch_exhaustive:
            scores, pos = super().search_tensor(q32, k)
            return scores, torch.where(pos >= 0, self.perm[pos.clamp_min(0)], pos)
        short = min(self.n, max(k, k * self.shortlist))
        out_s, out_r = [], []
        probe = torch.topk(q32.half() @ self.centroids.T, min(self.nprobe, len(self.centroids)), dim=1).indices
        tail = torch.arange(self.sorted_n, self.n, device=self.device)
        for q, lists in zip(q32, probe):
            lens = self.counts[lists]
            total = int(lens.sum())
            first = torch.repeat_interleave(self.offsets[lists] - (torch.cumsum(lens, 0) - lens), lens,
                                            output_size=total)
            pos = torch.cat([first + torch.arange(total, device=self.device), tail])
            s = self.x16[pos] @ q.half()
            if self._dead_mask is not None:
                s.masked_fill_(self._dead_mask[self.perm[pos]], float("-inf"))
            cand = pos[torch.topk(s, min(short, len(pos))).indices]
            exact = self.x32[cand] @ q
            if self._dead_mask is not None:
                exact.masked_fill_(self._dead_mask[self.perm[cand]], float("-inf"))
            top = torch.topk(exact, min(k, len(cand)))
            sc = torch.full((k,), float("-inf"), device=self.device)
            rows = torch.full((k,), -1, dtype=torch.long, device=self.device)
            sc[:len(top.values)] = top.values
            rows[:len(top.values)] = self.perm[cand[top.indices]]
            out_s.append(sc)
            out_r.append(rows)
        scores, rows = torch.stack(out_s), torch.stack(out_r)
        return scores, torch.where(torch.isinf(scores), torch.full_like(rows, -1), rows)
