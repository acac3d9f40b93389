"""A job's faces as CSV, JSON lines or Parquet (pyarrow: the optional `[parquet]` extra). No embeddings:
exports travel; the vectors stay in the database."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from facerec.errors import FacerecError
from facerec.store.batch import FaceRows

FORMATS = ("csv", "jsonl", "parquet")
COLUMNS = ("path", "sha256", "face_id", "face_index", "x1", "y1", "x2", "y2", "detection_score", "quality_passed",
           "name", "score", "margin", "candidates", "person", "cluster")


def rows(faces: FaceRows) -> list[dict]:
    """One flat record per face; `name` is the gallery's answer or "unknown"."""
    out = []
    for i in range(len(faces)):
        x1, y1, x2, y2 = faces.boxes[i]
        out.append({
            "path": faces.paths[i], "sha256": faces.sha256[i], "face_id": int(faces.ids[i]),
            "face_index": int(faces.face_index[i]), "x1": x1, "y1": y1, "x2": x2, "y2": y2,
            "detection_score": float(faces.detection_score[i]), "quality_passed": bool(faces.quality_passed[i]),
            "name": faces.match[i] or "unknown", "score": round(float(faces.score[i]), 4),
            "margin": round(float(faces.margin[i]), 4), "candidates": faces.candidates[i],
            "person": faces.person[i], "cluster": None if faces.cluster[i] < 0 else int(faces.cluster[i]),
        })
    return out


def format_of(path: Path, fmt: str | None) -> str:
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    fmt = "jsonl" if fmt in ("json", "ndjson") else fmt
    if fmt not in FORMATS:
        raise FacerecError(f"{path}: unknown export format {fmt!r} (use {', '.join(FORMATS)})")
    return fmt


def export(faces: FaceRows, path: str | Path, fmt: str | None = None) -> int:
    """Write every face of `faces` to `path`; returns the number of rows."""
    path = Path(path)
    fmt = format_of(path, fmt)
    records = rows(faces)
    if fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as fh:
            for r in records:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        with open(path, "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            for r in records:
                writer.writerow(r | {"candidates": json.dumps(r["candidates"], ensure_ascii=False)})
    else:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise FacerecError("Parquet export needs pyarrow: pip install 'facerec[parquet]'") from None
        table = pa.Table.from_pylist(
            [r | {"candidates": json.dumps(r["candidates"], ensure_ascii=False)} for r in records],
            schema=pa.schema([
                ("path", pa.string()), ("sha256", pa.string()), ("face_id", pa.int64()), ("face_index", pa.int32()),
                ("x1", pa.float32()), ("y1", pa.float32()), ("x2", pa.float32()), ("y2", pa.float32()),
                ("detection_score", pa.float32()), ("quality_passed", pa.bool_()), ("name", pa.string()),
                ("score", pa.float32()), ("margin", pa.float32()), ("candidates", pa.string()),
                ("person", pa.string()), ("cluster", pa.int64()),
            ]))
        pq.write_table(table, path)
    return len(records)
