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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--root", type=Path, default=LFW)
    ap.add_argument("--subset", type=int, default=None)
    ap.add_argument("--job", default="lfw")
    args = ap.parse_args()

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
