"""Cosine (normalised inner product) 1:K search keyed by template id, with exact scores for the top k.

Rows, not template ids, are what the search structure knows: row r holds `ids[r]` and `vectors[r]`.
Rows [0, base) come from the last compaction (memory-mapped from disk after a load, searched through the
faiss structure the plan names); rows [base, n) were added since and sit in a small exact "tail" that is
searched beside it and merged by score. Removal marks rows deleted (a faiss IDSelector filters them out
of every search, HNSW included); compaction folds the tail in and drops deleted rows once they pass the
thresholds in data/index.json, and a trained (IVF) index is retrained from the stored templates when the
gallery has grown past `retrain_growth` times its training size. Lossy codes (SQ8, PQ) and searches in
the templates' principal subspace (pca* kinds) are re-ranked exactly from the full vectors, so every returned
score is the exact cosine that thresholds were calibrated on (float16-stored vectors: within ~1e-3).
Files: see storage.py.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import faiss
import numpy as np

from facerec.errors import SearchIndexError
from facerec.io.files import private_dir
from facerec.index import storage
from facerec.index.merge import merge_topk
from facerec.index.policy import INDEX_KINDS, Plan, index_params, make_plan, needs_retrain, train_sample_size

log = logging.getLogger("facerec")


@dataclass(frozen=True)
class IndexMeta:
    model_id: str
    dim: int
    kind: str  # as requested ('auto' or an explicit kind)
    generation: int
    count: int
    built_kind: str  # what the plan resolved to for this gallery (see the manifest for factory/params)
    database_id: str = ""  # the store's database id: an index from another database is never trusted
    token: str = ""  # the store's templates token at `generation`

    @classmethod
    def from_dict(cls, d: dict) -> "IndexMeta":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class _Rows:
    """Growable float32/int64 row storage: a (possibly memory-mapped) base plus an in-memory tail."""

    def __init__(self, dim: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.dim = dim
        self.base_ids, self.base_vectors = ids, vectors
        self._tail_ids = np.empty(0, np.int64)
        self._tail_vectors = np.empty((0, dim), np.float32)
        self.tail_n = 0

    @property
    def base(self) -> int:
        return len(self.base_ids)

    @property
    def n(self) -> int:
        return self.base + self.tail_n

    def append(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        need = self.tail_n + len(ids)
        if need > len(self._tail_ids):
            cap = max(need, 2 * len(self._tail_ids), 1024)
            self._tail_ids = np.resize(self._tail_ids, cap)
            grown = np.empty((cap, self.dim), np.float32)
            grown[:self.tail_n] = self._tail_vectors[:self.tail_n]
            self._tail_vectors = grown
        self._tail_ids[self.tail_n:need] = ids
        self._tail_vectors[self.tail_n:need] = vectors
        self.tail_n = need

    @property
    def tail_ids(self) -> np.ndarray:
        return self._tail_ids[:self.tail_n]

    @property
    def tail_vectors(self) -> np.ndarray:
        return self._tail_vectors[:self.tail_n]

    def ids(self, rows: np.ndarray) -> np.ndarray:
        out = np.full(rows.shape, -1, np.int64)
        base, tail = (rows >= 0) & (rows < self.base), rows >= self.base
        out[base] = self.base_ids[rows[base]]
        out[tail] = self.tail_ids[rows[tail] - self.base]
        return out

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        flat = rows.ravel()
        out = np.zeros((len(flat), self.dim), np.float32)
        base, tail = (flat >= 0) & (flat < self.base), flat >= self.base
        if base.any():  # sorted reads are kinder to a memory-mapped file
            order = np.argsort(flat[base])
            picked = np.empty((int(base.sum()), self.dim), np.float32)
            picked[order] = self.base_vectors[flat[base][order]]
            out[base] = picked
        out[tail] = self.tail_vectors[flat[tail] - self.base]
        return out.reshape(*rows.shape, self.dim)

    def all_ids(self) -> np.ndarray:
        return np.concatenate([np.asarray(self.base_ids), self.tail_ids])

    def all_vectors(self, rows: np.ndarray | None = None) -> np.ndarray:
        if rows is None:
            return np.concatenate([np.asarray(self.base_vectors), self.tail_vectors])
        return self.vectors(rows)


PROJECTION_SAMPLE = 200_000  # templates that estimate the principal subspace (192x192 second moment)


def _projection(sample: np.ndarray, energy: float, multiple: int = 8) -> faiss.LinearTransform:
    """Orthonormal projection P onto the top eigenvectors of the templates' second moment holding `energy`.

    Uncentred on purpose: then q.x = Pq.Px + q.(I - P'P)x, and the last term is as small as the energy
    left out, so inner-product ranking survives (a centred PCA would add a per-template offset). An
    embedder whose templates span fewer dimensions than it outputs (MobileFaceNet: 64 of 192 hold
    99.9998 %) is searched 3x cheaper; a full-rank one keeps (nearly) every dimension."""
    s = sample.astype(np.float64)
    w, v = np.linalg.eigh(s.T @ s)
    w, v = np.clip(w[::-1], 0, None), v[:, ::-1]
    keep = int(np.searchsorted(np.cumsum(w) / max(w.sum(), 1e-30), energy)) + 1
    keep = min(len(w), -(-keep // multiple) * multiple)
    transform = faiss.LinearTransform(len(w), keep, False)
    faiss.copy_array_to_vector(np.ascontiguousarray(v[:, :keep].T, np.float32).ravel(), transform.A)
    transform.is_trained = True
    return transform


def _stored(vectors: np.ndarray, plan: Plan) -> np.ndarray:
    """Re-ranking vectors in the dtype the plan keeps them in (float32 unless it says float16)."""
    return vectors if vectors.dtype == np.dtype(plan.store) else vectors.astype(plan.store)


class _FaissSearcher:
    """The faiss structure over base rows plus an exact flat index over the tail."""

    def __init__(self, plan: Plan, dim: int, structure: faiss.Index | None = None) -> None:
        self.plan, self.dim = plan, dim
        self.structure = structure if structure is not None else faiss.IndexFlatIP(dim)
        self.tail = faiss.IndexFlatIP(dim)
        self.writable = True
        self.path: Path | None = None
        self._cache_key: np.ndarray | None = None
        self._cache: tuple = (None, None)

    @classmethod
    def build(cls, plan: Plan, dim: int, vectors: np.ndarray, seed: int = 0) -> "_FaissSearcher":
        sample = vectors
        want = train_sample_size(plan.nlist) if plan.trained else PROJECTION_SAMPLE
        if len(vectors) > want and (plan.trained or plan.project):
            sample = vectors[np.sort(np.random.default_rng(seed).choice(len(vectors), want, False))]
        sample = np.ascontiguousarray(sample, np.float32)
        projection = _projection(sample, plan.project) if plan.project else None
        inner_dim = projection.d_out if projection is not None else dim
        structure = inner = faiss.index_factory(inner_dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
        if "efConstruction" in plan.search:
            inner.hnsw.efConstruction = plan.search["efConstruction"]
        if "kmeans_niter" in plan.search:  # k-means iterations (faiss: 25) when training is the build's cost
            inner.cp.niter = int(plan.search["kmeans_niter"])
        if hasattr(inner, "do_polysemous_training"):
            inner.do_polysemous_training = False  # 35x the training time, for a filter we do not use
        if projection is not None:
            structure = faiss.IndexPreTransform(projection, inner)  # keeps Python references to both
        if plan.trained:
            structure.train(sample)
        for start in range(0, len(vectors), 1 << 18):  # chunks: a memory-mapped source is never copied whole
            structure.add(np.ascontiguousarray(vectors[start:start + (1 << 18)], np.float32))
        return cls(plan, dim, structure)

    def add_tail(self, vectors: np.ndarray) -> None:
        self.tail.add(np.ascontiguousarray(vectors, np.float32))

    def search(self, queries: np.ndarray, k: int, dead: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k alive rows of base structure and tail (`dead`: sorted deleted rows), merged by score."""
        if self._cache_key is not dead:  # selectors are built once per change, not per search
            self._cache_key = dead
            self._cache = (self._params(dead[dead < base], False), self._params(dead[dead >= base] - base, True))
        parts_s, parts_r = [], []
        for index, offset, params in ((self.structure, 0, self._cache[0]), (self.tail, base, self._cache[1])):
            if index.ntotal == 0:
                continue
            s, r = index.search(queries, min(k, index.ntotal), params=params)
            parts_s.append(s)
            parts_r.append(np.where(r >= 0, r + offset, -1))
        if len(parts_s) == 1:
            return parts_s[0], parts_r[0]
        return merge_topk(parts_s, parts_r, k)

    def _params(self, dead_rows: np.ndarray, tail: bool) -> faiss.SearchParameters | None:
        sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(dead_rows)) if len(dead_rows) else None
        search = self.plan.search
        if tail or ("nprobe" not in search and "efSearch" not in search):
            if sel is None:
                return None
            params = faiss.SearchParameters(sel=sel)
        elif "nprobe" in search:
            params = faiss.SearchParametersIVF(nprobe=int(search["nprobe"]), sel=sel)
            if "quantizer_efSearch" in search:  # an HNSW coarse quantizer
                params.quantizer_params = quantizer = faiss.SearchParametersHNSW(efSearch=int(search["quantizer_efSearch"]))
                params.keep_quantizer = quantizer
        else:
            params = faiss.SearchParametersHNSW(efSearch=int(search["efSearch"]), sel=sel)
        params.keep_alive = sel  # the C++ selector must outlive the search
        return params

    def save(self, path: Path) -> None:
        faiss.write_index(self.structure, str(path))
        os.chmod(path, 0o600)  # embeddings-derived: the owner's only

    @classmethod
    def load(cls, plan: Plan, dim: int, path: Path) -> "_FaissSearcher":
        flag = faiss.IO_FLAG_MMAP if plan.trained else faiss.IO_FLAG_MMAP_IFC
        try:
            structure = faiss.read_index(str(path), flag)
        except RuntimeError as exc:
            raise SearchIndexError(f"{path}: unreadable faiss index ({str(exc).splitlines()[0]})") from None
        searcher = cls(plan, dim, structure)
        searcher.writable = False  # memory-mapped: folding the tail in means reading it into memory
        searcher.path = path
        return searcher

    def fold(self, vectors: np.ndarray) -> None:
        """Move tail rows into the structure (graph / inverted lists grow in place)."""
        if not self.writable:
            try:
                self.structure = faiss.read_index(str(self.path))
            except RuntimeError as exc:  # another process compacted and deleted the parts we had mapped
                raise SearchIndexError(f"{self.path}: cannot re-read the index to grow it "
                                       f"({str(exc).splitlines()[0]})") from None
            self.writable = True
        for start in range(0, len(vectors), 1 << 18):
            self.structure.add(np.ascontiguousarray(vectors[start:start + (1 << 18)], np.float32))
        self.tail.reset()
        self._cache_key = None


TORCH_KINDS = ("torch", "torchivf")
RETRAIN, COMPACT = "retrain", "compact"


def _trained_copy(searcher: _FaissSearcher, empty: bool) -> faiss.Index:
    """A private in-memory copy of a faiss structure (from its file when memory-mapped), emptied or not."""
    structure = searcher.structure if searcher.writable else faiss.read_index(str(searcher.path))
    copy = faiss.clone_index(structure) if structure is searcher.structure else structure
    if empty:
        copy.reset()
    return copy


@dataclass
class _Snapshot:
    why: str
    n: int  # rows at the snapshot
    deleted: np.ndarray
    base_ids: np.ndarray
    base_vectors: np.ndarray
    tail_ids: np.ndarray
    tail_vectors: np.ndarray
    keep: np.ndarray  # alive rows
    plan: Plan
    searcher: object


@dataclass
class _Built:
    snapshot: _Snapshot
    plan: Plan
    searcher: object
    ids: np.ndarray
    vectors: np.ndarray
    trained_rows: int


def _torch_searcher(kind: str):
    from facerec.index import torch_search  # imports torch: only for the torch kinds

    return torch_search.TorchIVFSearcher if kind == "torchivf" else torch_search.TorchSearcher


class SearchIndex:
    """A gallery's 1:K search. Scores are exact cosines; ids are template ids, -1 where fewer than k exist."""

    def __init__(self, dim: int, plan: Plan, requested: str, rows: _Rows, searcher, trained_rows: int,
                 gpus: int = 0, device: str | None = None) -> None:
        self.dim, self.plan, self.requested, self.gpus, self.device = dim, plan, requested, gpus, device
        self._rows, self._searcher, self.trained_rows = rows, searcher, trained_rows
        self._deleted = np.zeros(rows.n, bool)
        self._dead = np.empty(0, np.int64)  # sorted deleted rows; a new array on every change
        self._lookup: tuple[np.ndarray, np.ndarray] | None = None  # (sorted base ids, their rows)
        self._pending: list[tuple[bytes, bytes, int]] = []  # log records not yet on disk
        self._saved: tuple[Path, storage.Manifest] | None = None
        # True: add/remove compact and retrain in the caller's thread when due. The gallery sets False and
        # runs `snapshot` -> `build_from` -> `install` in a background thread instead (see Gallery).
        self.auto_maintain = True

    # --- building ---------------------------------------------------------------------------------
    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, dim: int, kind: str = "flat",
              gpus: int = 0, device: str | None = None) -> "SearchIndex":
        """Build from scratch with the plan `kind` resolves to for this many vectors (IVF trained on them).

        `gpus`: how many GPUs this process may use (the auto table differs); `device`: where the torch
        kind lives (default the first GPU if any, else the CPU)."""
        if kind not in INDEX_KINDS:
            raise SearchIndexError(f"unknown index kind {kind!r} (choose from {', '.join(INDEX_KINDS)})")
        ids = np.ascontiguousarray(ids, np.int64).ravel()
        plan = make_plan(kind, len(ids), dim, gpus)
        vectors = _stored(np.asarray(vectors).reshape(-1, dim), plan)  # a float16 memory map stays one
        if len(ids) != len(vectors):
            raise SearchIndexError(f"{len(ids)} ids for {len(vectors)} vectors")
        return cls(dim, plan, kind, _Rows(dim, ids, vectors),
                   cls._make_searcher(plan, dim, vectors, gpus, device), len(ids), gpus, device)

    @staticmethod
    def _make_searcher(plan: Plan, dim: int, vectors: np.ndarray, gpus: int, device: str | None = None):
        if plan.kind in TORCH_KINDS:
            return _torch_searcher(plan.kind).build(plan, dim, vectors, gpus, device)
        return _FaissSearcher.build(plan, dim, vectors)

    @property
    def kind(self) -> str:
        return self.plan.kind

    @property
    def ntotal(self) -> int:
        return self._rows.n - len(self._dead)

    def describe(self) -> dict:
        """The plan in force, for metadata and logs."""
        return {**self.plan.to_dict(), "requested": self.requested, "trained_rows": self.trained_rows,
                "rows": self._rows.n, "deleted": len(self._dead), "tail": self._rows.tail_n}

    # --- changes ----------------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, np.int64).ravel()
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, np.float32).reshape(len(ids), self.dim)
        self._rows.append(ids, vectors)
        self._searcher.add_tail(vectors)
        self._deleted = np.concatenate([self._deleted, np.zeros(len(ids), bool)])
        self._pending.append(storage.add_record(ids, vectors))
        if self.auto_maintain and (why := self.maintenance_due()):
            self.rebuild(why) if why == RETRAIN else self.compact()

    def remove(self, ids: np.ndarray) -> bool:
        """Mark the rows of these template ids deleted (compacted later); always True."""
        rows = self._rows_of(np.asarray(ids, np.int64).ravel())
        if len(rows):
            self._mark_deleted(rows)
            self._pending.append(storage.del_record(self._rows.ids(rows)))
            if self.auto_maintain and self.maintenance_due():
                self.compact()
        return True

    def maintenance_due(self) -> str | None:
        """Why the structure should be rebuilt now (RETRAIN: outgrew its plan or training; COMPACT: the
        exact tail or the deleted rows passed their thresholds in data/index.json), or None."""
        if needs_retrain(self.plan, self.trained_rows, self.ntotal, self.requested, self.dim, self.gpus):
            return RETRAIN
        if self._rows.tail_n > self._compact_rule("tail_rows_min", "tail_fraction") or \
                len(self._dead) > index_params()["compact"]["deleted_fraction"] * max(self._rows.n, 1):
            return COMPACT
        return None

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Which of these template ids have an alive row."""
        ids = np.asarray(ids, np.int64).ravel()
        return np.isin(ids, self._rows.ids(self._rows_of(ids)))

    def _mark_deleted(self, rows: np.ndarray) -> None:
        self._deleted[rows] = True
        self._dead = np.flatnonzero(self._deleted).astype(np.int64)

    def _compact_rule(self, rows_key: str, fraction_key: str) -> float:
        c = index_params()["compact"]
        return max(c[rows_key], c[fraction_key] * self._rows.base)

    def _rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Alive rows holding these template ids: binary search in the base, a scan of the small tail."""
        if self._lookup is None:
            base_ids = np.asarray(self._rows.base_ids)
            order = np.argsort(base_ids, kind="stable")
            self._lookup = (base_ids[order], order)
        sorted_ids, order = self._lookup
        lo = np.searchsorted(sorted_ids, ids, "left")
        hi = np.searchsorted(sorted_ids, ids, "right")
        rows = np.concatenate([order[a:b] for a, b in zip(lo, hi)] +
                              [np.flatnonzero(np.isin(self._rows.tail_ids, ids)) + self._rows.base]).astype(np.int64)
        return rows[~self._deleted[rows]]

    def compact(self) -> None:
        """Fold the tail into the structure; drop deleted rows (a rebuild of the structure, not a retrain)."""
        if len(self._dead):
            self.rebuild("deleted templates are compacted", retrain=False)
            return
        if self._rows.tail_n == 0:
            return
        self._searcher.fold(self._rows.tail_vectors)
        ids = self._rows.all_ids()
        self._rows = _Rows(self.dim, ids, _stored(self._rows.all_vectors(), self.plan))
        self._lookup = None
        self._saved = None  # the next save writes the compacted base

    def rebuild(self, why: str, retrain: bool = True) -> None:
        """Rebuild the structure from the alive rows (retrained unless `retrain` is False and it can reuse)."""
        keep = np.flatnonzero(~self._deleted)
        ids = self._rows.all_ids()[keep]
        vectors = self._rows.all_vectors(keep)
        log.info("index: rebuilding %s over %d templates (%s)", self.plan.kind, len(ids), why)
        plan = make_plan(self.requested, len(ids), self.dim, self.gpus) if retrain else self.plan
        if not retrain and plan.trained and hasattr(self._searcher, "structure"):
            searcher = _FaissSearcher(plan, self.dim, self._trained_empty())
            searcher.fold(vectors)
        else:
            searcher = self._make_searcher(plan, self.dim, vectors, self.gpus, self.device)
            self.trained_rows = len(ids)
        self.plan, self._searcher = plan, searcher
        self._rows = _Rows(self.dim, ids, _stored(vectors, plan))
        self._deleted = np.zeros(len(ids), bool)
        self._dead = np.empty(0, np.int64)
        self._lookup = None
        self._pending = []
        self._saved = None  # rows were renumbered: the next save writes a new base

    def _trained_empty(self) -> faiss.Index:
        """A copy of the trained IVF structure with empty inverted lists (centroids and codec kept)."""
        structure = self._searcher.structure
        if not self._searcher.writable:
            structure = faiss.read_index(str(self._searcher.path))
        empty = faiss.clone_index(structure)
        empty.reset()
        return empty

    # --- rebuilding beside a live index (the gallery's background worker) --------------------------
    def snapshot(self, why: str) -> "_Snapshot":
        """What a rebuild starts from: the alive rows now. Cheap: views, not copies (rows are only ever
        appended after the tail's end, and a grown tail is a new buffer), and a copy of the deleted mask.
        Call under the owner's lock."""
        keep = np.flatnonzero(~self._deleted)
        return _Snapshot(why, self._rows.n, self._deleted.copy(), self._rows.base_ids, self._rows.base_vectors,
                         self._rows.tail_ids, self._rows.tail_vectors, keep, self.plan, self._searcher)

    def build_from(self, snap: "_Snapshot") -> "_Built":
        """The new structure over the snapshot's alive rows; no lock needed, searches go on meanwhile.

        RETRAIN builds the plan the gallery's size calls for (IVF retrained); COMPACT keeps the plan: a
        trained structure is refilled (centroids kept), an untrained one is rebuilt from the alive rows, or,
        when nothing was deleted, a copy of it gets the tail (the live structure is never written)."""
        base = len(snap.base_ids)
        in_base, in_tail = snap.keep[snap.keep < base], snap.keep[snap.keep >= base] - base
        ids = np.concatenate([np.asarray(snap.base_ids)[in_base], snap.tail_ids[in_tail]])
        vectors = np.concatenate([snap.base_vectors[in_base], snap.tail_vectors[in_tail]])  # sorted reads
        log.info("index: building %s over %d templates beside the live index (%s)", self.plan.kind, len(ids), snap.why)
        plan = make_plan(self.requested, len(ids), self.dim, self.gpus) if snap.why == RETRAIN else snap.plan
        old = snap.searcher
        trained_rows = self.trained_rows
        if snap.why == RETRAIN or plan != snap.plan or plan.kind in TORCH_KINDS or not isinstance(old, _FaissSearcher):
            searcher, trained_rows = self._make_searcher(plan, self.dim, vectors, self.gpus, self.device), len(ids)
        elif plan.trained:
            searcher = _FaissSearcher(plan, self.dim, _trained_copy(old, empty=True))
            searcher.fold(vectors)
        elif snap.deleted.any():
            searcher = _FaissSearcher.build(plan, self.dim, vectors)
        else:  # only a tail to fold in: grow a copy of the structure (an HNSW graph is not rebuilt)
            searcher = _FaissSearcher(plan, self.dim, _trained_copy(old, empty=False))
            searcher.fold(snap.tail_vectors)
        return _Built(snap, plan, searcher, ids, vectors, trained_rows)

    def install(self, built: "_Built") -> None:
        """Swap the built structure in (call under the owner's lock): rows added since the snapshot go to the
        new exact tail, templates removed since are marked deleted again. The next save writes a new base."""
        snap = built.snapshot
        later = np.arange(snap.n, self._rows.n)
        later_ids, later_vectors = self._rows.ids(later), self._rows.vectors(later)
        later_dead = self._deleted[snap.n:]
        gone_ids = self._rows.ids(np.flatnonzero(self._deleted[:snap.n] & ~snap.deleted))
        self.plan, self._searcher, self.trained_rows = built.plan, built.searcher, built.trained_rows
        self._rows = _Rows(self.dim, built.ids, built.vectors)
        self._deleted = np.zeros(len(built.ids), bool)
        self._lookup = None
        if len(later):
            self._rows.append(later_ids, later_vectors)
            self._searcher.add_tail(later_vectors)
            self._deleted = np.concatenate([self._deleted, later_dead])
        order = np.argsort(built.ids, kind="stable")  # ids are unique among alive rows
        pos = np.searchsorted(built.ids, gone_ids, sorter=order)
        found = (pos < len(order)) & (built.ids[order[np.minimum(pos, len(order) - 1)]] == gone_ids)
        self._deleted[order[pos[found]]] = True
        self._dead = np.flatnonzero(self._deleted).astype(np.int64)
        self._pending = []
        self._saved = None  # rows were renumbered: the next save writes the new base

    # --- search -----------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (exact cosine scores, template ids) per query, best first; missing neighbours have id -1."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(1, int(k))
        if self.ntotal == 0:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        shortlist = min(k * self.plan.rerank, self._rows.n)
        scores, rows = self._searcher.search(queries, shortlist, self._dead, self._rows.base)
        if self.plan.rerank > 1:
            exact = np.einsum("qkd,qd->qk", self._rows.vectors(rows), queries)
            scores = np.where(rows >= 0, exact, -np.inf).astype(np.float32)
            order = np.argsort(-scores, axis=1, kind="stable")
            scores, rows = np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)
        scores, rows = scores[:, :k], rows[:, :k]
        if scores.shape[1] < k:
            scores = np.pad(scores, ((0, 0), (0, k - scores.shape[1])), constant_values=-np.inf)
            rows = np.pad(rows, ((0, 0), (0, k - rows.shape[1])), constant_values=-1)
        ids = self._rows.ids(rows)
        return np.where(ids >= 0, scores, -np.inf).astype(np.float32), ids

    # --- persistence ------------------------------------------------------------------------------
    def save(self, path: Path, meta: IndexMeta) -> None:
        """Persist: append the changes since the last save to the log, or write a new compacted base."""
        path = Path(path)
        private_dir(path.parent)  # biometric data: the folder is the owner's only
        manifest = self._saved[1] if self._saved and self._saved[0] == path else None
        if manifest is not None:
            try:
                on_disk = storage.Manifest.read(path)
            except SearchIndexError:
                on_disk = None
            if on_disk is None or (on_disk.tag, on_disk.log_bytes) != (manifest.tag, manifest.log_bytes):
                manifest = None  # someone else wrote it: write ours whole
        if manifest is None:
            self._write_base(path, meta)
            return
        log_path = storage.part(path, manifest.tag, "log")
        manifest.log_bytes = storage.append_log(log_path, manifest.log_bytes, self._pending)
        manifest.meta = asdict(meta) if not isinstance(meta, dict) else meta
        storage.write_atomic(path, manifest.dumps())
        self._pending = []

    def _write_base(self, path: Path, meta: IndexMeta) -> None:
        if self.auto_maintain:
            self.compact()
        tag, files = self.write_parts(path)
        self.commit_parts(path, meta, tag, files)

    def write_parts(self, path: Path) -> tuple[str, dict]:
        """Write the base (ids, vectors, faiss structure) under a fresh tag; nothing refers to it yet, so a
        background worker may do this outside its owner's lock. Returns the tag and the files' digests."""
        path = Path(path)
        private_dir(path.parent)
        tag = secrets.token_hex(6)
        names = {"ids": storage.part(path, tag, "ids.npy"), "vectors": storage.part(path, tag, "vectors.npy")}
        storage.save_npy(names["ids"], np.asarray(self._rows.base_ids))
        storage.save_rows(names["vectors"], [self._rows.base_vectors], self.plan.store)
        if isinstance(self._searcher, _FaissSearcher):
            names["structure"] = storage.part(path, tag, "faiss")
            self._searcher.save(names["structure"])
            self._searcher.path = names["structure"]  # the file a read-only (mmapped) structure reloads from
        return tag, {p.name: storage.file_digest(p) for p in names.values()}

    def commit_parts(self, path: Path, meta: IndexMeta, tag: str, files: dict) -> None:
        """Make the parts of `tag` the index: its log holds the rows deleted from the base and the tail
        (removals first: a renamed template's id comes back in the tail), then the manifest is replaced
        and other tags' parts are deleted."""
        path = Path(path)
        records = []
        if len(self._dead) and (base_dead := self._dead[self._dead < self._rows.base]).size:
            records.append(storage.del_record(self._rows.ids(base_dead)))
        if self._rows.tail_n:
            alive = np.flatnonzero(~self._deleted[self._rows.base:])
            records.append(storage.add_record(self._rows.tail_ids[alive], self._rows.tail_vectors[alive]))
        log_bytes = storage.append_log(storage.part(path, tag, "log"), 0, records)
        manifest = storage.Manifest(
            meta=asdict(meta), tag=tag, kind=self.requested, factory=self.plan.factory, params=self.plan.to_dict(),
            dim=self.dim, base_rows=self._rows.base, trained_rows=self.trained_rows, log_bytes=log_bytes,
            files=files)
        storage.write_atomic(path, manifest.dumps())
        for old in path.parent.glob(f"{path.name}.*.*"):
            if old.name.split(".")[len(path.name.split("."))] not in (tag,) and not old.name.endswith(".tmp"):
                old.unlink(missing_ok=True)
        # from now on the base is read from the files just written (page cache, not private memory)
        self._rows.base_ids = storage.load_npy(storage.part(path, tag, "ids.npy"), mmap=True)
        self._rows.base_vectors = storage.load_npy(storage.part(path, tag, "vectors.npy"), mmap=True)
        self._pending = []
        self._saved = (path, manifest)

    @classmethod
    def load(cls, path: Path, gpus: int = 0, device: str | None = None) -> tuple["SearchIndex", IndexMeta]:
        """Open a saved index: manifest, cheap integrity check, memory-mapped base, replayed log."""
        path = Path(path)
        manifest = storage.Manifest.read(path)
        storage.verify_files(path.parent, manifest.files)
        plan = Plan.from_dict(manifest.params)
        ids = np.asarray(storage.load_npy(storage.part(path, manifest.tag, "ids.npy"), mmap=False))
        vectors = storage.load_npy(storage.part(path, manifest.tag, "vectors.npy"), mmap=True)
        if vectors.shape != (manifest.base_rows, manifest.dim) or len(ids) != manifest.base_rows:
            raise SearchIndexError(f"{path}: index arrays disagree with the manifest")
        if plan.kind in TORCH_KINDS:
            searcher = _torch_searcher(plan.kind).build(plan, manifest.dim, vectors, gpus, device)
        else:
            searcher = _FaissSearcher.load(plan, manifest.dim, storage.part(path, manifest.tag, "faiss"))
            if searcher.structure.ntotal != manifest.base_rows or searcher.structure.d != manifest.dim:
                raise SearchIndexError(f"{path}: faiss structure disagrees with the manifest")
        index = cls(manifest.dim, plan, manifest.kind, _Rows(manifest.dim, ids, vectors), searcher,
                    manifest.trained_rows, gpus, device)
        for op, rec_ids, rec_vectors in storage.read_log(storage.part(path, manifest.tag, "log"),
                                                         manifest.log_bytes, manifest.dim):
            if op == "ADD":
                index._rows.append(rec_ids, rec_vectors)
                index._searcher.add_tail(rec_vectors)
                index._deleted = np.concatenate([index._deleted, np.zeros(len(rec_ids), bool)])
            else:
                index._mark_deleted(index._rows_of(rec_ids))
        index._saved = (path, manifest)
        return index, IndexMeta.from_dict(manifest.meta)

    def verify(self, path: Path) -> None:
        """Full integrity check of a saved index's files (every chunk hashed); SearchIndexError if damaged."""
        manifest = storage.Manifest.read(Path(path))
        storage.verify_files(Path(path).parent, manifest.files, full=True)
