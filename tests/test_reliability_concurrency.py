"""N processes writing into one NEW database at once (issue 16, item 3): no crash, no lost person, one chain.

Before: 4 processes enrolling into a new SQLite database: 2 crashed and 20 people were missing (PostgreSQL:
1 of 4, 10 missing), racing on the schema and `facerec_info`; two processes enrolling the same new name got
a raw IntegrityError. The writers here go through the engine's real store, gallery and audit path with
synthetic templates (no face model: the race is in the database, and 6 torch processes would not fit CI).
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from sqlalchemy import create_engine, text

from conftest import REPO

WRITER = r"""
import sys, time
import numpy as np
from facerec.api import FaceRec, upgrade_database
from facerec.store import NewTemplate

url, index, start, names, seed = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4].split(","), int(sys.argv[5])
while time.time() < start:  # every process opens the new database at the same moment
    time.sleep(0.002)
fr = FaceRec(db=url, index=index)
if url.startswith("postgresql"):
    upgrade_database(fr.settings)  # what `facerec db upgrade` does, from every process at once
rng = np.random.default_rng(seed)
for name in names:
    v = rng.normal(size=fr.card.embedding_dim).astype(np.float32)
    v /= np.linalg.norm(v)
    photo = f"{seed:08d}{abs(hash(name)) % 10**12:056d}"
    t = NewTemplate(v, fr.card.id, fr.card.version, photo, f"{name}.jpg", 1.0, {})
    fr.gallery.add(name, [t], audit=fr._entry("enroll", "enrolled", person_name=name))
print("ok", fr.verify_audit()["intact"])
fr.close()
"""

PROCESSES = 6
PEOPLE_EACH = 8
SHARED = "Shared Newcomer"  # every process enrolls this same new name (its own photo) at the same time


def run_writers(url: str, index: str) -> list[subprocess.CompletedProcess]:
    start = time.time() + 4.0  # after every interpreter has started
    procs = []
    for p in range(PROCESSES):
        names = [SHARED] + [f"person {p}-{i}" for i in range(PEOPLE_EACH)]
        procs.append(subprocess.Popen([sys.executable, "-c", WRITER, url, index, str(start), ",".join(names), str(p)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO))
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=300), p.stdout.read(), p.stderr.read())
            for p in procs]


def check(url: str, results: list[subprocess.CompletedProcess]) -> None:
    for r in results:
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    engine = create_engine(url)
    with engine.connect() as conn:
        q = lambda sql: conn.execute(text(sql)).all()  # noqa: E731
        people = dict(q("select p.name, count(t.id) from people p join templates t on t.person_id = p.id "
                        "group by p.name"))
        assert len(people) == PROCESSES * PEOPLE_EACH + 1  # nobody lost
        assert people[SHARED] == PROCESSES  # merged: one person, every process's template
        assert all(n == 1 for name, n in people.items() if name != SHARED)
        assert q("select count(*) from audit_log where action = 'enroll'")[0][0] == PROCESSES * (PEOPLE_EACH + 1)
        assert q("select count(*) from template_changes")[0][0] == PROCESSES * (PEOPLE_EACH + 1)
        assert q("select value from facerec_info where key = 'templates_generation'")[0][0] == str(
            PROCESSES * (PEOPLE_EACH + 1))
    engine.dispose()
    from facerec.store import Store

    report = Store.open(url).verify_audit()
    assert report.intact and report.events == PROCESSES * (PEOPLE_EACH + 1), report.problems


def test_processes_enrolling_into_a_new_sqlite_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'new' / 'facerec.db'}"
    check(url, run_writers(url, str(tmp_path / "new" / "facerec.db.faiss")))


@pytest.mark.slow
@pytest.mark.postgres
def test_processes_enrolling_into_a_new_postgresql_database(pg_url, tmp_path):
    check(pg_url, run_writers(pg_url, str(tmp_path / "i.faiss")))
