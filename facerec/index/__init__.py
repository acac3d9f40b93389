"""1:K search over enrolled templates, rebuilt from the store (the truth) whenever needed.

- `SearchIndex.build(ids, vectors, dim, kind)`: kind 'auto' picks by gallery size and hardware from
  data/index.json (flat, HNSW, IVF, IVF-SQ8/PQ, HNSW / IVF-SQ8 in the templates' principal subspace, with
  exact re-ranking on CPU; torch int8 scan + exact re-score, or torch IVF, on a GPU); every returned score is
  the exact cosine. Incremental add/remove, memory-mapped files, append-only saves: see faiss_index.py and
  storage.py.
- Several GPUs: `ShardedIndex.split(ids, vectors, n, lambda s, i, v: SearchIndex.build(i, v, dim, "torch",
  device=f"cuda:{s}"))` (one slice a GPU, merged by score) or `ReplicatedIndex([...])` for throughput.
- Beyond one host: `facerec.index.milvus_index.MilvusIndex` (the `milvus` extra).
"""

from facerec.index.faiss_index import IndexMeta, SearchIndex
from facerec.index.merge import ReplicatedIndex, ShardedIndex, merge_topk
from facerec.index.policy import INDEX_KINDS, make_plan

__all__ = ["INDEX_KINDS", "IndexMeta", "ReplicatedIndex", "SearchIndex", "ShardedIndex", "make_plan", "merge_topk"]
