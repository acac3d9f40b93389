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

    @torch.inference_mode()
    def search_tensor(self, q32: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.n
        short = min(n, max(k, k * self.shortlist))
        step = max(1, SCORE_BYTES // (2 * max(n, 1)))
        out_s, out_r = [], []
        x16, x32 = self.x16[:n], self.x32[:n]
        for i in range(0, len(q32), step):
            q = q32[i:i + step]
            s = q.half() @ x16.T
            if self._dead_mask is not None:
                s.masked_fill_(self._dead_mask[:n], float("-inf"))
            rows = torch.topk(s, short, dim=1, sorted=False).indices
            exact = torch.bmm(x32[rows], q.unsqueeze(2)).squeeze(2)
            if self._dead_mask is not None:
                exact.masked_fill_(self._dead_mask[rows], float("-inf"))
            top = torch.topk(exact, min(k, short), dim=1)
            out_s.append(top.values)
            out_r.append(torch.gather(rows, 1, top.indices))
        scores, rows = torch.cat(out_s), torch.cat(out_r)
        return scores, torch.where(torch.isinf(scores), torch.full_like(rows, -1), rows)
