"""A Milvus collection behind the SearchIndex interface, for galleries beyond one host.

The SQL database stays the source of truth: the collection holds (template id, vector) only and is
rebuilt from the store with `build`. `save`/`load` write and read a small JSON that names the server and
collection plus the index metadata; the vectors live in Milvus. Works with milvus-lite (a local file URI,
used by the tests) and with a Milvus server (`http://host:19530`). Needs the `milvus` extra (pymilvus).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from facerec.errors import SearchIndexError
from facerec.index.faiss_index import IndexMeta
from facerec.index.storage import write_atomic

MILVUS_INDEX = {"flat": ("FLAT", {}), "ivf": ("IVF_FLAT", {"nlist": 1024}), "hnsw": ("HNSW", {"M": 32, "efConstruction": 200})}
MILVUS_SEARCH = {"flat": {}, "ivf": {"nprobe": 32}, "hnsw": {"ef": 128}}
BATCH = 10_000


def _client(uri: str):
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise SearchIndexError("the Milvus backend needs pymilvus: pip install 'facerec[milvus]'") from None
    try:
        return MilvusClient(uri)
    except Exception as exc:  # pymilvus raises its own exception types for every connection problem
        raise SearchIndexError(f"cannot reach Milvus at {uri}: {str(exc).splitlines()[0]}") from None


class MilvusIndex:
    """Template ids and vectors in one Milvus collection; inner product on unit vectors = cosine."""

    def __init__(self, uri: str, collection: str, dim: int, kind: str = "flat") -> None:
        if kind not in MILVUS_INDEX:
            raise SearchIndexError(f"Milvus index kind {kind!r} is not supported (choose from {', '.join(MILVUS_INDEX)})")
        self.uri, self.collection, self.dim, self.kind = uri, collection, dim, kind
        self.client = _client(uri)

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, dim: int, kind: str = "flat", *,
              uri: str, collection: str = "facerec_templates") -> "MilvusIndex":
        """(Re)create the collection from (ids, vectors): what was there before is dropped."""
        from pymilvus import DataType

        index = cls(uri, collection, dim, kind)
        c = index.client
        if c.has_collection(collection):
            c.drop_collection(collection)
        schema = c.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=dim)
        params = c.prepare_index_params()
        index_type, build_params = MILVUS_INDEX[kind]
        params.add_index("v", index_type=index_type, metric_type="IP", params=build_params)
        c.create_collection(collection, schema=schema, index_params=params, consistency_level="Strong")
        index.add(ids, vectors)
        return index

    @property
    def ntotal(self) -> int:
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64).ravel()
        vectors = np.asarray(vectors, np.float32).reshape(len(ids), self.dim)
        for s in range(0, len(ids), BATCH):
            self.client.upsert(self.collection, [{"id": int(i), "v": v} for i, v in
                                                 zip(ids[s:s + BATCH], vectors[s:s + BATCH].tolist())])

    def remove(self, ids: np.ndarray) -> bool:
        ids = [int(i) for i in np.asarray(ids, np.int64).ravel()]
        if ids:
            self.client.delete(self.collection, ids=ids)
        return True

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.asarray(queries, np.float32).reshape(-1, self.dim)
        k = max(1, int(k))
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        for s in range(0, len(queries), BATCH):
            hits = self.client.search(self.collection, data=queries[s:s + BATCH].tolist(), limit=k, anns_field="v",
                                      output_fields=["id"],
                                      search_params={"metric_type": "IP", "params": MILVUS_SEARCH[self.kind]})
            for row, found in enumerate(hits, start=s):
                for col, hit in enumerate(found[:k]):
                    scores[row, col], ids[row, col] = hit["distance"], hit["id"]
        return scores, ids

    def save(self, path: Path, meta: IndexMeta) -> None:
        """Record where the gallery lives and what it was built for (the vectors stay in Milvus)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(Path(path), json.dumps({"format": "facerec-milvus-1", "uri": self.uri,
                                             "collection": self.collection, "dim": self.dim, "kind": self.kind,
                                             "meta": asdict(meta)}).encode())

    @classmethod
    def load(cls, path: Path) -> tuple["MilvusIndex", IndexMeta]:
        try:
            raw = json.loads(Path(path).read_bytes())
            if raw.pop("format") != "facerec-milvus-1":
                raise ValueError("not a facerec Milvus index file")
            index = cls(raw["uri"], raw["collection"], raw["dim"], raw["kind"])
        except (OSError, ValueError, KeyError) as exc:
            raise SearchIndexError(f"{path}: not a facerec Milvus index file ({exc})") from None
        if not index.client.has_collection(index.collection):
            raise SearchIndexError(f"Milvus at {index.uri} has no collection {index.collection!r}: rebuild it")
        return index, IndexMeta.from_dict(raw["meta"])

    def close(self) -> None:
        self.client.close()
