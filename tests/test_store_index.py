"""The store is the truth and the index follows it: SQLite and a real PostgreSQL, no model needed."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from facerec.errors import DatabaseError, ModelMismatchError, SearchIndexError, UnknownPersonError
from facerec.gallery import Gallery
from facerec.index.faiss_index import SearchIndex
from facerec.store import AuditEntry, NewTemplate, Store

DIM = 16


def unit(rng, n=1):
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def template(vec, source="a"):
    return NewTemplate(embedding=vec, model_id="m", model_version="1", source_sha256=source * 64,
                       source_name=f"{source}.jpg", detection_score=0.99, quality={"passed": True})


def test_store_round_trip(db_url):
    rng = np.random.default_rng(0)
    store = Store.open(db_url, auto_migrate=True)
    store.bind_model("m")
    v = unit(rng, 3)
    ids, gen1 = store.add_templates("Ada", [template(v[0], "a"), template(v[1], "b")])
    assert len(ids) == 2 and gen1 == 1
    again, gen2 = store.add_templates("Ada", [template(v[0], "a")])  # same photo: idempotent
    assert again == [] and gen2 == 1
    store.add_templates("Bob", [template(v[2], "c")])
    rows = store.templates("m")
    assert rows.person_names == ["Ada", "Ada", "Bob"]
    np.testing.assert_allclose(rows.embeddings, v, rtol=0, atol=0)
    assert [(p.name, p.templates) for p in store.list_people("m")] == [("Ada", 2), ("Bob", 1)]
    removed, gen = store.remove_person("Ada")
    assert sorted(removed) == sorted(ids) and gen == store.generation() == 3
    with pytest.raises(UnknownPersonError):
        store.remove_person("Ada")
    store.audit(AuditEntry("remove", "removed", person_name="Ada"))
    assert store.audit_events(1)[0]["person"] == "Ada"
    store.close()


def test_declared_head_is_alembics_head():
    from facerec.store import migrate

    assert migrate.HEAD_REVISION == migrate.alembic_head()


def test_database_for_another_model_is_refused(db_url):
    store = Store.open(db_url, auto_migrate=True)
    store.bind_model("m")
    with pytest.raises(ModelMismatchError, match="made for model 'm'"):
        store.bind_model("other")


def test_server_database_needs_explicit_upgrade(pg_url):
    with pytest.raises(DatabaseError, match="facerec db upgrade"):
        Store.open(pg_url)
    Store.open(pg_url, auto_migrate=True).close()
    Store.open(pg_url).close()  # now at head


def test_bad_database_urls(tmp_path):
    with pytest.raises(DatabaseError, match="not a database URL|unsupported"):
        Store.open("nosuchdialect://x/y")
    with pytest.raises(DatabaseError, match="cannot use database"):
        Store.open("postgresql+psycopg://nobody:secret@127.0.0.1:1/none")
    with pytest.raises(DatabaseError, match="is a directory"):
        Store.open(f"sqlite:///{tmp_path}")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(DatabaseError, match="not a database"):
        Store.open(f"sqlite:///{junk}")


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_index_kinds_agree_with_exact_search(kind, tmp_path):
    rng = np.random.default_rng(1)
    vectors = unit(rng, 3000)
    ids = np.arange(100, 3100, dtype=np.int64)
    index = SearchIndex.build(ids, vectors, DIM, kind)
    queries = vectors[:50] + 0.05 * unit(rng, 50)
    scores, found = index.search(queries, 5)
    exact = ids[np.argmax(queries @ vectors.T, axis=1)]
    recall = float(np.mean(found[:, 0] == exact))
    assert recall >= (1.0 if kind == "flat" else 0.9)
    if kind == "flat":
        np.testing.assert_allclose(scores[:, 0], np.max(queries @ vectors.T, axis=1), rtol=1e-5)


def test_index_file_is_rebuilt_when_missing_stale_corrupt_or_foreign(sqlite_url, tmp_path, caplog):
    rng = np.random.default_rng(2)
    store = Store.open(sqlite_url)
    store.add_templates("Ada", [template(unit(rng)[0], "a")])
    path = tmp_path / "idx.faiss"
    gallery = Gallery(store, "m", DIM, path)
    assert gallery.size == 1 and path.exists() and gallery.sync().generation == 1
    # stale: the store moved on without the file (a new process must not trust it)
    store.add_templates("Bob", [template(unit(rng)[0], "b")])
    with caplog.at_level(logging.WARNING, logger="facerec"):
        assert Gallery(store, "m", DIM, path).size == 2
    assert "stale" in caplog.text
    # corrupt: flipped bytes fail the checksum
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(SearchIndexError, match="corrupt"):
        SearchIndex.load(path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="facerec"):
        assert Gallery(store, "m", DIM, path).size == 2
    assert "corrupt" in caplog.text
    SearchIndex.load(path)  # the rewritten file is sound
    path.write_bytes(b"garbage")
    assert Gallery(store, "m", DIM, path).size == 2
    # a crash's temporary file (it may hold removed people's embeddings) is removed on open
    leftover = tmp_path / "idx.faiss.abc123.tmp"
    leftover.write_bytes(b"old embeddings")
    Gallery(store, "m", DIM, path).sync()
    assert not leftover.exists()


def test_index_from_another_database_is_never_trusted(tmp_path, caplog):
    """Same number of enrollments, same template ids, another database: the stranger must not be named."""
    rng = np.random.default_rng(3)
    people = unit(rng, 2)
    home_a, home_b = Store.open(f"sqlite:///{tmp_path / 'a.db'}"), Store.open(f"sqlite:///{tmp_path / 'b.db'}")
    home_a.add_templates("Ada", [template(people[0], "a")])
    home_b.add_templates("Stranger", [template(people[1], "s")])
    Gallery(home_a, "m", DIM, tmp_path / "a.faiss").sync()
    for part in tmp_path.glob("a.faiss*"):  # every file of the index: same generation, same ids
        (tmp_path / ("b" + part.name[1:])).write_bytes(part.read_bytes())
    with caplog.at_level(logging.WARNING, logger="facerec"):
        gallery_b = Gallery(home_b, "m", DIM, tmp_path / "b.faiss")
        best = gallery_b.search(people[0][None], 1)[0][0]
    assert "another database" in caplog.text
    assert best.name == "Stranger" and best.score < 0.99  # scored against B's own template


def test_gallery_catches_up_with_other_writers_from_the_change_log(db_url, tmp_path):
    """Two galleries on one database (as two processes): each sees the other's writes at its next search,
    incrementally (no rebuild), and a removed person is never returned again."""
    rng = np.random.default_rng(4)
    v = unit(rng, 4)
    kiosk_store, admin_store = Store.open(db_url, auto_migrate=True), Store.open(db_url)
    kiosk = Gallery(kiosk_store, "m", DIM, tmp_path / "kiosk.faiss")
    admin = Gallery(admin_store, "m", DIM, tmp_path / "admin.faiss")
    assert kiosk.search(v[:1], 1) == [[]]
    admin.add("Ada", [template(v[0], "a")], audit=AuditEntry("enroll", "enrolled", person_name="Ada"))
    admin.add("Bob", [template(v[1], "b"), template(v[2], "c")])
    index_before = kiosk._index
    found = kiosk.search(v[:3], 2)
    assert [row[0].name for row in found] == ["Ada", "Bob", "Bob"]
    assert kiosk._index is index_before  # applied from the change log, not rebuilt
    admin.remove("Bob", audit=AuditEntry("remove", "removed", person_name="Bob"))
    assert [m.name for m in kiosk.search(v[1:2], 5)[0]] == ["Ada"]
    assert kiosk.size == 1 and kiosk._index.ntotal == 1  # Bob's templates left the kiosk's index too
    # the audit events were written with the changes
    assert [e["action"] for e in admin_store.audit_events(5)] == ["remove", "enroll"]
    changes = admin_store.changes_since(0, "m")
    assert changes.state.generation == 3 and sorted(changes.added.ids.tolist()) == sorted(
        kiosk._owner) and len(changes.removed) == 2


def test_failed_transaction_leaves_nothing(sqlite_url):
    store = Store.open(sqlite_url)
    bad = template(np.zeros(DIM, np.float32), "a")
    object.__setattr__(bad, "quality", {"x": object()})  # not JSON-serialisable: the commit fails
    with pytest.raises(Exception):
        store.add_templates("Ada", [bad])
    assert store.list_people() == [] and store.generation() == 0
    engine = create_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from templates")).scalar() == 0


def test_gallery_is_thread_safe(sqlite_url, tmp_path):
    """Searches from several threads while another thread enrolls and removes: no error, and every answer
    names only people who were enrolled at some point of the run (never a half-applied change)."""
    import threading

    rng = np.random.default_rng(5)
    vectors = unit(rng, 40)
    store = Store.open(sqlite_url)
    gallery = Gallery(store, "m", DIM, tmp_path / "g.faiss")
    gallery.add("P0", [template(vectors[0], "p0")])
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher() -> None:
        try:
            while not stop.is_set():
                for row in gallery.search(vectors[:8], 3):
                    assert all(m.name.startswith("P") for m in row)
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(1, 20):
        gallery.add(f"P{i}", [template(vectors[i], f"q{i}")])
        if i % 3 == 0:
            gallery.remove(f"P{i - 1}")
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert gallery.size == len(store.templates("m").ids) == 20 - len(range(3, 20, 3))
