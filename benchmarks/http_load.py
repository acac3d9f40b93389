"""Load on the HTTP service: concurrent clients for minutes against `facerec serve --workers 2` on PostgreSQL.

    FACEREC_TEST_PG_URL=postgresql+psycopg://USER:PW@HOST/postgres \\
    .venv/bin/python benchmarks/http_load.py --lfw ../shared/data/faces/lfw --duration 180 --clients 8 \\
        --json benchmarks/results/http_load.json

A fresh database is created on that server (and dropped afterwards). The clients mix what kiosks and apps
do: identify a photo of someone enrolled or not (60 %), verify a claimed subject (15 %), enroll a new person
from one LFW photo and at once identify their second photo (15 %; the two requests may land on different
workers, so this checks that a worker sees another's enrollment at its next request), list subjects (10 %).
Reports requests/s, p50/p95 latency per route, errors (anything but the expected answer; a photo refused
with 422 is counted apart), worker start-up, enrollments made vs found in the database afterwards, and the
identify outcomes (strangers named as someone are the open-set false identifications of the threshold in
force, which is not gallery-calibrated here). No peer: there is no CompreFace/DeepStack on this
machine to load the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def people(lfw: Path, with_two: bool) -> list[tuple[str, list[Path]]]:
    found = []
    for folder in sorted(p for p in lfw.iterdir() if p.is_dir()):
        photos = sorted(folder.glob("*.jpg"))
        if (len(photos) >= 2) == with_two:
            found.append((folder.name.replace("_", " "), photos))
    return found


class Load:
    def __init__(self, url: str, token: str, enroll_pool, known, strangers, seed: int) -> None:
        self.url, self.token = url, token
        self.enroll_pool = enroll_pool
        self.known = known  # enrolled before the run: (name, probe photo)
        self.strangers = strangers  # never enrolled
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: Counter = Counter()
        self.errors: list[str] = []
        self.enrolled: list[str] = []
        self.seen_next = Counter()  # identify right after enroll: "match" on the new name, or what else
        self.probes = Counter()  # identify outcomes of the enrolled people's second photos and of strangers
        self.refused = 0
        self.rng = random.Random(seed)

    def request(self, client: httpx.Client, route: str, method: str, path: str, expect: int, **kw):
        start = time.perf_counter()
        try:
            r = client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            with self.lock:
                self.errors.append(f"{route}: {type(exc).__name__}: {exc}")
                self.status[(route, "exception")] += 1
            return None
        elapsed = time.perf_counter() - start
        with self.lock:
            self.latency[route].append(elapsed)
            self.status[(route, r.status_code)] += 1
            if r.status_code == 422:  # a photo refused (several faces, low quality): an answer, not an error
                self.refused += 1
            elif r.status_code != expect:
                self.errors.append(f"{route}: {r.status_code} {r.text[:200]}")
        return r if r.status_code == expect else None

    def client_loop(self, deadline: float, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, headers={"x-api-key": self.token}, timeout=120) as client:
            while time.monotonic() < deadline:
                roll = rng.random()
                if roll < 0.60:
                    if rng.random() < 0.5:
                        name, probe = rng.choice(self.known)
                    else:
                        name, probe = None, rng.choice(self.strangers)
                    r = self.request(client, "identify", "POST", "/v1/identify", 200,
                                     files={"image": probe.read_bytes()})
                    if r is not None and r.json()["faces"]:
                        got = r.json()["faces"][0]["name"]
                        outcome = ("stranger_unknown" if got == "unknown" else "stranger_named") if name is None \
                            else ("known_right" if got == name else "known_unknown" if got == "unknown" else "known_wrong")
                        with self.lock:
                            self.probes[outcome] += 1
                elif roll < 0.75:
                    name, probe = rng.choice(self.known)
                    self.request(client, "verify", "POST", "/v1/verify", 200,
                                 files={"image": probe.read_bytes()}, data={"subject": name})
                elif roll < 0.90:
                    with self.lock:
                        if not self.enroll_pool:
                            continue
                        name, photos = self.enroll_pool.pop()
                    r = self.request(client, "enroll", "POST", f"/v1/subjects/{name}/faces", 201,
                                     files={"images": photos[0].read_bytes()}, data={"allow_duplicate": "true"})
                    if r is None:
                        continue
                    with self.lock:
                        self.enrolled.append(name)
                    r = self.request(client, "identify", "POST", "/v1/identify", 200,
                                     files={"image": photos[1].read_bytes()})
                    if r is not None:
                        faces = r.json()["faces"]
                        outcome = "no_face" if not faces else ("match" if faces[0]["name"] == name else
                                                              "unknown" if faces[0]["name"] == "unknown" else "other")
                        with self.lock:
                            self.seen_next[outcome] += 1
                else:
                    self.request(client, "subjects", "GET", "/v1/subjects", 200)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000.0, q)) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "data" / "faces" / "lfw")
    ap.add_argument("--duration", type=float, default=180.0, help="seconds of load")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--known", type=int, default=100, help="people enrolled before the load starts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from facerec.api import FaceRec, Settings, upgrade_database

    admin_url = os.environ["FACEREC_TEST_PG_URL"]
    dbname = f"facerec_http_load_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{dbname}"'))
    db = make_url(admin_url).set(database=dbname).render_as_string(hide_password=False)
    home = Path(f"/tmp/{dbname}")
    server = None
    try:
        settings = Settings.resolve(db=db)
        upgrade_database(settings)
        with FaceRec(settings) as fr:
            _, token = fr.keys.create("http_load", ["recognize", "enroll", "admin"])
        rng = random.Random(args.seed)
        two = people(args.lfw, with_two=True)
        rng.shuffle(two)
        known, pool = two[: args.known], two[args.known:]
        strangers = [photos[0] for _, photos in people(args.lfw, with_two=False)]
        rng.shuffle(strangers)

        port = free_port()
        env = {**os.environ, "FACEREC_HOME": str(home)}
        started = time.monotonic()
        server = subprocess.Popen(
            [sys.executable, str(REPO / "cli.py"), "--db", db, "serve", "--port", str(port), "--workers",
             str(args.workers), "--rate", "10000", "--burst", "10000", "--log-level", "warning"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        url = f"http://127.0.0.1:{port}"
        pids = set()
        while len(pids) < args.workers:
            if server.poll() is not None:
                raise SystemExit(f"server exited: {server.stdout.read()}")
            try:
                r = httpx.get(f"{url}/health", timeout=2)
                pids.add(r.json()["worker_pid"])
                startup = {r.json()["worker_pid"]: r.json()["startup_seconds"]}
            except httpx.HTTPError:
                time.sleep(0.3)
        first_ready = time.monotonic() - started
        worker_startup = {}
        for _ in range(50):  # every worker's own start-up time
            h = httpx.get(f"{url}/health", timeout=5).json()
            worker_startup[h["worker_pid"]] = h["startup_seconds"]
        worker_startup |= startup

        probes = []
        with httpx.Client(base_url=url, headers={"x-api-key": token}, timeout=120) as client:
            for name, photos in known:
                r = client.post(f"/v1/subjects/{name}/faces", files={"images": photos[0].read_bytes()},
                                data={"allow_duplicate": "true"})
                if r.status_code == 201:
                    probes.append((name, photos[1]))
                elif r.status_code != 422:  # 422: a photo with several faces or low quality, skipped
                    r.raise_for_status()

        load = Load(url, token, pool, probes, strangers, args.seed)
        deadline = time.monotonic() + args.duration
        threads = [threading.Thread(target=load.client_loop, args=(deadline, args.seed + i)) for i in range(args.clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0

        with httpx.Client(base_url=url, headers={"x-api-key": token}, timeout=120) as client:
            listed = {s["name"]: s["templates"] for s in client.get("/v1/subjects").json()["subjects"]}
        found = sum(1 for name in load.enrolled if listed.get(name) == 1)
        with FaceRec(settings) as fr:
            in_db = {p.name for p in fr.people()}

        total = sum(len(v) for v in load.latency.values())
        routes = {route: {"requests": len(v), "p50_ms": percentile(v, 50), "p95_ms": percentile(v, 95),
                          "p99_ms": percentile(v, 99)} for route, v in sorted(load.latency.items())}
        everything = [x for v in load.latency.values() for x in v]
        report = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores (shared with other jobs)",
            "command": " ".join(sys.argv),
            "workers": args.workers, "clients": args.clients, "duration_s": round(wall, 1),
            "first_worker_ready_s": round(first_ready, 1),
            "worker_startup_s": {str(k): round(v, 1) for k, v in worker_startup.items()},
            "requests": total, "requests_per_s": round(total / wall, 2),
            "p50_ms": percentile(everything, 50), "p95_ms": percentile(everything, 95), "routes": routes,
            "status": {f"{route} {code}": n for (route, code), n in sorted(load.status.items(), key=str)},
            "errors": len(load.errors), "error_samples": load.errors[:10],
            "photos_refused_422": load.refused, "people_enrolled_before_load": len(probes),
            "enrollments_made": len(load.enrolled), "enrollments_found_via_api": found,
            "enrollments_found_in_db": len(set(load.enrolled) & in_db),
            "identify_right_after_enroll": dict(load.seen_next),
            "identify_probe_outcomes": dict(load.probes),
            "gallery_people_at_end": len(listed),
        }
        print(json.dumps(report, indent=2))
        print(f"\n{'route':<10} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8}")
        for route, r in routes.items():
            print(f"{route:<10} {r['requests']:>8} {r['p50_ms']:>8.0f} {r['p95_ms']:>8.0f}")
        print(f"{'all':<10} {total:>8} {report['p50_ms']:>8.0f} {report['p95_ms']:>8.0f}   "
              f"{report['requests_per_s']} req/s, {report['errors']} errors, enrollments made "
              f"{report['enrollments_made']} / found {report['enrollments_found_in_db']}")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
