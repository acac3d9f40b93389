"""FAISS search over enrolled templates (the gallery decides when a file is trusted or rebuilt)."""

from facerec.index.faiss_index import INDEX_KINDS, IndexMeta, SearchIndex

__all__ = ["INDEX_KINDS", "IndexMeta", "SearchIndex"]
