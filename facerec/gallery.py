"""The gallery service: the enrolled templates of one model, as the store holds them and the index searches them.

One `Gallery` per model and process, shared by every thread (a kiosk loop, HTTP workers, a batch runner). It
stays true while other processes enroll and remove people: before every search it reads the store's
generation and token (one small query) and, when they moved, applies the change log since its own generation
(`template_changes`), or rebuilds from the store when the log cannot say. So a change made by any process is
seen by every other process's next decision, and a removed person is never identified after `remove`
returned. Template id -> person name is resolved lazily: the ids a search returns that are not yet cached
are looked up in one small query and kept (a removal evicts them), so opening a gallery of a million
templates does not read a million rows, and repeated searches cost no SQL.

The index file is a start-up cache: trusted only when it was built from this database (database id), at the
store's current generation and token; otherwise it is rebuilt with a warning. Writers keep it current; a
file that cannot be written is a warning (the database already committed; the next start rebuilds). With
`persist=False` (templates sealed at rest) the index lives in memory only: it would hold every embedding in
the clear, so it is never written, and a file left from before is deleted.
No torch here (import-linter contract).
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facerec.errors import SearchIndexError
from facerec.io.files import private_dir
from facerec.store import AuditEntry, ChangeSet, GalleryState, NewTemplate, Store

if TYPE_CHECKING:  # faiss is imported on the first search, not for a `verify` or a `list`
    from facerec.index import IndexMeta, SearchIndex

log = logging.getLogger("facerec")

# Neighbours fetched per wanted person: people with several templates must not crowd out the others.
SHORTLIST_PER_PERSON = 8
MIN_SHORTLIST = 16


@dataclass(frozen=True)
class Match:
    """One enrolled person as a candidate for a face: their best template's similarity."""

    name: str
    score: float
    template_id: int


class Gallery:
    """Store + search index of one model; thread-safe; catches up with other processes before each search."""

    def __init__(self, store: Store, model_id: str, dim: int, index_path: Path, index_kind: str = "flat",
                 persist: bool = True) -> None:
        self.store = store
        self.model_id = model_id
        self.dim = dim
        self.index_path = Path(index_path)
        self.index_kind = index_kind
        self.persist = persist
        self._lock = threading.RLock()
        self._index: "SearchIndex | None" = None
        self._state: GalleryState | None = None
        self._owner: dict[int, str] = {}  # template id -> person, for the ids searches returned so far
        self._people: tuple[GalleryState, int] | None = None  # person count at a state
        self._worker: threading.Thread | None = None  # the background rebuild, when one runs
        self._wrote = False  # this process changed the gallery: it finishes a rebuild before it exits
        self._defer_saves = False  # the worker is writing a new base: saves wait for its commit
        self._exit_hook = False
        self._bulk = False  # a bulk chunk is being indexed: compaction waits for the end of the run

    # --- reading ---------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Templates in the gallery, as of the last sync."""
        with self._lock:
            self.sync()
            return self._index.ntotal

    def person_count(self) -> int:
        """People with templates of this model (one query per gallery state)."""
        with self._lock:
            state = self.sync()
            if self._people is None or self._people[0] != state:
                self._people = (state, self.store.person_count(self.model_id))
            return self._people[1]

    def sync(self) -> GalleryState:
        """Bring the in-memory index up to the store's state (one query when nothing changed)."""
        with self._lock:
            state = self.store.state()
            if self._index is None:
                self._open(state)
            elif state != self._state:
                self._catch_up(state)
            return self._state

    def search(self, embeddings: np.ndarray, top_k: int = 1) -> list[list[Match]]:
        """The best `top_k` people for each embedding (rows of unit vectors), best first, cosine scores.

        Each person scores their best template. Empty lists when the gallery is empty.
        """
        queries = np.ascontiguousarray(embeddings, dtype=np.float32).reshape(-1, self.dim)
        with self._lock:
            self.sync()
            if self._index.ntotal == 0 or len(queries) == 0:
                return [[] for _ in range(len(queries))]
            scores, ids = self._index.search(queries, max(top_k * SHORTLIST_PER_PERSON, MIN_SHORTLIST))
            owner = self._owners(ids)
        results = []
        for row_scores, row_ids in zip(scores, ids):
            best: dict[str, Match] = {}
            for score, template_id in zip(row_scores.tolist(), row_ids.tolist()):
                name = owner.get(template_id)
                if name is not None and (name not in best or score > best[name].score):
                    best[name] = Match(name, float(score), int(template_id))
            results.append(sorted(best.values(), key=lambda m: m.score, reverse=True)[: max(1, top_k)])
        return results

    def shortlist_ids(self, embedding: np.ndarray, top_k: int) -> list[int]:
        """Template ids of the cosine shortlist for one face (for scorers that re-score templates)."""
        with self._lock:
            self.sync()
            if self._index.ntotal == 0:
                return []
            _, ids = self._index.search(embedding.reshape(1, -1), max(top_k * SHORTLIST_PER_PERSON, MIN_SHORTLIST))
        return [int(i) for i in ids[0] if i >= 0]

    def owner_of(self, template_id: int) -> str | None:
        with self._lock:
            return self._owners(np.array([template_id])).get(int(template_id))

    def _owners(self, ids: np.ndarray) -> dict[int, str]:
        """The cache, completed for these ids with one query (call under the lock)."""
        missing = {int(i) for i in np.unique(ids) if i >= 0 and int(i) not in self._owner}
        if missing:
            self._owner.update(self.store.owners(sorted(missing)))
        return self._owner

    # --- writing ---------------------------------------------------------------------------------
    def add(self, name: str, templates: list[NewTemplate], audit: AuditEntry | None = None) -> list[int]:
        """Store a person's new templates (and the audit event) in one transaction; index them; save the file."""
        with self._lock:
            self.sync()
            ids, _ = self.store.add_templates(name, templates, audit=audit)
            if ids:
                self._wrote = True
                self.sync()
                self._save()
                self._maintain()
            return ids

    def add_many(self, entries: list[tuple[str, NewTemplate]], audit: AuditEntry | None = None) -> list[int | None]:
        """Store one chunk of a bulk enrollment (many people: one transaction, one audit event), index it
        with one batched add and append it to the index file; returns each entry's new id (None: skipped)."""
        with self._lock:
            self.sync()
            ids, _ = self.store.add_templates_bulk(entries, audit=audit)
            if any(i is not None for i in ids):
                self._wrote = True
                self._bulk = True  # no compaction per chunk (a flat base would be rewritten ~80 times on the
                try:  # way to 1e6): the caller runs `finish_maintenance` once at the end
                    self.sync()
                finally:
                    self._bulk = False
                self._save()
            return ids

    def remove(self, name: str, audit: AuditEntry | None = None) -> list[int]:
        """Delete a person (and record it) in one transaction; gone from this index before returning."""
        with self._lock:
            self.sync()
            removed, _ = self.store.remove_person(name, audit=audit)
            self._wrote = True
            self.sync()
            self._save()
            self._maintain()
            return removed

    def rebuild(self) -> int:
        """Rebuild the index from the store and save it; returns the number of templates."""
        with self._lock:
            self._rebuild(self.store.state())
            return self._index.ntotal

    # --- internals -------------------------------------------------------------------------------
    def _expected_meta(self, state: GalleryState, count: int, built_kind: str) -> "IndexMeta":
        from facerec.index import IndexMeta

        return IndexMeta(self.model_id, self.dim, self.index_kind, state.generation, count, built_kind,
                         self.store.database_id(), state.token)

    def _open(self, state: GalleryState) -> None:
        """Load the index file if it was built from this database at this state; else rebuild it."""
        from facerec.index import SearchIndex

        self.remove_stale_temporaries()
        if self.index_path.is_dir():
            raise SearchIndexError(f"{self.index_path}: is a directory, expected an index file (--index FILE)")
        problem = "missing"
        if not self.persist:
            if self.index_path.exists():
                log.warning("templates are encrypted: deleting the unencrypted index file %s (the index is kept "
                            "in memory only)", self.index_path)
                self.index_path.unlink(missing_ok=True)
        elif self.index_path.exists():
            try:
                with self._file_lock(exclusive=False):
                    index, meta = SearchIndex.load(self.index_path)
                if meta == self._expected_meta(state, meta.count, meta.built_kind):
                    stored = self.store.template_count(self.model_id)
                    self._install(index, state)
                    if stored == index.ntotal:
                        return
                    problem = f"out of step with the database ({index.ntotal} vectors, {stored} templates)"
                elif meta.database_id != self.store.database_id():
                    problem = "built from another database"
                else:
                    problem = (f"stale (generation {meta.generation}, database at {state.generation}, "
                               f"kind {meta.kind!r})")
            except SearchIndexError as exc:
                problem = str(exc)
            log.warning("index %s is %s: rebuilding it from the database", self.index_path, problem)
        self._rebuild(state)

    def _rebuild(self, state: GalleryState) -> None:
        from facerec.index import SearchIndex

        rows = self.store.templates(self.model_id)
        state_after = self.store.state()
        if state_after != state:  # a write landed meanwhile: read again, so rows and state agree
            return self._rebuild(state_after)
        self._install(SearchIndex.build(rows.ids, rows.embeddings, self.dim, self.index_kind), state)
        self._owner = dict(zip(rows.ids.tolist(), rows.person_names))  # read anyway: keep them
        self._save(force=True)

    def _install(self, index: "SearchIndex", state: GalleryState) -> None:
        index.auto_maintain = False  # compaction and retraining run beside the searches (_maintain)
        self._index = index
        self._state = state
        self._owner = {}

    def _catch_up(self, state: GalleryState) -> None:
        changes: ChangeSet | None = None
        if state.generation > self._state.generation:
            changes = self.store.changes_since(self._state.generation, self.model_id)
        if changes is None:  # the log does not reach back, or the database went back (restored): rebuild
            return self._rebuild(state)
        index = self._index
        if len(changes.removed):
            if not index.remove(changes.removed):
                return self._rebuild(state)
            for template_id in changes.removed.tolist():
                self._owner.pop(template_id, None)
        fresh = changes.added
        new = np.flatnonzero(~index.contains(fresh.ids)) if len(fresh.ids) else []
        if len(new):
            index.add(fresh.ids[new], fresh.embeddings[new])
            self._owner.update((int(fresh.ids[k]), fresh.person_names[k]) for k in new)
        self._state = changes.state
        self._maintain()

    def _save(self, force: bool = False) -> None:
        """Persist the index; deferred while the worker writes a new base (its commit writes these changes
        too) unless `force` (a rebuild from the store: it must replace the files, e.g. after an erasure)."""
        if not self.persist or (self._defer_saves and not force):
            return
        index, state = self._index, self._state
        try:
            with self._file_lock(exclusive=True):
                index.save(self.index_path, self._expected_meta(state, index.ntotal, index.kind))
        except (OSError, SearchIndexError) as exc:
            log.warning("cannot write the index %s (%s): searching from memory; it is rebuilt at the next start",
                        self.index_path, getattr(exc, "strerror", None) or exc)

    # --- compaction and retraining beside the searches ------------------------------------------------
    # Due when the exact tail or the deleted rows pass their thresholds, or the gallery outgrew its plan
    # (data/index.json). A thread builds the new structure from a snapshot while searches go on against the
    # old one plus its exact tail, writes its files, then swaps it in under the lock (changes made meanwhile
    # are carried over) and commits the manifest. Decided for short processes: one that changed the gallery
    # (enroll, remove, a bulk enrollment) waits for the rebuild before it exits (atexit), so a CLI-only
    # deployment stays compacted; one that only read (identify, verify) abandons it: nothing is written
    # before the swap, so its index files stay as they were, and the next writer or long-lived process
    # redoes it. A crash (SIGKILL) at any point leaves the old manifest and its parts, or the new ones.
    def _maintain(self) -> None:
        """Start the background rebuild when due and none runs (call under the lock)."""
        if self._worker is None and not self._bulk and self._index is not None and self._index.maintenance_due():
            self._worker = threading.Thread(target=self._rebuild_beside, name="facerec-index-rebuild", daemon=True)
            self._worker.start()
            if not self._exit_hook:
                atexit.register(self._finish_at_exit)
                self._exit_hook = True

    def _finish_at_exit(self) -> None:
        if self._wrote:
            self.finish_maintenance()

    def finish_maintenance(self) -> None:
        """Wait for a running rebuild; then run any that is due now in this thread (a writer about to exit)."""
        worker = self._worker
        if worker is not None:
            worker.join()
        with self._lock:
            if self._worker is None and not self._bulk and self._index is not None and self._index.maintenance_due():
                self._worker = threading.current_thread()
            else:
                return
        self._rebuild_beside()

    def _rebuild_beside(self) -> None:
        """The worker: snapshot (locked), build (unlocked), write the new base (unlocked), swap (locked)."""
        try:
            while True:
                with self._lock:
                    index = self._index
                    why = index.maintenance_due() if index is not None else None
                    if why is None:
                        return
                    snap = index.snapshot(why)
                built = index.build_from(snap)
                with self._lock:
                    if self._index is not index:  # rebuilt from the store meanwhile: this one is moot
                        continue
                    index.install(built)
                    self._defer_saves = self.persist
                if self.persist:
                    self._commit_beside(index)
        except Exception as exc:  # the old structure still answers; the next change retries
            log.warning("background index rebuild failed (%s): searching the previous structure", exc)
        finally:
            with self._lock:
                self._worker = None
                self._defer_saves = False

    def _commit_beside(self, index: "SearchIndex") -> None:
        """Write the installed base's files without the gallery lock, then its manifest and log under it."""
        try:
            with self._file_lock(exclusive=True):
                tag, files = index.write_parts(self.index_path)
            with self._lock:
                self._defer_saves = False
                if self._index is not index:  # replaced (e.g. rebuilt after an erasure): drop what we wrote
                    for name in files:
                        (self.index_path.parent / name).unlink(missing_ok=True)
                    return
                state = self._state
                with self._file_lock(exclusive=True):
                    if all((self.index_path.parent / name).exists() for name in files):
                        index.commit_parts(self.index_path, self._expected_meta(state, index.ntotal, index.kind),
                                           tag, files)
                        return
                self._save()  # another process replaced the files meanwhile: write ours whole
        except (OSError, SearchIndexError) as exc:
            log.warning("cannot write the rebuilt index %s (%s): searching from memory; it is rebuilt at the "
                        "next start", self.index_path, getattr(exc, "strerror", None) or exc)

    @contextmanager
    def _file_lock(self, exclusive: bool):
        """Processes sharing one index path take turns: one writer (its parts are replaced and old ones
        deleted), or any number of readers."""
        lock = self.index_path.with_name(self.index_path.name + ".lock")
        private_dir(lock.parent)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def remove_stale_temporaries(self) -> list[Path]:
        """Temporary files a crashed writer left behind still hold embeddings (perhaps of removed people).

        A temporary's name carries its writer's process id; one whose writer still runs is being written."""
        removed = []
        for tmp in self.index_path.parent.glob(self.index_path.name + ".*.tmp"):
            if not _writer_alive(tmp.name[len(self.index_path.name) + 1:]):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
        return removed


def _writer_alive(suffix: str) -> bool:
    """`<pid>.<random>.tmp` names a writer; a writer on this host that no longer runs left a stale file."""
    pid = suffix.split(".", 1)[0]
    if not pid.isdigit() or int(pid) == os.getpid():  # this process writes under the gallery's lock
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
