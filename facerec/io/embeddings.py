"""Precomputed embeddings for bulk enrollment: one file of names and vectors, checked before anything is written.

Formats (the model that made the vectors is declared in the file, never guessed):
- `.npz`: `names` (N strings), `embeddings` (N x D floats), `model_id` (a string), optional `dim` (D),
  `sources` (N source ids, e.g. photo paths) and `sha256` (N hex digests of the source photos).
- `.parquet`: columns `name`, `embedding` (list of floats), optional `source`, `sha256`; the schema metadata
  holds `facerec.model_id` (and optionally `facerec.dim`). Needs pyarrow (the `parquet` extra).

Each row's source hash is what makes a re-run skip it (as `enroll` skips a photo by its SHA-256): the
`sha256` column if given, else the SHA-256 of the source id, else the SHA-256 of the vector's float32 bytes.
Vectors must be finite; rows that are not unit norm (|norm - 1| > 1e-3) are normalised, with a note.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facerec.errors import EmbeddingsFileError

UNIT_TOLERANCE = 1e-3
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class EmbeddingsFile:
    model_id: str
    names: list[str]
    vectors: np.ndarray  # N x D float32, unit rows
    source_names: list[str]
    digests: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def read_embeddings(path: str | os.PathLike) -> EmbeddingsFile:
    """Read and check a `.npz` or `.parquet` embeddings file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise EmbeddingsFileError(f"{path}: no such embeddings file")
    if path.suffix == ".npz":
        model_id, dim, names, vectors, sources, digests = _read_npz(path)
    elif path.suffix == ".parquet":
        model_id, dim, names, vectors, sources, digests = _read_parquet(path)
    else:
        raise EmbeddingsFileError(f"{path}: embeddings must be a .npz or .parquet file")
    if not model_id:
        raise EmbeddingsFileError(f"{path}: no model id declared (npz: 'model_id'; parquet: metadata "
                                  f"'facerec.model_id'): the model that made the vectors is never guessed")
    if vectors.ndim != 2 or len(vectors) != len(names):
        raise EmbeddingsFileError(f"{path}: {len(names)} names for embeddings of shape {vectors.shape}")
    if dim is not None and dim != vectors.shape[1]:
        raise EmbeddingsFileError(f"{path}: declares dimension {dim}, its vectors have {vectors.shape[1]}")
    for label, column in (("sources", sources), ("sha256", digests)):
        if column is not None and len(column) != len(names):
            raise EmbeddingsFileError(f"{path}: {len(column)} {label} for {len(names)} names")
    vectors = np.array(vectors, dtype=np.float32)  # one writable copy, normalised in place (1e6 x 192: 768 MB)
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if len(bad):
        raise EmbeddingsFileError(f"{path}: {len(bad)} embedding(s) with NaN or infinite values (first: row {bad[0]})")
    norms = np.linalg.norm(vectors, axis=1)
    if len(norms) and norms.min() < 1e-6:
        raise EmbeddingsFileError(f"{path}: zero embedding at row {int(np.argmin(norms))}")
    notes = []
    off = int((np.abs(norms - 1) > UNIT_TOLERANCE).sum())
    if off:
        notes.append(f"{off} of {len(norms)} embeddings were not unit norm: normalised")
    vectors /= norms[:, None]
    if digests is not None:
        digests = [str(d).lower() for d in digests]
        wrong = next((i for i, d in enumerate(digests) if not _HEX64.match(d)), None)
        if wrong is not None:
            raise EmbeddingsFileError(f"{path}: sha256 at row {wrong} is not 64 hex digits")
    elif sources is not None:
        digests = [hashlib.sha256(str(s).encode()).hexdigest() for s in sources]
    else:
        digests = [hashlib.sha256(v.tobytes()).hexdigest() for v in vectors]
    source_names = [str(s) for s in sources] if sources is not None else [f"{path.name}#{i}" for i in range(len(names))]
    return EmbeddingsFile(str(model_id), [str(n) for n in names], vectors, source_names, digests, notes)


def declared_model(path: str | os.PathLike) -> str | None:
    """The model id a file declares, read without loading its vectors (a new database takes this model);
    None when it cannot be read here: `read_embeddings` then names the problem."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:  # members load lazily: only model_id is read
                return str(z["model_id"]) if "model_id" in z.files else None
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            meta = pq.read_schema(path).metadata or {}
            return meta.get(b"facerec.model_id", b"").decode() or None
    except Exception:  # damaged, missing or unreadable: reported by read_embeddings
        return None
    return None


def _read_npz(path: Path):
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise EmbeddingsFileError(f"{path}: unreadable .npz ({' '.join(str(exc).split())[:200]})") from None
    for key in ("names", "embeddings"):
        if key not in arrays:
            raise EmbeddingsFileError(f"{path}: no '{key}' array (expected names, embeddings, model_id)")
    model_id = str(arrays["model_id"]) if "model_id" in arrays else ""
    dim = int(arrays["dim"]) if "dim" in arrays else None
    if not np.issubdtype(arrays["embeddings"].dtype, np.floating):
        raise EmbeddingsFileError(f"{path}: embeddings must be floats, not {arrays['embeddings'].dtype}")
    return (model_id, dim, arrays["names"].reshape(-1).tolist(), arrays["embeddings"], _opt(arrays, "sources"),
            _opt(arrays, "sha256"))


def _opt(arrays: dict, key: str) -> list | None:
    return arrays[key].reshape(-1).tolist() if key in arrays else None


def _read_parquet(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise EmbeddingsFileError(f"{path}: reading .parquet needs pyarrow (pip install 'facerec[parquet]')") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own errors for damaged files
        raise EmbeddingsFileError(f"{path}: unreadable .parquet ({' '.join(str(exc).split())[:200]})") from None
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    for column in ("name", "embedding"):
        if column not in table.column_names:
            raise EmbeddingsFileError(f"{path}: no '{column}' column (expected name, embedding)")
    vectors = _list_column(path, table.column("embedding").combine_chunks())
    dim = int(meta["facerec.dim"]) if "facerec.dim" in meta else None
    opt = {c: table.column(c).to_pylist() if c in table.column_names else None for c in ("source", "sha256")}
    return (meta.get("facerec.model_id", ""), dim, table.column("name").to_pylist(), vectors, opt["source"],
            opt["sha256"])


def _list_column(path: Path, column) -> np.ndarray:
    """A list<float> column as an N x D array without a Python float per value (1e6 x 192 would not fit)."""
    import pyarrow as pa

    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            or pa.types.is_fixed_size_list(column.type)) or not pa.types.is_floating(column.type.value_type):
        raise EmbeddingsFileError(f"{path}: 'embedding' must hold lists of floats, not {column.type}")
    if column.null_count:
        raise EmbeddingsFileError(f"{path}: {column.null_count} missing embedding(s)")
    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
    else:
        lengths = np.diff(np.asarray(column.offsets))
        width = int(lengths[0]) if len(lengths) else 0
        if len(lengths) and (lengths != width).any():
            raise EmbeddingsFileError(f"{path}: embeddings of different lengths (row {int(np.argmax(lengths != width))})")
    values = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    return values.reshape(len(column), width)
