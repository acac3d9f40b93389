"""Load run on one PostgreSQL database: concurrent enroll, identify and remove processes for a few minutes.

    python benchmarks/load_run.py --admin-url postgresql+psycopg://facerec:facerec@127.0.0.1:5432/postgres \
        --seconds 180 --out benchmarks/results/load_run_pg.json

Faces are real: LFW photos go through the real pipeline once (in this process); the workers then run the
engine's own verbs on them (gallery.add with the audit event, as `FaceRec.enroll` commits; `identify_faces`,
audited per decision; `remove`), so the database, the index catch-up and the audit chain see real traffic
without a torch pass per operation. Reports operations, errors by kind (aim: 0) and audit events written
against the ones each worker expected (aim: none lost), and whether the hash chain verifies at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import pickle
import platform
import random
import sys
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def prepare_faces(lfw: Path, people: int, cache: Path) -> list:
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    from facerec.api import FaceRec

    fr = FaceRec(db=f"sqlite:///{cache.with_suffix('.db')}")
    faces = []
    for folder in sorted(p for p in lfw.iterdir() if (p / f"{p.name}_0002.jpg").exists())[:people]:
        analysed = fr.pipeline.analyse(folder / f"{folder.name}_0001.jpg")
        if len(analysed.faces) == 1:
            faces.append((folder.name, analysed.faces[0]))
    cache.write_bytes(pickle.dumps(faces))
    return faces


def worker(role: str, wid: int, url: str, index: str, faces_file: str, until: float, queue) -> None:
    from facerec.api import FaceRec
    from facerec.errors import FacerecError, UnknownPersonError
    from facerec.store import NewTemplate

    faces = pickle.loads(Path(faces_file).read_bytes())
    rng = random.Random(wid)
    ops, errors, expected_events, misses = Counter(), Counter(), Counter(), 0
    fr = FaceRec(db=url, index=index)
    n = 0
    while time.time() < until:
        try:
            if role == "enroll":
                source, face = faces[rng.randrange(len(faces))]
                name = f"{source} #{wid}-{n}"
                t = NewTemplate(face.embedding, fr.card.id, fr.card.version, uuid.uuid4().hex + uuid.uuid4().hex,
                                f"{source}.jpg", face.detection.score, face.quality.to_dict())
                fr.gallery.add(name, [t], audit=fr._entry("enroll", "enrolled", person_name=name))
                expected_events["enroll"] += 1
            elif role == "identify":
                picked = [faces[rng.randrange(len(faces))][1] for _ in range(rng.randint(1, 3))]
                fr.identify_faces(picked, top_k=2, source="load-run")
                expected_events["identify"] += 1
            else:
                people = fr.people()
                if not people:
                    time.sleep(0.05)
                    continue
                try:
                    fr.remove(rng.choice(people).name)
                    expected_events["remove"] += 1
                except UnknownPersonError:  # another remover or a race with list: not an error
                    misses += 1
            ops[role] += 1
        except FacerecError as exc:
            errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
        except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
            errors[f"UNEXPECTED {type(exc).__name__}: {str(exc)[:120]}"] += 1
        n += 1
    fr.close()
    queue.put({"role": role, "worker": wid, "ops": dict(ops), "errors": dict(errors),
               "expected_events": dict(expected_events), "remove_misses": misses})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--admin-url", default=os.environ.get("FACEREC_TEST_PG_URL"))
    ap.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "data" / "faces" / "lfw")
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--enrollers", type=int, default=2)
    ap.add_argument("--identifiers", type=int, default=3)
    ap.add_argument("--removers", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "load_run_pg.json")
    args = ap.parse_args()
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from facerec.api import FaceRec, upgrade_database
    from facerec.config import Settings

    work = Path("/tmp/facerec-load-run")
    work.mkdir(exist_ok=True)
    faces_file = work / "faces.pkl"
    faces = prepare_faces(args.lfw, 60, faces_file)
    name = f"facerec_load_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(args.admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade_database(Settings.resolve(db=url))
        seed = FaceRec(db=url, index=str(work / f"{name}.faiss"))
        for source, face in faces[:20]:  # a starting gallery, so identify and remove have work at once
            from facerec.store import NewTemplate

            seed.gallery.add(f"{source} #seed", [NewTemplate(face.embedding, seed.card.id, seed.card.version,
                                                             uuid.uuid4().hex * 2, source, 1.0, {})],
                             audit=seed._entry("enroll", "enrolled", person_name=f"{source} #seed"))
        seed.close()
        roles = ["enroll"] * args.enrollers + ["identify"] * args.identifiers + ["remove"] * args.removers
        queue = mp.get_context("spawn").Queue()
        until = time.time() + args.seconds
        procs = [mp.get_context("spawn").Process(target=worker, args=(role, i, url, str(work / f"{name}.faiss"),
                                                                     str(faces_file), until, queue))
                 for i, role in enumerate(roles)]
        started = time.time()
        for p in procs:
            p.start()
        reports = [queue.get(timeout=args.seconds + 600) for _ in procs]
        for p in procs:
            p.join()
        elapsed = time.time() - started
        engine = create_engine(url)
        with engine.connect() as conn:
            written = dict(conn.execute(text("select action, count(*) from audit_log group by action")).all())
            people = conn.execute(text("select count(*) from people")).scalar()
        engine.dispose()
        check = FaceRec(db=url, index=str(work / f"{name}.check.faiss"))
        chain = check.verify_audit()
        gallery_size = check.gallery.size
        check.close()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    expected = Counter({"enroll": len(faces[:20])})
    ops, errors = Counter(), Counter()
    for r in reports:
        expected.update(r["expected_events"])
        ops.update(r["ops"])
        errors.update(r["errors"])
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs (shared), PostgreSQL on loopback",
        "command": " ".join(["python", "benchmarks/load_run.py", *sys.argv[1:]]),
        "seconds": round(elapsed, 1), "processes": dict(Counter(roles)), "faces": len(faces),
        "operations": dict(ops), "operations_per_second": round(sum(ops.values()) / elapsed, 2),
        "errors": dict(errors), "error_count": sum(errors.values()),
        "remove_misses": sum(r["remove_misses"] for r in reports),
        "audit_expected": dict(expected), "audit_written": written,
        "audit_lost": {k: expected[k] - written.get(k, 0) for k in expected},
        "audit_chain": {k: chain[k] for k in ("intact", "events", "problems")},
        "people_at_end": people, "gallery_size_seen_by_a_new_process": gallery_size, "workers": reports,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'operation':<10} {'count':>7}")
    for k, v in sorted(ops.items()):
        print(f"{k:<10} {v:>7}")
    print(f"ops/s {result['operations_per_second']}, errors {result['error_count']}, audit expected "
          f"{sum(expected.values())} written {sum(written.values())}, chain intact {chain['intact']}")
    print(f"raw: {args.out}")


if __name__ == "__main__":
    main()
