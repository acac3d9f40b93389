"""Shards and replicas behind the SearchIndex interface; no faiss or torch here, so CPU CI tests the merge.

Shards: template id `i` lives in shard `i % n` (stable, so add and remove need no routing table); a search
asks every shard for its top k in parallel threads (faiss and torch release the GIL) and merges by score,
ties broken by template id so the answer does not depend on the shard count. Replicas: the same gallery
on several devices; a batch is split across them, a single query goes to the next one in turn.
"""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, Sequence

import numpy as np


class Searchable(Protocol):
    ntotal: int

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...
    def remove(self, ids: np.ndarray) -> bool: ...
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


def merge_topk(scores: Sequence[np.ndarray], ids: Sequence[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-part (n, k_i) results into one (n, k) by descending score, then ascending id; -1 pads."""
    s = np.concatenate(scores, axis=1).astype(np.float32, copy=False)
    i = np.concatenate(ids, axis=1).astype(np.int64, copy=False)
    s = np.where(i < 0, -np.inf, s)
    order = np.lexsort((np.where(i < 0, np.iinfo(np.int64).max, i), -s), axis=1)[:, :k]
    s, i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
    if s.shape[1] < k:
        pad = k - s.shape[1]
        s = np.pad(s, ((0, 0), (0, pad)), constant_values=-np.inf)
        i = np.pad(i, ((0, 0), (0, pad)), constant_values=-1)
    return s, i


class ShardedIndex:
    """One gallery split over several indexes (one a GPU, or CPU indexes in tests), merged by score."""

    def __init__(self, shards: Sequence[Searchable]) -> None:
        if not shards:
            raise ValueError("a sharded index needs at least one shard")
        self.shards = list(shards)
        self._pool = ThreadPoolExecutor(max_workers=len(self.shards)) if len(self.shards) > 1 else None

    @classmethod
    def split(cls, ids: np.ndarray, vectors: np.ndarray, n: int, make) -> "ShardedIndex":
        """Build `n` shards with `make(shard_number, ids, vectors)` from one (ids, vectors) set."""
        ids = np.asarray(ids, np.int64)
        return cls([make(s, ids[ids % n == s], vectors[ids % n == s]) for s in range(n)])

    @property
    def ntotal(self) -> int:
        return sum(s.ntotal for s in self.shards)

    def _each(self, fn, args: list) -> list:
        if self._pool is None:
            return [fn(*a) for a in args]
        return list(self._pool.map(lambda a: fn(*a), args))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, n = np.asarray(ids, np.int64), len(self.shards)
        vectors = np.asarray(vectors, np.float32).reshape(len(ids), -1)
        self._each(lambda s, m: s.add(ids[m], vectors[m]) if m.any() else None,
                   [(shard, ids % n == i) for i, shard in enumerate(self.shards)])

    def remove(self, ids: np.ndarray) -> bool:
        ids, n = np.asarray(ids, np.int64), len(self.shards)
        return all(self._each(lambda s, m: s.remove(ids[m]) if m.any() else True,
                              [(shard, ids % n == i) for i, shard in enumerate(self.shards)]))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        parts = self._each(lambda s: s.search(queries, k), [(s,) for s in self.shards])
        return merge_topk([p[0] for p in parts], [p[1] for p in parts], k)


class ReplicatedIndex:
    """The same gallery on several devices, for throughput: writes go to all, searches are spread."""

    def __init__(self, replicas: Sequence[Searchable]) -> None:
        if not replicas:
            raise ValueError("a replicated index needs at least one replica")
        self.replicas = list(replicas)
        self._pool = ThreadPoolExecutor(max_workers=len(self.replicas))
        self._next = itertools.cycle(range(len(self.replicas)))
        self._lock = threading.Lock()

    @property
    def ntotal(self) -> int:
        return self.replicas[0].ntotal

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        list(self._pool.map(lambda r: r.add(ids, vectors), self.replicas))

    def remove(self, ids: np.ndarray) -> bool:
        return all(self._pool.map(lambda r: r.remove(ids), self.replicas))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.asarray(queries, np.float32)
        queries = queries.reshape(-1, queries.shape[-1])
        if len(queries) < 2 * len(self.replicas):
            with self._lock:
                replica = self.replicas[next(self._next)]
            return replica.search(queries, k)
        parts = np.array_split(queries, len(self.replicas))
        out = list(self._pool.map(lambda rq: rq[0].search(rq[1], k), zip(self.replicas, parts)))
        return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])
