"""Gallery at scale: bulk enrollment rate into SQLite / PostgreSQL and `facerec identify` start-up time.

    python benchmarks/gallery_scale.py make --n 1000000 --out pack/gallery_1e6.npz
    python benchmarks/gallery_scale.py enroll --file pack/gallery_1e6.npz --db sqlite:///pack/g.db [--json OUT]
    python benchmarks/gallery_scale.py startup --db sqlite:///pack/g.db --photo A.jpg --enroll-photo B.jpg [--json OUT]
    python benchmarks/gallery_scale.py beside --db sqlite:///pack/g99k.db [--json OUT]

Embeddings are synthetic, drawn like benchmarks/search_scale.py's distractors: x = mu + L z (mu, Sigma = L L^T of
the 19,223 real 192-d mobilefacenet embeddings of LFW + CelebA in pack/faces.npz), L2-normalised; two
templates a person. `enroll` runs `cli.py enroll --embeddings` in a fresh process (what a user runs) and
reads its JSON: templates/s is added / the verb's own seconds; wall includes imports and the final index
compaction. `startup` enrolls one real photo (`--enroll-photo`) of the probe's person once, then times, in
fresh processes, (a) `cli.py identify PHOTO` from process start to exit, and (b) the same steps split:
imports, database open + generation check, index open (manifest, mmap, log replay, id -> person cache),
model load (torch, detector and embedder weights), detection + embedding, search + decision (with the audit
event); `startup` also reports a second, warm detection + embedding and the time outside the in-process
steps (interpreter start and exit). `beside` (a gallery of just under 1e5 enrolled with `--index-kind auto`):
one add crosses 1e5, where `auto` switches flat -> HNSW; it times that add, the background rebuild, and the
latency of searches from another thread before, during and after it.
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
TREE = os.environ.get("FACEREC_TREE", str(REPO))  # whose facerec `beside` runs (another checkout: a before/after)
sys.path.insert(0, TREE)

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
pipeline = fr.pipeline
t3m = time.perf_counter()
analysed = pipeline.analyse(sys.argv[3])
t4 = time.perf_counter()
faces = fr.identify_faces(analysed.faces, 1, source=sys.argv[3], point=fr.operating_point(IDENTIFICATION))
t5 = time.perf_counter()
pipeline.analyse(sys.argv[3])
t6 = time.perf_counter()
print(json.dumps({"imports_s": t1 - t0, "db_open_generation_s": t2 - t1, "index_open_s": t3 - t2,
                  "model_load_s": t3m - t3, "detect_embed_s": t4 - t3m, "search_decide_s": t5 - t4,
                  "in_process_s": t5 - t0, "warm_detect_embed_s": t6 - t5,
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
                     "split_wall_s": round(split_wall, 3),
                     "outside_steps_s": round(split_wall - parts["in_process_s"] - parts["warm_detect_embed_s"], 3)})
    _emit(args, "startup", rows)


def beside(args) -> None:
    """Searches while `auto` switches a gallery from flat to HNSW at 1e5: the add that crosses the line, and
    searches from another thread during the rebuild (which used to run inside that add)."""
    import threading

    from facerec.api import FaceRec, Settings
    from facerec.store import NewTemplate

    fr = FaceRec(Settings.resolve(db=args.db, index=args.index, index_kind="auto"))
    gallery = fr.gallery
    start = time.perf_counter()
    gallery.sync()
    opened = time.perf_counter() - start
    rng = np.random.default_rng(1)
    probes = rng.standard_normal((256, fr.card.embedding_dim)).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    latencies: list[tuple[float, float]] = []
    stop = threading.Event()

    def searcher() -> None:
        k = 0
        while not stop.is_set():
            t = time.perf_counter()
            gallery.search(probes[k % len(probes)][None], 5)
            latencies.append((t, time.perf_counter() - t))
            k += 1

    thread = threading.Thread(target=searcher)
    thread.start()
    time.sleep(5)
    need = 100_000 - gallery.size + args.extra
    vectors = rng.standard_normal((need, fr.card.embedding_dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    t_add = time.perf_counter()
    gallery.add("crosses the line", [NewTemplate(v, fr.card.id, fr.card.version, f"{i:064x}", "bench", 1.0, {})
                                     for i, v in enumerate(vectors)])
    add_s = time.perf_counter() - t_add
    worker = getattr(gallery, "_worker", None)  # a checkout without the background worker rebuilt inside add
    t_build = time.perf_counter()
    if worker is not None:
        worker.join()
    rebuilt_s = time.perf_counter() - t_build + add_s
    time.sleep(5)
    stop.set()
    thread.join()

    def stats(lo: float, hi: float) -> dict:
        ms = np.array([d for t, d in latencies if lo <= t < hi]) * 1e3
        return {"searches": int(len(ms)), "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
                "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
                "max_ms": round(float(ms.max()), 1) if len(ms) else None}

    rows = [{"phase": "before (flat)", **stats(0, t_add)},
            {"phase": "during the rebuild", **stats(t_add, t_build + rebuilt_s - add_s)},
            {"phase": "after (hnsw)", **stats(t_build + rebuilt_s - add_s, float("inf"))}]
    for r in rows:
        r.update(tree=TREE, open_s=round(opened, 2), add_s=round(add_s, 3), rebuild_s=round(rebuilt_s, 1),
                 kind_after=gallery._index.kind, templates=gallery.size)
    _emit(args, "beside", rows)


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
    for name in ("enroll", "startup", "beside"):
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
    sub.choices["beside"].add_argument("--extra", type=int, default=10, help="templates past 1e5")
    args = p.parse_args()
    {"make": make, "enroll": enroll, "startup": startup, "beside": beside}[args.cmd](args)


if __name__ == "__main__":
    main()
