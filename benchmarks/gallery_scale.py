"""Gallery at scale: bulk enrollment rate into SQLite / PostgreSQL and `facerec identify` start-up time.

    python benchmarks/gallery_scale.py make --n 1000000 --out pack/gallery_1e6.npz
    python benchmarks/gallery_scale.py enroll --file pack/gallery_1e6.npz --db sqlite:///pack/g.db [--json OUT]
    python benchmarks/gallery_scale.py startup --db sqlite:///pack/g.db --photo A.jpg --enroll-photo B.jpg [--json OUT]

Embeddings are synthetic, drawn like benchmarks/search_scale.py's distractors: x = mu + L z (mu, Sigma = L L^T of
the 19,223 real 192-d mobilefacenet embeddings of LFW + CelebA in pack/faces.npz), L2-normalised; two
templates a person. `enroll` runs `cli.py enroll --embeddings` in a fresh process (what a user runs) and
reads its JSON: templates/s is added / the verb's own seconds; wall includes imports and the final index
compaction. `startup` enrolls one real photo (`--enroll-photo`) of the probe's person once, then times, in
fresh processes, (a) `cli.py identify PHOTO` from process start to exit, and (b) the same steps split:
imports, database open + generation check, index open (manifest, mmap, log replay, id -> person cache),
detection + embedding (model load included), search + decision.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

SPLIT = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from facerec.api import FaceRec, Settings
from facerec.decisions.thresholds import IDENTIFICATION
t1 = time.perf_counter()
fr = FaceRec(Settings.resolve(db=sys.argv[1], index=sys.argv[2] or None, index_kind=sys.argv[4]))
state = fr.store.state()
t2 = time.perf_counter()
fr.gallery.sync()
t3 = time.perf_counter()
analysed = fr.pipeline.analyse(sys.argv[3])
t4 = time.perf_counter()
faces = fr.identify_faces(analysed.faces, 1, source=sys.argv[3], point=fr.operating_point(IDENTIFICATION))
t5 = time.perf_counter()
print(json.dumps({"imports_s": t1 - t0, "db_open_generation_s": t2 - t1, "index_open_s": t3 - t2,
                  "detect_embed_s": t4 - t3, "search_decide_s": t5 - t4, "in_process_s": t5 - t0,
                  "answer": [f.name for f in faces], "score": [f.score for f in faces],
                  "templates": fr.gallery.size, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make(args) -> None:
    real = np.load(REPO / "pack" / "faces.npz") if not args.faces else np.load(args.faces)
    x = real["vectors"].astype(np.float64)
    mu, cov = x.mean(0), np.cov(x, rowvar=False)
    chol = np.linalg.cholesky(cov + 1e-9 * np.eye(len(mu)))
    rng = np.random.default_rng(args.seed)
    out = np.empty((args.n, x.shape[1]), np.float32)
    for s in range(0, args.n, 100_000):
        z = rng.standard_normal((min(100_000, args.n - s), x.shape[1]))
        v = mu + z @ chol.T
        out[s:s + len(v)] = v / np.linalg.norm(v, axis=1, keepdims=True)
    names = np.array([f"synthetic {i // 2:07d}" for i in range(args.n)])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, names=names, embeddings=out, model_id=np.array(str(real["model"])), dim=np.array(out.shape[1]))
    print(f"wrote {args.out}: {args.n} x {out.shape[1]} ({len(set(names.tolist()))} people)")


def _run(cmd: list[str], env: dict | None = None) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run, with wall time and the child's peak RSS (MB, from wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    rss = _peak_rss_mb(proc.pid)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), wall, rss


_RUSAGE: dict[int, float] = {}


def _peak_rss_mb(pid: int) -> float:
    return _RUSAGE.get(pid, float("nan"))


def _wait4_hook() -> None:
    """Record each child's peak RSS: Popen reaps with waitpid; wrap it with wait4 for the rusage."""
    original = os.waitpid

    def waitpid(pid, options):
        if pid > 0:
            got, status, usage = os.wait4(pid, options)
            if got:
                _RUSAGE[got] = usage.ru_maxrss / 1024
            return got, status
        return original(pid, options)

    os.waitpid = waitpid


def enroll(args) -> None:
    cmd = [sys.executable, "cli.py", "--db", args.db, "--index-kind", args.index_kind]
    if args.index:
        cmd += ["--index", args.index]
    cmd += ["enroll", "--embeddings", args.file, "--chunk", str(args.chunk), "--json"]
    proc, wall, rss = _run(cmd)
    if proc.returncode != 0:
        sys.exit(f"enroll failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout)
    row = {"db": args.db.split("://")[0].split("+")[0], "file": args.file, "chunk": args.chunk,
           "index_kind": args.index_kind, "added": result["added"], "skipped": result["skipped"],
           "verb_s": round(result["seconds"], 2), "wall_s": round(wall, 2),
           "templates_per_s": round(result["added"] / result["seconds"], 1) if result["seconds"] else None,
           "peak_rss_mb": round(rss, 1)}
    _emit(args, "enroll", [row])


def startup(args) -> None:
    index = ["--index", args.index] if args.index else []
    base = [sys.executable, "cli.py", "--db", args.db, "--index-kind", args.index_kind, *index]
    setup, _, _ = _run(base + ["enroll", "probe person", args.enroll_photo, "--json"])
    if setup.returncode not in (0,):
        sys.exit(f"enrolling the probe's person failed: {setup.stderr[-2000:]}")
    rows = []
    for run in range(args.repeat):
        proc, wall, rss = _run(base + ["identify", args.photo, "--json"])
        if proc.returncode != 0:
            sys.exit(f"identify failed: {proc.stderr[-2000:]}")
        answer = json.loads(proc.stdout)
        split, split_wall, split_rss = _run([sys.executable, "-c", SPLIT, args.db, args.index or "", args.photo,
                                             args.index_kind])
        if split.returncode != 0:
            sys.exit(f"split run failed: {split.stderr[-2000:]}")
        parts = json.loads(split.stdout)
        rows.append({"run": run, "cli_identify_wall_s": round(wall, 3), "cli_peak_rss_mb": round(rss, 1),
                     "cli_answer": [f["name"] for f in answer["faces"]],
                     **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in parts.items()},
                     "split_wall_s": round(split_wall, 3)})
    _emit(args, "startup", rows)


def _emit(args, what: str, rows: list[dict]) -> None:
    keys = list(rows[0])
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(str(r[k]) for k in keys))
    if args.json:
        load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
        doc = {"benchmark": f"gallery_scale {what}", "command": " ".join(sys.argv), "machine": platform.node(),
               "cpus": os.cpu_count(), "python": platform.python_version(),
               "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "load_after": load, "rows": rows,
               "embeddings": "synthetic: mu + L z from pack/faces.npz (19,223 real mobilefacenet embeddings), normalised"}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=1))


def main() -> None:
    _wait4_hook()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--n", type=int, required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--faces", help="real embeddings (default pack/faces.npz, a copy of /work/wt21/pack/faces.npz)")
    m.add_argument("--seed", type=int, default=0)
    for name in ("enroll", "startup"):
        q = sub.add_parser(name)
        q.add_argument("--db", required=True)
        q.add_argument("--index")
        q.add_argument("--index-kind", default="flat")
        q.add_argument("--json")
    sub.choices["enroll"].add_argument("--file", required=True)
    sub.choices["enroll"].add_argument("--chunk", type=int, default=10_000)
    sub.choices["startup"].add_argument("--photo", required=True)
    sub.choices["startup"].add_argument("--enroll-photo", required=True)
    sub.choices["startup"].add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    {"make": make, "enroll": enroll, "startup": startup}[args.cmd](args)


if __name__ == "__main__":
    main()
