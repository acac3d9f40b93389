"""Where a batch scan's time goes, stage by stage, then whole scans: read (hash + decode + shrink in worker
processes), detection (batched MTCNN), alignment, embedding, identification, database writes, end to end.

    python benchmarks/batch_stage_times.py PHOTO_DIR [--workers 14] [--chunk 1024] [--task 32]
        [--analyse-workers 12 --analyse-chunk 256] [--scans-only] [--out stages.json]

Each stage is timed alone over every photo of the folder (models loaded and warmed first, GPU synchronised), in
chunks as the scan makes them. End to end is `facerec.batch.pipeline.scan` over the same folder into a fresh job
(worker pool start included, and with analysing workers their model load; the main engine is warm), reported
as the scan's own rate and as the steady rate from the first chunk written to the last. Says what bounds it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed_scan(fr, folder: str, job: str, options) -> dict:
    """One scan; the steady rate counts from the first chunk written to the last (pool start excluded)."""
    from facerec.batch.pipeline import scan

    marks: list[tuple[float, int]] = []
    report = scan(fr, [folder], job, options, progress=lambda done, total: marks.append((time.perf_counter(), done)))
    steady = None
    if len(marks) >= 3:  # marks[0]: the start (unchanged photos), marks[1]: the first chunk written
        (t_a, d_a), (t_b, d_b) = marks[1], marks[-1]
        steady = round((d_b - d_a) / (t_b - t_a), 1) if t_b > t_a else None
    out = report.to_dict() | {"steady_photos_per_s": steady, "workers": options.workers, "chunk": options.chunk,
                              "analyse_in_workers": options.analyse_in_workers}
    out["error_samples"] = out["error_samples"][:3]
    print(f"scan {job}: {report.scanned} photos, {report.faces} faces in {report.seconds:.2f} s: "
          f"{report.rate:,.0f} photos/s (steady {steady})", flush=True)
    return out


def stage_table(fr, entries, options, chunk: int, sync) -> tuple[dict, dict, list]:
    """Each stage alone over every photo; returns seconds per stage, extra figures, and the decoded photos."""
    import numpy as np

    from facerec.batch.pipeline import analyse_photos, read_ahead
    from facerec.face.align import align_face
    from facerec.face.detect import detect_faces_many
    from facerec.store.batch import BatchStore

    pipe = fr.pipeline

    def chunks(items: list) -> list[list]:
        return [items[i: i + chunk] for i in range(0, len(items), chunk)]

    # read: the scan's own worker pool (spawn + first task included)
    t0 = time.perf_counter()
    photos, first = [], None
    for photo, _ in read_ahead([(e, None) for e in entries], options, fr.settings):
        photos.append(photo)
        first = first or time.perf_counter()
    stages = {"read (workers)": time.perf_counter() - t0}
    extra = {"read_steady_photos_per_s": round((len(photos) - 1) / (time.perf_counter() - first), 1)}
    photos = [p for p in photos if p.rgb is not None]
    rgbs = [p.rgb for p in photos]
    warm = fr.analyse(rgbs[:chunk])
    fr.identify_faces([f for a in warm for f in a.faces], 3)
    sync()

    t = time.perf_counter()
    detections = []
    for part in chunks(rgbs):
        detections += detect_faces_many(pipe.detector, part, pipe.min_score, pipe.min_size)
    sync()
    stages["detection"] = time.perf_counter() - t
    t = time.perf_counter()
    crops = [align_face(rgb, d.landmarks, pipe.model.template) for rgb, dets in zip(rgbs, detections) for d in dets]
    stages["alignment"] = time.perf_counter() - t
    t = time.perf_counter()
    for part in chunks(crops):
        pipe.model.embed(np.stack(part), flip_fusion=pipe.flip_fusion)
    sync()
    stages["embedding"] = time.perf_counter() - t
    extra["faces"] = len(crops)
    print({k: round(v, 2) for k, v in stages.items()}, flush=True)

    t = time.perf_counter()
    files = []
    for part in chunks(photos):
        files += analyse_photos(fr, part, 3)  # what the scan does per chunk: analyse_many + identify + records
    all_in_main = time.perf_counter() - t
    # identification alone: the warm-up chunk's faces, repeated to as many faces as the folder holds
    some = [f for a in warm for f in a.faces]
    faces = (some * (len(crops) // max(1, len(some)) + 1))[: len(crops)]
    t = time.perf_counter()
    for part in chunks(faces):
        fr.identify_faces(part, 3, source="batch")
    stages["identification"] = time.perf_counter() - t
    store = BatchStore(fr.store)
    job_id = store.open_job("stages", fr.card.id, ["stages"])
    t = time.perf_counter()
    for part in chunks(files):
        store.write_chunk(job_id, fr.card.id, part)
    stages["database write"] = time.perf_counter() - t
    stages["main process per chunk (detect+align+quality+embed+identify+records)"] = all_in_main
    print({k: round(v, 2) for k, v in stages.items()}, flush=True)
    return stages, extra, rgbs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2), help="reading processes")
    ap.add_argument("--chunk", type=int, default=1024, help="photos per detection/embedding batch and transaction")
    ap.add_argument("--task", type=int, default=16, help="photos per reading worker's task")
    ap.add_argument("--sweep", default="64,256,1024", help="detection batch sizes to time")
    ap.add_argument("--analyse-workers", type=int, default=0,
                    help="also scan with this many analysing workers (each detects and embeds its chunks)")
    ap.add_argument("--analyse-chunk", type=int, default=256, help="photos per analysing worker's batch")
    ap.add_argument("--scans-only", action="store_true", help="no stage table: detection sweep and scans only")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import torch

    from facerec.api import FaceRec, Settings
    from facerec.batch.pipeline import ScanOptions
    from facerec.batch.scan import DEFAULT_MAX_SIDE, read_photo, walk

    entries = walk([str(args.folder)]).files
    n = len(entries)
    fr = FaceRec(Settings.resolve(db=str(Path(tempfile.mkdtemp()) / "stages.db")))
    options = ScanOptions(workers=args.workers, chunk=args.chunk, task=args.task, in_flight=4 * args.chunk)
    cuda = torch.cuda.is_available()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    sizes = [int(v) for v in args.sweep.split(",") if v]
    stages, extra = {}, {}
    if args.scans_only:
        rgbs = [read_photo(e, None, DEFAULT_MAX_SIDE, fr.settings.max_pixels).rgb for e in entries[: max(sizes)]]
        fr.identify_faces([f for a in fr.analyse(rgbs[: args.chunk]) for f in a.faces], 3)
    else:
        stages, extra, rgbs = stage_table(fr, entries, options, args.chunk, sync)
    sweep = {}
    for size in sizes:
        part = rgbs[: max(sizes)]
        fr.pipeline.detector.detect_many(part[:size])
        sync()
        t = time.perf_counter()
        for i in range(0, len(part), size):
            fr.pipeline.detector.detect_many(part[i: i + size])
        sync()
        sweep[size] = round(len(part) / (time.perf_counter() - t), 1)
    print("detection batch sweep (photos/s):", sweep, flush=True)

    scans = {"main process": timed_scan(fr, str(args.folder), "main", options)}
    if args.analyse_workers:
        scans["analysing workers"] = timed_scan(fr, str(args.folder), "workers", replace(
            options, workers=args.analyse_workers, chunk=args.analyse_chunk, analyse_in_workers=True))

    result = {
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs, "
                   f"{torch.cuda.get_device_name(0) if cuda else 'no GPU'}, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": os.getloadavg(),
        "photos": n, "workers": args.workers, "chunk": args.chunk, "task": args.task, **extra,
        "seconds": {k: round(v, 3) for k, v in stages.items()},
        "photos_per_s": {k: round(n / v, 1) for k, v in stages.items()},
        "detection_batch_sweep_photos_per_s": sweep, "scans": scans,
    }
    print(f"{result['machine']}; {n} photos; reading workers {args.workers}, chunk {args.chunk}")
    print("| stage | seconds | photos/s |\n|---|---|---|")
    for k, v in stages.items():
        print(f"| {k} | {v:.2f} | {n / v:,.0f} |")
    for name, s in scans.items():
        print(f"| end to end, {name} ({s['workers']} workers, chunk {s['chunk']}) | {s['seconds']:.2f} | "
              f"{s['photos_per_s']:,.0f} (steady {s['steady_photos_per_s']}) |")
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
