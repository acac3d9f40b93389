"""FAISS search over enrolled templates, rebuilt from the store whenever it is missing, stale or corrupt."""

from facerec.index.faiss_index import INDEX_KINDS, SearchIndex, open_index

__all__ = ["INDEX_KINDS", "SearchIndex", "open_index"]
