"""The gallery service: the enrolled templates of one model, as the store holds them and the index searches them.

One `Gallery` per model and process, shared by every thread (a kiosk loop, HTTP workers, a batch runner). It
stays true while other processes enroll and remove people: before every search it reads the store's
generation and token (one small query) and, when they moved, applies the change log since its own generation
(`template_changes`), or rebuilds from the store when the log cannot say. So a change made by any process is
seen by every other process's next decision, and a removed person is never identified after `remove`
returned. Template id -> person name is cached, so a search costs no per-face SQL.

The index file is a start-up cache: trusted only when it was built from this database (database id), at the
store's current generation and token; otherwise it is rebuilt with a warning. Writers keep it current; a
file that cannot be written is a warning (the database already committed; the next start rebuilds). With
`persist=False` (templates sealed at rest) the index lives in memory only: it would hold every embedding in
the clear, so it is never written, and a file left from before is deleted.
No torch here (import-linter contract).
"""

from __future__ import annotations

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
from facerec.store import AuditEntry, ChangeSet, GalleryState, NewTemplate, Store, TemplateRows

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
        self._owner: dict[int, str] = {}
        self._people: tuple[GalleryState | None, int] = (None, 0)  # person count as of a state

    # --- reading ---------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Templates in the gallery, as of the last sync."""
        with self._lock:
            self.sync()
            return len(self._owner)

    def person_count(self) -> int:
        """People in the gallery now; counted once per gallery state (every 1:K decision asks: its default
        threshold depends on it)."""
        with self._lock:
            state = self.sync()
            if self._people[0] != state:
                self._people = (state, len(set(self._owner.values())))
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
            owner = self._owner
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
        return [int(i) for i in ids[0] if i >= 0 and int(i) in self._owner]

    def owner_of(self, template_id: int) -> str | None:
        return self._owner.get(template_id)

    # --- writing ---------------------------------------------------------------------------------
    def add(self, name: str, templates: list[NewTemplate], audit: AuditEntry | None = None) -> list[int]:
        """Store a person's new templates (and the audit event) in one transaction; index them; save the file."""
        with self._lock:
            self.sync()
            ids, _ = self.store.add_templates(name, templates, audit=audit)
            if ids:
                self.sync()
                self._save()
            return ids

    def remove(self, name: str, audit: AuditEntry | None = None) -> list[int]:
        """Delete a person (and record it) in one transaction; gone from this index before returning."""
        with self._lock:
            self.sync()
            removed, _ = self.store.remove_person(name, audit=audit)
            self.sync()
            self._save()
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
                    rows = self.store.templates(self.model_id, with_embeddings=False)
                    self._install(index, state, rows)
                    if len(rows.ids) == index.ntotal:
                        return
                    problem = f"out of step with the database ({index.ntotal} vectors, {len(rows.ids)} templates)"
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
        self._install(SearchIndex.build(rows.ids, rows.embeddings, self.dim, self.index_kind), state, rows)
        self._save()

    def _install(self, index: "SearchIndex", state: GalleryState, rows: TemplateRows) -> None:
        self._index = index
        self._state = state
        self._owner = dict(zip(rows.ids.tolist(), rows.person_names))

    def _catch_up(self, state: GalleryState) -> None:
        changes: ChangeSet | None = None
        if state.generation > self._state.generation:
            changes = self.store.changes_since(self._state.generation, self.model_id)
        if changes is None:  # the log does not reach back, or the database went back (restored): rebuild
            return self._rebuild(state)
        index = self._index
        if len(changes.removed):
            present = [i for i in changes.removed.tolist() if i in self._owner]
            if present and not index.remove(np.asarray(present, dtype=np.int64)):
                return self._rebuild(state)
            for template_id in present:
                del self._owner[template_id]
        fresh = changes.added
        new = [k for k, i in enumerate(fresh.ids.tolist()) if i not in self._owner]
        if new:
            index.add(fresh.ids[new], fresh.embeddings[new])
            self._owner.update((int(fresh.ids[k]), fresh.person_names[k]) for k in new)
        self._state = changes.state

    def _save(self) -> None:
        if not self.persist:
            return
        index, state = self._index, self._state
        try:
            with self._file_lock(exclusive=True):
                index.save(self.index_path, self._expected_meta(state, index.ntotal, index.kind))
        except (OSError, SearchIndexError) as exc:
            log.warning("cannot write the index %s (%s): searching from memory; it is rebuilt at the next start",
                        self.index_path, getattr(exc, "strerror", None) or exc)

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
