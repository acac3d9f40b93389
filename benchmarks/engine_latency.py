"""Warm-engine latency of identify / verify and of the gallery search alone, this checkout against another.

    python benchmarks/engine_latency.py --before /path/to/older/checkout [--people 30 --rounds 3]

Each checkout runs in its own process (its own `facerec` on PYTHONPATH) on its own fresh SQLite database:
enroll N LFW people from their first photo, then time `identify` and `verify` on their second photo and the
1:K search of an already-embedded face, after one warm-up pass. The two are measured in alternating rounds
(before, after, before, ...) so a busy machine slows both alike. Prints one table; `--json` writes raw numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]


def lfw_people(lfw: Path, count: int) -> list[tuple[str, Path, Path]]:
    people = []
    for folder in sorted(p for p in lfw.iterdir() if p.is_dir()):
        photos = sorted(folder.glob("*.jpg"))
        if len(photos) >= 2:
            people.append((folder.name.replace("_", " "), photos[0], photos[1]))
        if len(people) == count:
            break
    return people


def measure(lfw: Path, people_count: int, workdir: Path) -> dict:
    """Runs inside one checkout's process: milliseconds per call, after a warm-up."""
    from facerec import FacerecError
    from facerec.api import FaceRec

    fr = FaceRec(db=f"sqlite:///{workdir / 'bench.db'}", index=str(workdir / "bench.faiss"))
    probes, embeddings = [], []
    for name, first, second in lfw_people(lfw, people_count):
        try:  # photos with several faces are refused by both engines: such people are left out
            if name not in {p.name for p in fr.people()}:
                fr.enroll(name, [first], allow_duplicate=True, force=True)
            embeddings.append(fr.pipeline.single_face(second, label=str(second)).embedding)
            probes.append((name, second))
        except FacerecError:
            continue

    def search(e: np.ndarray):
        if hasattr(fr, "gallery"):  # the engine with a gallery service
            return fr.gallery.search(e[None], 1)
        return fr._candidates(e, 1)  # the engine before it

    timings: dict[str, list[float]] = {"identify": [], "verify": [], "search": []}
    for warm in (True, False):
        for (name, path), e in zip(probes, embeddings):
            for verb, call in (("identify", lambda: fr.identify(path)), ("verify", lambda: fr.verify(name, path)),
                               ("search", lambda: search(e))):
                start = time.perf_counter()
                call()
                if not warm:
                    timings[verb].append((time.perf_counter() - start) * 1000)
    return {"people": len(probes), **timings}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="an older facerec checkout to compare with")
    ap.add_argument("--lfw", type=Path, default=HERE.parent / "shared" / "data" / "faces" / "lfw")
    ap.add_argument("--people", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write the raw timings here")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.lfw, args.people, Path(args.child[1]))))
        return
    checkouts = {"before": args.before.resolve(), "after": HERE}
    raw: dict[str, dict[str, list[float]]] = {k: {"identify": [], "verify": [], "search": []} for k in checkouts}
    used: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for label, checkout in checkouts.items():
                workdir = Path(tmp) / label
                workdir.mkdir(exist_ok=True)
                env = {**os.environ, "PYTHONPATH": str(checkout), "FACEREC_TORCH_THREADS": "1"}
                out = subprocess.run([sys.executable, __file__, "--before", str(args.before), "--lfw", str(args.lfw),
                                      "--people", str(args.people), "--child", label, str(workdir)],
                                     cwd=checkout, env=env, capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"{label} ({checkout}) failed:\n{out.stderr[-2000:]}")
                result = json.loads(out.stdout.strip().splitlines()[-1])
                used[label] = result.pop("people")
                for verb, values in result.items():
                    raw[label][verb] += values
    print(f"warm engine, LFW people enrolled and probed: {used} (of the first {args.people} with 2+ photos), "
          f"{args.rounds} rounds, 1 torch thread ({os.cpu_count()} CPUs)")
    print(f"{'call':10} {'before p50':>11} {'after p50':>10} {'before p95':>11} {'after p95':>10} {'after/before p50':>17}")
    for verb in ("identify", "verify", "search"):
        b, a = np.array(raw["before"][verb]), np.array(raw["after"][verb])
        print(f"{verb:10} {np.median(b):10.3f}ms {np.median(a):9.3f}ms {np.percentile(b, 95):10.3f}ms "
              f"{np.percentile(a, 95):9.3f}ms {np.median(a) / np.median(b):16.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"people": used, "rounds": args.rounds, "timings_ms": raw}, indent=1))


if __name__ == "__main__":
    main()
