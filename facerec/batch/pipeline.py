"""The batch scan, streamed: worker processes read (hash, decode, shrink) a few photos per task, the main
process detects (one MTCNN batch), embeds and identifies a chunk of photos at a time, and a writer thread
writes each chunk in one transaction while the next one is analysed.

Memory stays flat: at most `in_flight` photos are decoded ahead of the detector, and nothing of a chunk is
kept after its transaction. A run killed at any point loses at most the chunk in progress; the next run skips
every photo already written (same path, size and mtime; else same SHA-256) and goes on.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
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
    in_flight: int = 128  # photos decoded ahead of the detector (bounds memory; 2 chunks, 2 tasks a worker at least)
    task: int = 8  # photos per reading worker's task (an analysing worker's task is a chunk)
    limit: int | None = None  # stop after this many new photos (for measurements and tests)
    # The workers also detect (one batch per chunk) and embed, each loading the models once: on CPU this uses
    # every core; on a GPU several processes keep it busy where one process's Python cannot. The main process
    # then only identifies and writes. Off: batched detection/embedding in the main process.
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


ReadJob = tuple[FileEntry, str | None, int, int]  # entry, known SHA-256, max side, max pixels


def read_photos(jobs: Sequence[ReadJob]) -> list[ReadPhoto]:
    """A worker's task: read (hash, decode, shrink) a few photos; one task per few photos keeps the
    inter-process overhead off the rate."""
    return [read_photo(*job) for job in jobs]


def read_and_analyse(jobs: Sequence[ReadJob]) -> list[ReadPhoto]:
    """A worker's task when it analyses too: read a few photos, then detect (one batch) and embed their faces;
    the pixels stay here."""
    photos = read_photos(jobs)
    readable = [i for i, p in enumerate(photos) if p.rgb is not None]
    analysed = _worker_engine.analyse([photos[i].rgb for i in readable]) if readable else []
    for i, found in zip(readable, analysed):
        photos[i] = replace(photos[i], rgb=None, faces=tuple(found.faces))
    return photos


def read_ahead(todo: Sequence[tuple[FileEntry, KnownFile | None]], options: ScanOptions,
               settings: Settings) -> Iterator[tuple[ReadPhoto, KnownFile | None]]:
    """Photos read by a pool of spawned processes (a task of `options.task` photos each), in order, with a
    bounded number in flight (at least two detection chunks, so the detector never waits on a chunk)."""
    def job(item: tuple[FileEntry, KnownFile | None]) -> ReadJob:
        entry, old = item
        return entry, old.sha256 if old else None, options.max_side, settings.max_pixels

    if options.workers <= 0:
        for item in todo:
            yield read_photo(*job(item)), item[1]
        return
    task, start = (read_and_analyse, _start_analyser) if options.analyse_in_workers else (read_photos, None)
    # an analysing worker's task is one detection batch (a chunk); a reading worker's, a few photos
    size = max(1, options.chunk if options.analyse_in_workers else options.task)
    tasks = iter([todo[i: i + size] for i in range(0, len(todo), size)])
    in_flight = max(-(-max(options.in_flight, 2 * options.chunk) // size), 2 * options.workers)
    # spawn, not fork: the main process holds torch threads that a fork would copy half-locked
    with multiprocessing.get_context("spawn").Pool(options.workers, start, (settings,) if start else ()) as pool:
        pending: deque = deque()
        for items in tasks:
            pending.append((pool.apply_async(task, ([job(item) for item in items],)), items))
            if len(pending) >= in_flight:
                break
        while pending:
            result, items = pending.popleft()
            photos = result.get()
            nxt = next(tasks, None)
            if nxt is not None:
                pending.append((pool.apply_async(task, ([job(item) for item in nxt],)), nxt))
            for photo, (_, old) in zip(photos, items):
                yield photo, old


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
    with scan_job(fr, roots, job, options, progress) as run, ChunkWriter(fr, run) as writer:
        chunk: list[tuple[ReadPhoto, KnownFile | None]] = []
        for item in read_ahead(run.todo, options, fr.settings):
            chunk.append(item)
            if len(chunk) >= options.chunk:
                writer.put(*analyse_chunk(fr, chunk, options))
                chunk = []
        if chunk:
            writer.put(*analyse_chunk(fr, chunk, options))
    return run.report


Touched = list[tuple[int, int]]  # (file id, new mtime) of photos whose content was already stored


def analyse_chunk(fr: FaceRec, chunk: list[tuple[ReadPhoto, KnownFile | None]],
                  options: ScanOptions) -> tuple[list[ScannedFile], Touched, int]:
    """Detect, embed and identify a chunk of read photos: what `commit_chunk` writes, and how many photos."""
    touched = [(old.id, photo.mtime_ns) for photo, old in chunk if photo.unchanged and old is not None]
    files = analyse_photos(fr, [photo for photo, _ in chunk if not photo.unchanged], options.top_k)
    return files, touched, len(chunk)


class ChunkWriter:
    """Writes analysed chunks in order on a thread of its own (one transaction each), so the database is off
    the detector's critical path. At most `depth` chunks wait; a write error stops the scan at the next chunk
    and is raised. A killed run loses only chunks not yet written (the next run reads them again)."""

    def __init__(self, fr: FaceRec, run: ScanJob, depth: int = 2) -> None:
        self.fr, self.run = fr, run
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="facerec-batch-writer", daemon=True)
        url = fr.store.engine.url
        # an in-memory SQLite database exists on one connection of one thread: write there, inline
        self.inline = url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")

    def __enter__(self) -> "ChunkWriter":
        if not self.inline:
            self.thread.start()
        return self

    def put(self, files: list[ScannedFile], touched: Touched, count: int) -> None:
        if self.inline:
            self._write(files, touched, count)
            return
        if self.error is not None:
            raise self.error
        self.queue.put((files, touched, count))

    def _write(self, files: list[ScannedFile], touched: Touched, count: int) -> None:
        commit_chunk(self.fr, self.run.store, self.run.job_id, files, touched, self.run.report)
        self.run.advance(count)

    def _loop(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is not None:
                continue
            try:
                self._write(*item)
            except BaseException as exc:  # handed to the scanning thread
                self.error = exc

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.inline:
            return
        self.queue.put(None)
        self.thread.join()
        if self.error is not None and exc is None:
            raise self.error


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
