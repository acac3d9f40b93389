"""The batch scan, streamed: worker processes read (hash, decode, shrink), the main process detects, embeds
and identifies a chunk of photos at a time and writes the chunk in one transaction.

Memory stays flat: at most `in_flight` photos are decoded ahead of the detector, and nothing of a chunk is
kept after its transaction. A run killed at any point loses at most the chunk in progress; the next run skips
every photo already written (same path, size and mtime; else same SHA-256) and goes on.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

from facerec.api import FaceRec, IdentifiedFace, Settings
from facerec.batch.scan import DEFAULT_MAX_SIDE, FileEntry, ReadPhoto, read_photo, walk
from facerec.store.batch import BatchStore, KnownFile, ScannedFace, ScannedFile

Progress = Callable[[int, int], None]  # (photos done, photos in all)


@dataclass(frozen=True)
class ScanOptions:
    top_k: int = 3
    workers: int = 2  # decoding processes (0: decode in the main process)
    chunk: int = 32  # photos per detection/embedding batch and per transaction
    max_side: int = DEFAULT_MAX_SIDE
    in_flight: int = 128  # photos decoded ahead of the detector at most (bounds memory)
    limit: int | None = None  # stop after this many new photos (for measurements and tests)
    # CPU without a GPU: the workers also detect and embed (each loads the model once), using every core;
    # the main process then only identifies and writes. Off: batched detection/embedding in the main process.
    analyse_in_workers: bool = False


@dataclass
class ScanReport:
    job: str
    walk: dict
    unchanged: int = 0  # skipped: same path, size and mtime (or same SHA-256)
    scanned: int = 0  # photos read and analysed in this run
    errors: int = 0  # photos that could not be decoded (recorded, not fatal)
    faces: int = 0
    identified: int = 0
    seconds: float = 0.0
    error_samples: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.scanned / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return asdict(self) | {"photos_per_s": round(self.rate, 2)}


Todo = list[tuple[FileEntry, KnownFile | None]]


def plan(entries: Sequence[FileEntry], known: dict[str, KnownFile]) -> tuple[Todo, int]:
    """Which photos need reading: new paths and those whose size or mtime moved (hash decides then)."""
    todo, unchanged = [], 0
    for entry in entries:
        old = known.get(entry.path)
        if old is not None and old.size == entry.size and old.mtime_ns == entry.mtime_ns:
            unchanged += 1
        else:
            todo.append((entry, old))
    return todo, unchanged


_worker_engine: FaceRec | None = None  # one per analysing worker process


def _start_analyser(settings: Settings) -> None:
    global _worker_engine
    _worker_engine = FaceRec(settings)


def read_and_analyse(entry: FileEntry, known_sha256: str | None, max_side: int, max_pixels: int) -> ReadPhoto:
    """A worker's whole share: read the photo, then detect and embed its faces (the pixels stay here)."""
    photo = read_photo(entry, known_sha256, max_side, max_pixels)
    if photo.rgb is None:
        return photo
    return replace(photo, rgb=None, faces=tuple(_worker_engine.analyse([photo.rgb])[0].faces))


def read_ahead(todo: Sequence[tuple[FileEntry, KnownFile | None]], options: ScanOptions,
               settings: Settings) -> Iterator[tuple[ReadPhoto, KnownFile | None]]:
    """Photos read by a pool of spawned processes, in order, with a bounded number in flight."""
    def job(item: tuple[FileEntry, KnownFile | None]) -> tuple:
        entry, old = item
        return entry, old.sha256 if old else None, options.max_side, settings.max_pixels

    if options.workers <= 0:
        for item in todo:
            yield read_photo(*job(item)), item[1]
        return
    task, start = (read_and_analyse, _start_analyser) if options.analyse_in_workers else (read_photo, None)
    # spawn, not fork: the main process holds torch threads that a fork would copy half-locked
    with multiprocessing.get_context("spawn").Pool(options.workers, start, (settings,) if start else ()) as pool:
        pending: deque = deque()
        items = iter(todo)
        for item in items:
            pending.append((pool.apply_async(task, job(item)), item[1]))
            if len(pending) >= options.in_flight:
                break
        while pending:
            result, old = pending.popleft()
            yield result.get(), old
            nxt = next(items, None)
            if nxt is not None:
                pending.append((pool.apply_async(task, job(nxt)), nxt[1]))


@dataclass
class ScanJob:
    """One scan in progress: the photos to read, the report, and how far it got (shared by both engines)."""

    store: BatchStore
    job_id: int
    todo: Todo
    report: ScanReport
    total: int
    done: int
    progress: Progress | None = None

    def advance(self, count: int) -> None:
        self.done += count
        if self.progress:
            self.progress(self.done, self.total)


@contextmanager
def scan_job(fr: FaceRec, roots: Sequence[str], job: str, options: ScanOptions, progress: Progress | None,
             engine: str = "local") -> Iterator[ScanJob]:
    """Open job `job`, plan what to read, and whatever happens record the outcome ("completed" only when the
    body finished) in the job's stats and one audit event."""
    store = BatchStore(fr.store)
    job_id = store.open_job(job, fr.card.id, [str(r) for r in roots])
    found = walk(list(roots))
    todo, unchanged = plan(found.files, store.known_files(job_id))
    if options.limit is not None:
        todo = todo[: options.limit]
    report = ScanReport(job, found.counts(), unchanged=unchanged)
    run = ScanJob(store, job_id, todo, report, len(found.files), 0, progress)
    run.advance(unchanged)
    start = time.perf_counter()
    outcome = "interrupted"
    try:
        yield run
        outcome = "completed"
    finally:
        report.seconds = time.perf_counter() - start
        extra = {} if engine == "local" else {"engine": engine}
        store.save_stats(job_id, report.to_dict() | {"outcome": outcome} | extra)
        fr.record("batch_scan", outcome, details=report.to_dict() | extra)


def scan(fr: FaceRec, roots: Sequence[str], job: str, options: ScanOptions = ScanOptions(),
         progress: Progress | None = None) -> ScanReport:
    """Scan `roots` into job `job`: every face of every new or changed photo, identified against the gallery."""
    with scan_job(fr, roots, job, options, progress) as run:
        chunk: list[tuple[ReadPhoto, KnownFile | None]] = []
        for item in read_ahead(run.todo, options, fr.settings):
            chunk.append(item)
            if len(chunk) >= options.chunk:
                run.advance(process_chunk(fr, run.store, run.job_id, chunk, options, run.report))
                chunk = []
        if chunk:
            run.advance(process_chunk(fr, run.store, run.job_id, chunk, options, run.report))
    return run.report


def process_chunk(fr: FaceRec, store: BatchStore, job_id: int, chunk: list[tuple[ReadPhoto, KnownFile | None]],
                  options: ScanOptions, report: ScanReport) -> int:
    """Detect, embed and identify a chunk of read photos, then write it in one transaction."""
    touched = [(old.id, photo.mtime_ns) for photo, old in chunk if photo.unchanged and old is not None]
    files = analyse_photos(fr, [photo for photo, _ in chunk if not photo.unchanged], options.top_k)
    commit_chunk(fr, store, job_id, files, touched, report)
    return len(chunk)


def commit_chunk(fr: FaceRec, store: BatchStore, job_id: int, files: list[ScannedFile],
                 touched: list[tuple[int, int]], report: ScanReport) -> None:
    """Write analysed photos (one transaction), note the unchanged ones' new mtimes, count (both engines)."""
    report.faces += store.write_chunk(job_id, fr.card.id, files)
    if touched:
        store.touch_files(touched)
    report.unchanged += len(touched)
    report.scanned += len(files)
    for f in files:
        report.identified += sum(face.match is not None for face in f.faces)
        if f.error:
            report.errors += 1
            if len(report.error_samples) < 20:
                report.error_samples.append(f"{f.path}: {f.error}")


def analyse_photos(fr: FaceRec, photos: Sequence[ReadPhoto], top_k: int) -> list[ScannedFile]:
    """Read photos -> records with every face: one detection pass per photo, one embedding batch (unless a
    worker analysed the photo already), one gallery search for all their faces."""
    readable = [p for p in photos if p.error is None]
    pending = [p for p in readable if p.faces is None]
    analysed = fr.analyse([p.rgb for p in pending]) if pending else []
    found = {p.path: a.faces for p, a in zip(pending, analysed)} | {p.path: list(p.faces) for p in readable
                                                                   if p.faces is not None}
    faces = [face for p in readable for face in found[p.path]]
    identified = iter(fr.identify_faces(faces, top_k, source="batch") if faces else [])
    files = []
    for photo in photos:
        if photo.error is not None:
            files.append(ScannedFile(photo.path, photo.size, photo.mtime_ns, photo.sha256, error=photo.error))
            continue
        records = [face_record(face, next(identified), photo.scale) for face in found[photo.path]]
        files.append(ScannedFile(photo.path, photo.size, photo.mtime_ns, photo.sha256, photo.width, photo.height,
                                 faces=records))
    return files


def face_record(face, ident: IdentifiedFace, scale: float) -> ScannedFace:
    """One face as stored: its box in the original photo's pixels, the gallery's answer and the embedding."""
    box = [round(v / scale, 1) for v in ident.face.box]
    quality = ident.face.quality.to_dict()
    return ScannedFace(
        box=box, detection_score=float(ident.face.score), quality=quality, quality_passed=bool(quality["passed"]),
        embedding=face.embedding, match=None if ident.decision == "unknown" else ident.name,
        score=float(ident.score), margin=float(ident.margin),
        candidates=[{"name": c.name, "score": round(float(c.score), 4)} for c in ident.candidates],
    )
