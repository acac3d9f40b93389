"""Where a batch scan's time goes, stage by stage, then the whole scan: read (hash + decode + shrink in worker
processes), detection (batched MTCNN), alignment, embedding, identification, database writes, end to end.

    python benchmarks/batch_stage_times.py PHOTO_DIR [--workers 14] [--chunk 512] [--task 16] [--out stages.json]

Each stage is timed alone over every photo of the folder (models loaded and warmed first, GPU synchronised), in
chunks as the scan makes them; "end to end" is `facerec.batch.pipeline.scan` over the same folder into a fresh
SQLite file (worker pool start included; model load not: the engine is warm). Says what bounds the rate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    ap.add_argument("--chunk", type=int, default=512, help="photos per detection/embedding batch and transaction")
    ap.add_argument("--task", type=int, default=16, help="photos per worker task")
    ap.add_argument("--sweep", default="64,256,1024", help="detection batch sizes to time on one chunk's photos")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import numpy as np
    import torch

    from facerec.api import FaceRec, Settings
    from facerec.batch.pipeline import ScanOptions, analyse_photos, read_ahead, scan
    from facerec.batch.scan import walk
    from facerec.face.align import align_face
    from facerec.face.detect import detect_faces_many
    from facerec.store.batch import BatchStore

    entries = walk([str(args.folder)]).files
    tmp = Path(tempfile.mkdtemp())
    fr = FaceRec(Settings.resolve(db=str(tmp / "stages.db")))
    pipe = fr.pipeline
    options = ScanOptions(workers=args.workers, chunk=args.chunk, task=args.task, in_flight=4 * args.chunk)
    cuda = torch.cuda.is_available()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def chunks(items: list) -> list[list]:
        return [items[i: i + args.chunk] for i in range(0, len(items), args.chunk)]

    # read: the scan's own worker pool (spawn + first task included), all photos kept for the next stages
    t0 = time.perf_counter()
    photos, first = [], None
    for photo, _ in read_ahead([(e, None) for e in entries], options, fr.settings):
        photos.append(photo)
        first = first or time.perf_counter()
    t_read = time.perf_counter() - t0
    t_read_steady = time.perf_counter() - first
    print(f"read: {len(photos)} photos in {t_read:.2f} s", flush=True)
    photos = [p for p in photos if p.rgb is not None]
    rgbs = [p.rgb for p in photos]
    n = len(rgbs)

    warm = fr.analyse(rgbs[: min(n, args.chunk)])  # model load, CUDA start, kernel selection
    fr.identify_faces([f for a in warm for f in a.faces], 3)  # gallery and index load
    sync()
    sweep = {}
    for size in [int(s) for s in args.sweep.split(",") if s]:
        part = rgbs[: max(size, args.chunk)]
        pipe.detector.detect_many(part[:size])
        sync()
        t = time.perf_counter()
        for i in range(0, len(part), size):
            pipe.detector.detect_many(part[i: i + size])
        sync()
        sweep[size] = round(len(part) / (time.perf_counter() - t), 1)

    t = time.perf_counter()
    detections = []
    for part in chunks(rgbs):
        detections += detect_faces_many(pipe.detector, part, pipe.min_score, pipe.min_size)
    sync()
    t_detect = time.perf_counter() - t
    print(f"sweep {sweep}; detection {t_detect:.2f} s", flush=True)

    t = time.perf_counter()
    crops = [align_face(rgb, d.landmarks, pipe.model.template) for rgb, dets in zip(rgbs, detections) for d in dets]
    t_align = time.perf_counter() - t
    faces_n = len(crops)

    t = time.perf_counter()
    for part in chunks(crops):
        pipe.model.embed(np.stack(part), flip_fusion=pipe.flip_fusion)
    sync()
    t_embed = time.perf_counter() - t
    print(f"alignment {t_align:.2f} s, embedding {t_embed:.2f} s ({faces_n} faces)", flush=True)

    t = time.perf_counter()
    files = []
    for part in chunks(photos):
        files += analyse_photos(fr, part, 3)  # what the scan does per chunk: analyse_many + identify + records
    t_records = time.perf_counter() - t
    print(f"analyse + identify + records: {t_records:.2f} s", flush=True)
    # identification alone: the warm-up chunk's faces, repeated to as many faces as the folder holds
    some = [f for a in warm for f in a.faces]
    faces = (some * (faces_n // max(1, len(some)) + 1))[:faces_n]
    t = time.perf_counter()
    for part in chunks(faces):
        fr.identify_faces(part, 3, source="batch")
    t_identify = time.perf_counter() - t
    store = BatchStore(fr.store)
    job_id = store.open_job("stages", fr.card.id, [str(args.folder)])
    t = time.perf_counter()
    for part in chunks(files):
        store.write_chunk(job_id, fr.card.id, part)
    t_write = time.perf_counter() - t
    print(f"identification {t_identify:.2f} s, database write {t_write:.2f} s", flush=True)

    report = scan(fr, [str(args.folder)], "end_to_end", options)

    stages = {"read (workers)": t_read, "detection": t_detect, "alignment": t_align, "embedding": t_embed,
              "identification": t_identify, "database write": t_write,
              "analyse_photos (detect+align+quality+embed+identify+records)": t_records}
    result = {
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs, "
                   f"{torch.cuda.get_device_name(0) if cuda else 'no GPU'}, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": os.getloadavg(),
        "photos": n, "faces": faces_n, "workers": args.workers, "chunk": args.chunk, "task": args.task,
        "seconds": {k: round(v, 3) for k, v in stages.items()},
        "photos_per_s": {k: round(n / v, 1) for k, v in stages.items()},
        "read_steady_photos_per_s": round((n - 1) / t_read_steady, 1) if t_read_steady > 0 else None,
        "detection_batch_sweep_photos_per_s": sweep,
        "end_to_end": report.to_dict() | {"error_samples": report.error_samples[:3]},
    }
    lone = {k: v for k, v in stages.items() if k in ("read (workers)", "detection", "alignment", "embedding",
                                                    "identification", "database write")}
    result["slowest_stage"] = max(lone, key=lone.get)
    print(f"{result['machine']}; {n} photos, {faces_n} faces; workers {args.workers}, chunk {args.chunk}")
    print("| stage | seconds | photos/s |\n|---|---|---|")
    for k, v in stages.items():
        print(f"| {k} | {v:.2f} | {n / v:,.0f} |")
    print(f"| end to end (scan, {report.scanned} photos) | {report.seconds:.2f} | {report.rate:,.0f} |")
    print("detection batch sweep (photos/s):", sweep)
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
