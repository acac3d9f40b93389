"""Photos per second of `facerec batch scan` against the `face_recognition` CLI on the same folder, same run.

    nice -n 10 python benchmarks/batch_throughput.py [--photos 300] [--workers 2] [--cpus 2]

Both are timed end to end as a user runs them (process start and model loading included): the folder holds
the first N LFW photos in path order, copied flat; face_recognition gets one known person (a folder of one
photo) and the same folder as its unknown photos (`face_recognition --cpus C known/ photos/`: HOG detection
and dlib ResNet encoding of every face, one line per face). facerec scans into a fresh database (empty
gallery, so identification is the search of an empty index).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "data" / "faces" / "lfw"


CPU_SECONDS: dict[str, float] = {}  # command name -> CPU seconds (user + system) of it and all its processes
TICK = os.sysconf("SC_CLK_TCK")


def _tree_cpu(root: int, seen: dict[int, float]) -> None:
    """CPU seconds so far of `root` and every descendant (read from /proc), kept per pid in `seen`."""
    parents, times = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
    tree, grew = {root}, True
    while grew:
        new = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= new
        grew = bool(new)
    for pid in tree & times.keys():
        seen[pid] = max(seen.get(pid, 0.0), times[pid])


def timed(cmd: list[str], cwd: Path, name: str = "") -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds of a command, and its CPU seconds in CPU_SECONDS[name]: every process of its tree (worker
    pools too), sampled from /proc every 0.1 s (the last 0.1 s of a short-lived process is missed). CPU seconds
    are the fairer figure when other jobs load the machine."""
    seen: dict[int, float] = {}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        while proc.poll() is None:
            _tree_cpu(proc.pid, seen)
            time.sleep(0.1)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())
    CPU_SECONDS[name] = sum(seen.values())
    return wall, done


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2, help="facerec decoding processes")
    ap.add_argument("--cpus", type=int, default=2, help="face_recognition --cpus")
    ap.add_argument("--root", type=Path, default=LFW)
    ap.add_argument("--out", default="benchmarks/results/batch_throughput.json")
    args = ap.parse_args()
    files = sorted(args.root.glob("*/*.jpg"))[: args.photos]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos, known = tmp / "photos", tmp / "known"
        photos.mkdir()
        known.mkdir()
        for f in files:
            shutil.copy(f, photos / f.name)
        shutil.copy(files[0], known / "someone.jpg")
        fr_s, fr_out = timed([sys.executable, str(REPO / "cli.py"), "--db", str(tmp / "bench.db"), "batch", "scan",
                              str(photos), "--job", "bench", "--workers", str(args.workers), "--json"], REPO, "facerec")
        if fr_out.returncode != 0:
            raise SystemExit(f"facerec failed: {fr_out.stderr[-1000:]}")
        ours = json.loads(fr_out.stdout)
        fw_s, fw_out = timed([sys.executable, str(REPO / "cli.py"), "--db", str(tmp / "bench2.db"), "batch", "scan",
                              str(photos), "--job", "bench", "--workers", str(args.workers), "--analyse-in-workers",
                              "--json"], REPO, "facerec_analyse_in_workers")
        if fw_out.returncode != 0:
            raise SystemExit(f"facerec failed: {fw_out.stderr[-1000:]}")
        ours_w = json.loads(fw_out.stdout)
        peer = shutil.which("face_recognition", path=str(Path(sys.executable).parent)) or "face_recognition"
        fc_s, fc_out = timed([peer, "--cpus", str(args.cpus), str(known), str(photos)], REPO, "face_recognition")
        if fc_out.returncode != 0:
            raise SystemExit(f"face_recognition failed: {fc_out.stderr[-1000:]}")
        peer_faces = sum(1 for line in fc_out.stdout.splitlines() if line.strip() and ",no_persons_found" not in line
                         and line.count(",") >= 1)
        peer_lines = len([line for line in fc_out.stdout.splitlines() if line.strip()])
    n = len(files)
    result = {
        "photos": n, "machine": f"{platform.node()} ({os.cpu_count()} CPUs, shared with other jobs)",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "facerec": {"seconds": round(fr_s, 2), "photos_per_s": round(n / fr_s, 3), "faces": ours["faces"],
                    "workers": args.workers, "scan_only_photos_per_s": ours["photos_per_s"]},
        "facerec_analyse_in_workers": {"seconds": round(fw_s, 2), "photos_per_s": round(n / fw_s, 3),
                                       "faces": ours_w["faces"], "workers": args.workers,
                                       "scan_only_photos_per_s": ours_w["photos_per_s"]},
        "face_recognition": {"seconds": round(fc_s, 2), "photos_per_s": round(n / fc_s, 3), "output_lines": peer_lines,
                             "faces_matched_or_unknown": peer_faces, "cpus": args.cpus},
    }
    for name, cpu in CPU_SECONDS.items():
        result[name] |= {"cpu_seconds": round(cpu, 2), "photos_per_cpu_s": round(n / cpu, 3)}
    result["load_after"] = os.getloadavg()
    result["speedup_per_cpu_s"] = round(max(result["facerec"]["photos_per_cpu_s"],
                                            result["facerec_analyse_in_workers"]["photos_per_cpu_s"])
                                        / result["face_recognition"]["photos_per_cpu_s"], 2)
    result["speedup"] = round(result["facerec"]["photos_per_s"] / result["face_recognition"]["photos_per_s"], 2)
    result["speedup_analyse_in_workers"] = round(
        result["facerec_analyse_in_workers"]["photos_per_s"] / result["face_recognition"]["photos_per_s"], 2)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print("| tool | photos | seconds (end to end) | photos/s | faces |")
    print("|---|---|---|---|---|")
    print(f"| facerec batch scan (--workers {args.workers}) | {n} | {fr_s:.1f} | {n / fr_s:.2f} | {ours['faces']} |")
    print(f"| facerec batch scan (--workers {args.workers} --analyse-in-workers) | {n} | {fw_s:.1f} | {n / fw_s:.2f} "
          f"| {ours_w['faces']} |")
    print(f"| face_recognition CLI (--cpus {args.cpus}) | {n} | {fc_s:.1f} | {n / fc_s:.2f} | {peer_lines} lines |")
    print(f"speed-up with --analyse-in-workers: {result['speedup_analyse_in_workers']}x")
    print("CPU seconds (all processes): " + ", ".join(f"{k} {v:.1f}" for k, v in CPU_SECONDS.items())
          + f"; photos per CPU second, facerec (best) / face_recognition: {result['speedup_per_cpu_s']}x")
    print(f"speed-up: {result['speedup']}x (facerec's own scan rate, model load excluded: {ours['photos_per_s']} photos/s)")


if __name__ == "__main__":
    main()
