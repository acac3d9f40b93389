"""Cosine (normalised inner product) search keyed by template id, with a self-checking file format.

The file is the faiss index followed by a JSON footer (model id, dimension, kind, the store's template
generation and token, its database id, the number of vectors and a SHA-256 of the index bytes). Written
to a temporary file and renamed, so a crash leaves the old file or the new one, never half of one. Which
file to trust, and when to rebuild it from the store, is the gallery's decision (facerec/gallery.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from facerec.errors import SearchIndexError
from facerec.io.files import private_dir

log = logging.getLogger("facerec")

INDEX_KINDS = ("flat", "hnsw", "ivfpq")
PARAMS_FILE = Path(__file__).resolve().parent.parent / "data" / "index.json"
MAGIC = b"FACEREC-INDEX-1\n"


def index_params() -> dict:
    return json.loads(PARAMS_FILE.read_text())


@dataclass(frozen=True)
class IndexMeta:
    model_id: str
    dim: int
    kind: str  # as requested; IVF-PQ falls back to flat on tiny galleries
    generation: int
    count: int
    built_kind: str
    database_id: str = ""  # the store's database id: an index from another database is never trusted
    token: str = ""  # the store's templates token at `generation`


class SearchIndex:
    """A faiss `IndexIDMap2` over unit vectors; scores are cosine similarities."""

    def __init__(self, dim: int, kind: str = "flat", index: faiss.Index | None = None) -> None:
        if kind not in INDEX_KINDS:
            raise SearchIndexError(f"unknown index kind {kind!r} (choose from {', '.join(INDEX_KINDS)})")
        self.dim = dim
        self.kind = kind
        self.index = index if index is not None else self._empty(dim, kind)
        self._gpu_index = None

    @staticmethod
    def _empty(dim: int, kind: str, n_expected: int = 0) -> faiss.Index:
        params = index_params()
        if kind == "hnsw":
            p = params["hnsw"]
            inner = faiss.IndexHNSWFlat(dim, p["M"], faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = p["efConstruction"]
            inner.hnsw.efSearch = p["efSearch"]
        elif kind == "ivfpq":
            p = params["ivfpq"]
            nlist = int(min(p["max_nlist"], max(p["min_nlist"], p["nlist_per_sqrt_n"] * math.sqrt(max(n_expected, 1)))))
            m = max(1, dim // p["pq_dims_per_code"])
            while dim % m:
                m -= 1
            inner = faiss.index_factory(dim, f"IVF{nlist},PQ{m}", faiss.METRIC_INNER_PRODUCT)
            faiss.extract_index_ivf(inner).nprobe = p["nprobe"]
        else:
            inner = faiss.IndexFlatIP(dim)
        return faiss.IndexIDMap2(inner)

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, dim: int, kind: str = "flat") -> "SearchIndex":
        """Build from scratch; IVF-PQ is trained on the vectors (too few to train → exact search, warned)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim)
        if kind == "ivfpq":
            p = index_params()["ivfpq"]
            index = cls._empty(dim, kind, len(vectors))
            nlist = faiss.extract_index_ivf(index.index).nlist
            if len(vectors) < max(nlist * p["min_train_per_list"], 256):
                log.warning("only %d templates: too few to train IVF-PQ, using exact (flat) search", len(vectors))
                kind, index = "flat", cls._empty(dim, "flat")
            else:
                index.train(vectors)
            built = cls(dim, kind, index)
        else:
            built = cls(dim, kind)
        built.add(ids, vectors)
        return built

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        self.index.add_with_ids(
            np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim),
            np.ascontiguousarray(ids, dtype=np.int64),
        )
        self._gpu_index = None

    def remove(self, ids: np.ndarray) -> bool:
        """Remove ids; False when the index kind cannot remove (HNSW), so the caller rebuilds."""
        if self.kind == "hnsw":
            return False
        self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
        self._gpu_index = None
        return True

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, template ids) per query; missing neighbours have id -1."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(1, min(int(k), max(self.ntotal, 1)))
        if self.ntotal == 0:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        return self._searcher().search(queries, k)

    def _searcher(self) -> faiss.Index:
        """The index on all GPUs when faiss has any (exact and IVF kinds), else the CPU index."""
        if self.kind == "hnsw" or not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() == 0:
            return self.index
        if self._gpu_index is None:
            self._gpu_index = faiss.index_cpu_to_all_gpus(self.index)
        return self._gpu_index

    # --- persistence -----------------------------------------------------------------------------
    def save(self, path: Path, meta: IndexMeta) -> None:
        payload = faiss.serialize_index(self.index).tobytes()
        footer = json.dumps({**meta.__dict__, "sha256": hashlib.sha256(payload).hexdigest()}).encode()
        private_dir(path.parent)
        # the writer's pid in the name: a reader cleaning up crash leftovers spares a file being written (0600)
        fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(MAGIC + len(footer).to_bytes(8, "little") + footer + payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> tuple["SearchIndex", IndexMeta]:
        """Read and verify a file; raises SearchIndexError on any damage."""
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise SearchIndexError(f"{path}: cannot read index ({exc.strerror})") from None
        if not blob.startswith(MAGIC):
            raise SearchIndexError(f"{path}: not a facerec index file")
        start = len(MAGIC) + 8
        try:
            size = int.from_bytes(blob[len(MAGIC):start], "little")
            footer = json.loads(blob[start:start + size])
            payload = blob[start + size:]
            if hashlib.sha256(payload).hexdigest() != footer.pop("sha256"):
                raise ValueError("checksum mismatch")
            meta = IndexMeta(**footer)
            index = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
            if meta.built_kind not in INDEX_KINDS:
                raise ValueError(f"unknown index kind {meta.built_kind!r}")
        except Exception as exc:
            raise SearchIndexError(f"{path}: corrupt index file ({exc})") from None
        if index.ntotal != meta.count or index.d != meta.dim:
            raise SearchIndexError(f"{path}: index contents disagree with its header")
        return cls(meta.dim, meta.built_kind, index), meta
