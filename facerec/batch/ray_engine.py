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
from collections.abc import Sequence

from facerec.api import AuditPolicy, FaceRec, Settings
from facerec.batch.pipeline import Progress, ScanJob, ScanOptions, ScanReport, commit_chunk, scan_job
from facerec.batch.scan import read_photo
from facerec.errors import FacerecError


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

    with scan_job(fr, roots, job, options, progress, engine="ray") as run:
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     **({} if address else {"num_cpus": max(1, options.workers + 1)}))
        try:
            if run.todo:
                _scan_on_ray(fr, run, options)
        finally:
            if started_here:
                ray.shutdown()
    return run.report


def _scan_on_ray(fr: FaceRec, run: ScanJob, options: ScanOptions) -> None:
    """Read on Ray tasks, analyse on one actor (the model loaded once), write chunks here in path order."""
    import ray

    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # chunks written in path order, like the local engine
    ctx.enable_progress_bars = False  # the CLI shows its own progress
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    items = [{"path": e.path, "size": e.size, "mtime_ns": e.mtime_ns,
              "known_sha256": old.sha256 if old else "", "known_id": old.id if old else -1}
             for e, old in run.todo]
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
        commit_chunk(fr, run.store, run.job_id, files, touched, run.report)
        run.advance(len(files) + len(touched))
