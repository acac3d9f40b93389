"""On-disk layout of an index: a small manifest, memory-mapped base arrays and an append-only change log.

Why this shape: a 1e6-template index must open in well under a second and one enrollment must not rewrite
it. So the bulky parts (`<path>.<tag>.vectors.npy`, `.ids.npy`, the faiss structure `.faiss`) are written
once per *compaction* under a fresh tag and opened with `mmap`; every save in between appends the new
rows and removals to `<path>.<tag>.log` (each record CRC-32 checked) and atomically replaces the manifest
`<path>` (JSON, a few hundred bytes), which records how many log bytes are valid. A crash leaves either the
old manifest (extra log bytes are ignored) or the new one.

Integrity without hashing gigabytes at start-up: the manifest holds each base file's size, a SHA-256 of
its first and last MiB (checked on every open: catches truncation, a swapped or rewritten file and a torn
compaction) and a SHA-256 per 64 MiB chunk, which `verify_files(..., full=True)` checks on demand
(`SearchIndex.verify()`), e.g. from a maintenance command, not on the start-up path.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facerec.errors import SearchIndexError

FORMAT = "facerec-index-2"
CHUNK = 64 << 20
EDGE = 1 << 20
_RECORD = struct.Struct("<4sQI")  # kind (b"ADD " / b"DEL "), row count, crc32 of the payload


def file_digest(path: Path) -> dict:
    """Size, edge hashes and per-chunk hashes of a file (read once, when it is written)."""
    size = path.stat().st_size
    chunks = []
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            chunks.append(hashlib.sha256(block).hexdigest())
    return {"size": size, **_edges(path, size), "chunks": chunks}


def _edges(path: Path, size: int) -> dict:
    with path.open("rb") as fh:
        head = fh.read(EDGE)
        fh.seek(max(0, size - EDGE))
        tail = fh.read(EDGE)
    return {"head": hashlib.sha256(head).hexdigest(), "tail": hashlib.sha256(tail).hexdigest()}


def verify_files(folder: Path, files: dict[str, dict], full: bool = False) -> None:
    """Cheap check (size + first/last MiB) or, with `full`, every chunk; SearchIndexError on a mismatch."""
    for name, want in files.items():
        path = folder / name
        try:
            size = path.stat().st_size
        except OSError:
            raise SearchIndexError(f"{path}: missing index file") from None
        if size != want["size"] or _edges(path, size) != {"head": want["head"], "tail": want["tail"]}:
            raise SearchIndexError(f"{path}: corrupt index file (changed or truncated)")
        if full:
            with path.open("rb") as fh:
                for i, expected in enumerate(want["chunks"]):
                    if hashlib.sha256(fh.read(CHUNK)).hexdigest() != expected:
                        raise SearchIndexError(f"{path}: corrupt index file (chunk {i} changed)")


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file, fsync and rename: readers see the old bytes or the new ones."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _private(path: Path) -> Path:
    """Create (or truncate) a file readable by its owner only: index files hold embeddings."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    os.chmod(path, 0o600)
    return path


def save_npy(path: Path, array: np.ndarray) -> None:
    with _private(path).open("wb") as fh:
        np.lib.format.write_array(fh, np.ascontiguousarray(array), allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def save_rows(path: Path, parts: list[np.ndarray], dtype: str) -> None:
    """Write the row blocks one after another as one `dtype` array, a slice at a time (1e7 rows never
    sit in memory twice, nor in float32 when they are stored as float16)."""
    rows, dim = sum(len(a) for a in parts), parts[0].shape[1]
    out = np.lib.format.open_memmap(_private(path), mode="w+", dtype=dtype, shape=(rows, dim))
    at = 0
    for block in parts:
        for start in range(0, len(block), 1 << 18):
            piece = block[start:start + (1 << 18)]
            out[at:at + len(piece)] = piece
            at += len(piece)
    out.flush()
    del out
    with path.open("rb+") as fh:
        os.fsync(fh.fileno())


def load_npy(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SearchIndexError(f"{path}: unreadable index array ({exc})") from None


@dataclass
class Manifest:
    meta: dict
    tag: str
    kind: str
    factory: str
    params: dict
    dim: int
    base_rows: int
    trained_rows: int
    log_bytes: int
    files: dict

    def dumps(self) -> bytes:
        body = json.dumps({"format": FORMAT, **self.__dict__}, indent=1).encode()
        return body + b"\n" + hashlib.sha256(body).hexdigest().encode() + b"\n"

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        """Parse and check the manifest (its last line is the SHA-256 of the JSON above it)."""
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise SearchIndexError(f"{path}: cannot read index ({exc.strerror})") from None
        body, _, digest = blob.rstrip(b"\n").rpartition(b"\n")
        try:
            raw = json.loads(body)
        except ValueError:
            raw = None
        if not isinstance(raw, dict) or raw.pop("format", None) != FORMAT:
            raise SearchIndexError(f"{path}: not a {FORMAT} index (corrupt, old format or another file): rebuild it")
        if hashlib.sha256(body).hexdigest().encode() != digest:
            raise SearchIndexError(f"{path}: corrupt index manifest (checksum mismatch)")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise SearchIndexError(f"{path}: corrupt index manifest ({exc})") from None


def part(path: Path, tag: str, suffix: str) -> Path:
    return path.with_name(f"{path.name}.{tag}.{suffix}")


def remove_index_files(path: Path) -> list[Path]:
    """Delete an index: its manifest and every part (arrays, structure, log, temporaries, lock)."""
    path = Path(path)
    removed = [p for p in [path, *path.parent.glob(f"{path.name}.*")] if p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def append_log(log: Path, offset: int, records: list[tuple[bytes, bytes, int]]) -> int:
    """Write records at `offset` (dropping anything a crashed writer left after it), fsync; new length."""
    with open(log if log.exists() else _private(log), "r+b") as fh:
        fh.seek(offset)
        for kind, payload, rows in records:
            fh.write(_RECORD.pack(kind, rows, zlib.crc32(payload)) + payload)
        fh.truncate()
        fh.flush()
        os.fsync(fh.fileno())
        return fh.tell()


def add_record(ids: np.ndarray, vectors: np.ndarray) -> tuple[bytes, bytes, int]:
    return b"ADD ", np.ascontiguousarray(ids, np.int64).tobytes() + np.ascontiguousarray(vectors, np.float32).tobytes(), len(ids)


def del_record(ids: np.ndarray) -> tuple[bytes, bytes, int]:
    return b"DEL ", np.ascontiguousarray(ids, np.int64).tobytes(), len(ids)


def read_log(log: Path, length: int, dim: int) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """The first `length` bytes of a log as (op, ids, vectors) records; SearchIndexError if damaged."""
    if length == 0:
        return []
    try:
        with log.open("rb") as fh:
            blob = fh.read(length)
    except OSError:
        raise SearchIndexError(f"{log}: missing index log") from None
    if len(blob) != length:
        raise SearchIndexError(f"{log}: index log is shorter than its manifest says")
    out, pos = [], 0
    while pos < length:
        kind, rows, crc = _RECORD.unpack_from(blob, pos)
        pos += _RECORD.size
        size = rows * (8 + 4 * dim) if kind == b"ADD " else rows * 8
        payload = blob[pos:pos + size]
        if len(payload) != size or zlib.crc32(payload) != crc or kind not in (b"ADD ", b"DEL "):
            raise SearchIndexError(f"{log}: corrupt index log record at byte {pos - _RECORD.size}")
        pos += size
        ids = np.frombuffer(payload[:rows * 8], np.int64)
        vectors = np.frombuffer(payload[rows * 8:], np.float32).reshape(rows, dim) if kind == b"ADD " else None
        out.append((kind.decode().strip(), ids, vectors))
    return out
