"""The batch scan as a Ray Data pipeline (`facerec batch scan --engine ray [--ray-address ADDR]`).

The same steps as the local engine, spread over a cluster: read tasks hash, decode and shrink photos
(`facerec.batch.scan.read_photo`); actors that load the model once detect, embed and identify a batch of
photos (`facerec.batch.pipeline.analyse_photos`, one GPU each when the cluster has GPUs); the driver writes each
batch in one transaction, so results, skip rule and resumption are the local engine's.

Multi-node: start a head (`ray start --head`) and workers (`ray start --address HEAD:6379`) on machines that
all have facerec installed and the photos under the same paths (a shared or synced file system), and give a
database every node can reach (PostgreSQL: `--db postgresql+psycopg://...`; SQLite only on one machine). Then
`facerec --db URL batch scan /photos --engine ray --ray-address HEAD:6379`.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Sequence

from facerec.api import AuditPolicy, FaceRec, Settings
from facerec.batch.pipeline import Progress, ScanOptions, ScanReport, commit_chunk, plan
from facerec.batch.scan import read_photo, walk
from facerec.errors import FacerecError
from facerec.store.batch import BatchStore


class _Analyse:
    """A Ray actor: one engine (model loaded once) that turns read photos into stored records."""

    def __init__(self, settings: Settings, top_k: int) -> None:
        self.fr = FaceRec(settings, audit=AuditPolicy.PER_JOB)
        self.top_k = top_k

    def __call__(self, batch: dict) -> dict:
        from facerec.batch.pipeline import analyse_photos

        photos = [pickle.loads(b) for b in batch["photo"]]
        files = analyse_photos(self.fr, [p for p in photos if not p.unchanged], self.top_k)
        scanned = iter(files)
        return {"record": [pickle.dumps(("unchanged", p) if p.unchanged else ("file", next(scanned)))
                           for p in photos],
                "known_id": batch["known_id"]}


def _read(batch: dict, max_side: int, max_pixels: int) -> dict:
    from facerec.batch.scan import FileEntry

    photos = [read_photo(FileEntry(p, int(s), int(m)), k or None, max_side, max_pixels)
              for p, s, m, k in zip(batch["path"], batch["size"], batch["mtime_ns"], batch["known_sha256"])]
    return {"photo": [pickle.dumps(p) for p in photos], "known_id": batch["known_id"]}


def scan_with_ray(fr: FaceRec, roots: Sequence[str], job: str, options: ScanOptions = ScanOptions(),
                  progress: Progress | None = None, address: str | None = None) -> ScanReport:
    try:
        import ray
    except ImportError:
        raise FacerecError("the ray engine needs Ray: pip install 'facerec[ray]'") from None

    store = BatchStore(fr.store)
    job_id = store.open_job(job, fr.card.id, [str(r) for r in roots])
    found = walk(list(roots))
    todo, unchanged = plan(found.files, store.known_files(job_id))
    if options.limit is not None:
        todo = todo[: options.limit]
    report = ScanReport(job, found.counts(), unchanged=unchanged)
    total, done = len(found.files), unchanged
    if progress:
        progress(done, total)
    start = time.perf_counter()
    outcome = "interrupted"
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 **({} if address else {"num_cpus": max(1, options.workers + 1)}))
    try:
        if todo:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
            ctx = ray.data.DataContext.get_current()
            ctx.execution_options.preserve_order = True  # chunks written in path order, like the local engine
            ctx.enable_progress_bars = False  # the CLI shows its own progress
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            items = [{"path": e.path, "size": e.size, "mtime_ns": e.mtime_ns,
                      "known_sha256": old.sha256 if old else "", "known_id": old.id if old else -1}
                     for e, old in todo]
            ds = (ray.data.from_items(items, override_num_blocks=max(1, len(items) // options.chunk))
                  .map_batches(_read, batch_size=options.chunk, fn_kwargs={"max_side": options.max_side,
                                                                            "max_pixels": fr.settings.max_pixels})
                  .map_batches(_Analyse, batch_size=options.chunk, compute=ray.data.ActorPoolStrategy(size=1),
                               num_gpus=gpus, fn_constructor_kwargs={"settings": fr.settings, "top_k": options.top_k}))
            for batch in ds.iter_batches(batch_size=options.chunk, batch_format="numpy"):
                files, touched = [], []
                for raw, known_id in zip(batch["record"], batch["known_id"]):
                    kind, value = pickle.loads(raw)
                    if kind == "unchanged":
                        touched.append((int(known_id), value.mtime_ns))
                    else:
                        files.append(value)
                commit_chunk(fr, store, job_id, files, touched, report)
                done += len(files) + len(touched)
                if progress:
                    progress(done, total)
        outcome = "completed"
    finally:
        if started_here:
            ray.shutdown()
        report.seconds = time.perf_counter() - start
        store.save_stats(job_id, report.to_dict() | {"outcome": outcome, "engine": "ray"})
        fr.record("batch_scan", outcome, details=report.to_dict() | {"engine": "ray"})
    return report
