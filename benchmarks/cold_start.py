"""Cold start: one `facerec verify` as a new process against `face_recognition` doing the same, in one run.

    python benchmarks/cold_start.py --lfw ../shared/data/faces/lfw [--runs 5]

Each run is a fresh interpreter: wall time, CPU time (user + system: less sensitive than wall time to other
load on a shared machine) and peak memory, from `os.wait4`. The peer loads dlib's models, encodes the enrolled
photo and the probe, and compares them (what a one-shot face_recognition script does). The runs alternate.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

PEER = """
import sys, face_recognition
known = face_recognition.face_encodings(face_recognition.load_image_file(sys.argv[1]))[0]
probe = face_recognition.face_encodings(face_recognition.load_image_file(sys.argv[2]))[0]
print(face_recognition.compare_faces([known], probe)[0])
"""


def timed(cmd: list[str], env: dict) -> tuple[float, float, float]:
    """(wall s, cpu s, peak MiB) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[:4]} failed: {proc.stderr.read().decode()[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "data" / "faces" / "lfw")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    enrolled, probe = args.lfw / "Colin_Powell" / "Colin_Powell_0001.jpg", args.lfw / "Colin_Powell" / "Colin_Powell_0002.jpg"
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "FACEREC_HOME": home}
        subprocess.run([sys.executable, "-m", "facerec", "enroll", "Colin Powell", str(enrolled)], env=env, cwd=REPO,
                       check=True, capture_output=True)
        commands = {"facerec verify": [sys.executable, "-m", "facerec", "verify", "Colin Powell", str(probe)],
                    "face_recognition": [sys.executable, "-c", PEER, str(enrolled), str(probe)],
                    "python -c 'import torch'": [sys.executable, "-c", "import torch"]}
        results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in commands}
        for _ in range(args.runs):
            for label, cmd in commands.items():
                results[label].append(timed(cmd, env))
    print(f"cold start, {args.runs} runs each, alternating ({os.cpu_count()} CPUs; medians)")
    print(f"{'command':28} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9}")
    for label, rows in results.items():
        wall, cpu, mem = np.median(np.array(rows), axis=0)
        print(f"{label:28} {wall:8.2f} {cpu:8.2f} {mem:9.0f}")


if __name__ == "__main__":
    main()
