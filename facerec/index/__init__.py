"""1:K search over enrolled templates: faiss on CPU, torch on GPUs, shards/replicas, Milvus; rebuilt from the store."""

from facerec.index.faiss_index import IndexMeta, SearchIndex, open_index
from facerec.index.merge import ReplicatedIndex, ShardedIndex, merge_topk
from facerec.index.policy import INDEX_KINDS, make_plan

__all__ = ["INDEX_KINDS", "IndexMeta", "ReplicatedIndex", "SearchIndex", "ShardedIndex", "make_plan", "merge_topk",
           "open_index"]
