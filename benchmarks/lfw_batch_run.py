"""The LFW batch run behind benchmarks/batch_clustering.py: enroll 50 people (one photo each), then scan all of
LFW with `facerec batch scan`, SIGKILL the scan half-way and resume it.

    nice -n 19 python benchmarks/lfw_batch_run.py --db /tmp/lfw_batch.db [--subset N]

Writes <db>.run.json (enrolled people, kill point, the two runs' outputs). `--subset N` scans the folders of the
first people in name order up to N photos, plus every enrolled person's folder (a documented subset for when
all 13,233 photos are too slow on a shared CPU); the job is resumable, so a subset run can later be extended.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LFW = REPO.parent / "shared" / "data" / "faces" / "lfw"
ENROLLED = 50
SEED = 0


def people_to_enroll(root: Path, n: int = ENROLLED, seed: int = SEED) -> list[str]:
    """`n` people with at least two photos, drawn with a fixed seed: photo 1 enrolled, the rest are probes."""
    several = sorted(p.name for p in root.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= 2)
    return sorted(random.Random(seed).sample(several, n))


def subset(root: Path, photos: int, enrolled: list[str]) -> list[Path]:
    """Person folders in name order up to `photos` photos, plus the enrolled people's folders."""
    chosen, count = [], 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if count >= photos:
            break
        chosen.append(folder)
        count += len(list(folder.glob("*.jpg")))
    return sorted(set(chosen) | {root / name for name in enrolled})


def files_done(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return conn.execute("SELECT count(*) FROM batch_files").fetchone()[0]
    except sqlite3.Error:
        return 0


def verify(db: Path, job: str, window: int) -> dict:
    """No face lost or duplicated across the kill: every photo stored once with faces 0..n-1, and the photos
    around the kill point (in path order) give the same faces when scanned again without interruption."""
    import tempfile

    import numpy as np

    from facerec.api import Settings
    from facerec.batch.pipeline import ScanOptions
    from facerec.batch.service import BatchService

    run = json.loads(Path(str(db) + ".run.json").read_text())
    service = BatchService(Settings.resolve(db=str(db)))
    faces = service.store.faces(service.store.job_id(job))
    files = sorted(service.store.known_files(service.store.job_id(job)))
    per_file: dict[str, list[int]] = {}
    for p, k in zip(faces.paths, faces.face_index.tolist()):
        per_file.setdefault(p, []).append(k)
    contiguous = all(sorted(v) == list(range(len(v))) for v in per_file.values())
    k = run["killed_at_files"]
    chosen = files[max(0, k - window // 2): k + window // 2]
    with tempfile.TemporaryDirectory() as tmp:
        clean = BatchService(Settings.resolve(db=str(Path(tmp) / "clean.db")))
        clean.scan(chosen, "clean", ScanOptions(workers=1))
        ref = clean.store.faces(clean.store.job_id("clean"))
        ref_rows = {(p, i): r for r, (p, i) in enumerate(zip(ref.paths, ref.face_index.tolist()))}
    got_rows = {(p, i): r for r, (p, i) in enumerate(zip(faces.paths, faces.face_index.tolist())) if p in set(chosen)}
    same_faces = set(ref_rows) == set(got_rows)
    diffs = [float(np.abs(ref.embeddings[ref_rows[key]] - faces.embeddings[got_rows[key]]).max())
             for key in ref_rows if key in got_rows]
    return {"photos": len(files), "faces": len(faces), "paths_unique": len(set(files)) == len(files),
            "face_indices_contiguous": contiguous, "window": [chosen[0], chosen[-1]], "window_photos": len(chosen),
            "window_faces_resumed": len(got_rows), "window_faces_clean": len(ref_rows), "same_faces": same_faces,
            "max_embedding_difference": max(diffs, default=0.0)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--verify", type=int, default=None, help="only check the stored run: rescan this many photos around the kill point")
    ap.add_argument("--root", type=Path, default=LFW)
    ap.add_argument("--subset", type=int, default=None)
    ap.add_argument("--job", default="lfw")
    args = ap.parse_args()
    if args.verify:
        result = verify(args.db, args.job, args.verify)
        Path(str(args.db) + ".verify.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return

    from facerec.api import FaceRec, Settings

    names = people_to_enroll(args.root)
    with FaceRec(Settings.resolve(db=str(args.db))) as fr:
        for name in names:
            fr.enroll(name.replace("_", " "), [args.root / name / f"{name}_0001.jpg"], force=True, choose_subject=True,
                      allow_duplicate=True)
    roots = subset(args.root, args.subset, names) if args.subset else [args.root]
    total = sum(len(list(r.glob("*.jpg"))) for r in roots) if args.subset else sum(1 for _ in args.root.glob("*/*.jpg"))
    cmd = [sys.executable, str(REPO / "cli.py"), "--db", str(args.db), "batch", "scan", *map(str, roots),
           "--job", args.job, "--json"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.time()
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    while first.poll() is None and files_done(args.db) < total // 2:
        time.sleep(1)
    killed_at = files_done(args.db)
    first.send_signal(signal.SIGKILL)
    first.wait()
    t1 = time.time()
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    t2 = time.time()
    run = {"enrolled": names, "photos": total, "roots": [r.name for r in roots] if args.subset else [str(args.root)], "killed_at_files": killed_at, "first_run_s": t1 - t0,
           "resume_s": t2 - t1, "resume_rc": second.returncode, "resume_output": json.loads(second.stdout or "{}"),
           "resume_stderr_tail": second.stderr[-2000:], "files_after": files_done(args.db)}
    Path(str(args.db) + ".run.json").write_text(json.dumps(run, indent=2))
    print(json.dumps({k: v for k, v in run.items() if k not in ("enrolled", "roots")}, indent=2))


if __name__ == "__main__":
    main()
