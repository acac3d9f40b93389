"""The batch verbs over one engine: scan, cluster, name, merge, split, reject, export, report.

One `FaceRec` with `AuditPolicy.PER_JOB` (a scan of 10^5 photos writes one audit event, not 10^5) and the
batch tables of the same database.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from facerec.api import AuditPolicy, FaceRec, Settings
from facerec.batch import export as exporter
from facerec.batch.pipeline import Progress, ScanOptions, ScanReport, scan
from facerec.errors import UsageError
from facerec.store.batch import BatchStore


class BatchService:
    def __init__(self, settings: Settings | None = None, engine: FaceRec | None = None) -> None:
        self.fr = engine or FaceRec(settings, audit=AuditPolicy.PER_JOB)
        self._store: BatchStore | None = None

    @property
    def store(self) -> BatchStore:
        if self._store is None:
            self._store = BatchStore(self.fr.store)
        return self._store

    def scan(self, roots: Sequence[str], job: str, options: ScanOptions = ScanOptions(),
             progress: Progress | None = None, engine: str = "local", ray_address: str | None = None) -> ScanReport:
        if engine == "local":
            return scan(self.fr, roots, job, options, progress)
        if engine == "ray":
            from facerec.batch.ray_engine import scan_with_ray

            return scan_with_ray(self.fr, roots, job, options, progress, address=ray_address)
        raise UsageError(f"unknown engine {engine!r} (use local or ray)")

    def jobs(self) -> list[dict]:
        return self.store.jobs()

    def export(self, job: str, path: str | Path, fmt: str | None = None) -> int:
        return exporter.export(self.store.faces(self.store.job_id(job)), path, fmt)
