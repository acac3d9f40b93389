"""Repository over the enrollment database. Every write is one transaction; readers never see half a person."""

from __future__ import annotations

import re
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from sqlalchemy import create_engine, delete, event, func, inspect, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from facerec.errors import (
    DatabaseError,
    DatabaseUnavailableError,
    ModelMismatchError,
    TemplateKeyError,
    UnknownPersonError,
)
from facerec.io.files import private_dir, private_file
from facerec.store import migrate
from facerec.store.audit_chain import (
    HEAD_KEY,
    ChainReport,
    canonical_details,
    event_hash,
    head_value,
    parse_head,
    verify_chain,
)
from facerec.store.crypto import TemplateCipher, template_context
from facerec.store.schema import AuditEvent, CalibrationRecord, DatabaseInfo, Person, Template, TemplateChange, utcnow

MODEL_KEY = "model_id"
GENERATION_KEY = "templates_generation"
DATABASE_ID_KEY = "database_id"
CHANGE_LOG_FROM_KEY = "change_log_from"
TOKEN_KEY = "templates_token"


@dataclass(frozen=True)
class GalleryState:
    """Where the templates stand: the generation counter and the random token written with it."""

    generation: int
    token: str


@dataclass(frozen=True)
class NewTemplate:
    embedding: np.ndarray
    model_id: str
    model_version: str
    source_sha256: str
    source_name: str
    detection_score: float
    quality: dict
    forced: bool = False


@dataclass(frozen=True)
class PersonSummary:
    name: str
    templates: int
    created_at: str


@dataclass(frozen=True)
class TemplateRows:
    """Templates as arrays: ids, owners and unit embeddings (one row each)."""

    ids: np.ndarray
    person_names: list[str]
    embeddings: np.ndarray

    @classmethod
    def empty(cls) -> "TemplateRows":
        return cls(np.zeros(0, dtype=np.int64), [], np.zeros((0, 0), dtype=np.float32))


@dataclass(frozen=True)
class AuditEntry:
    """One audit event, written in the same transaction as the change it records (when there is one)."""

    action: str
    outcome: str
    person_name: str | None = None
    score: float | None = None
    threshold: float | None = None
    model_id: str | None = None
    details: dict | None = None


@dataclass(frozen=True)
class ChangeSet:
    """The net template changes between two generations: ids to drop, and the rows to add."""

    state: GalleryState
    removed: np.ndarray
    added: TemplateRows


def redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def _first_line(exc: BaseException) -> str:
    """The driver's own first line: never SQLAlchemy's statement dump (engines also hide parameters)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


MAX_SOURCE_NAME = 1024  # Template.source_name: longer photo paths keep their end (the file name)


def _fit(value: str, limit: int) -> str:
    return value if len(value) <= limit else "\u2026" + value[-(limit - 1):]


def check_sqlite_url(url: str) -> Path | None:
    """The file of a SQLite URL (None: in memory); refuses forms SQLite would silently misread."""
    parsed = make_url(url)
    if parsed.host or parsed.port or parsed.username or parsed.password:
        raise DatabaseError(f"malformed SQLite URL {redact(url)!r}: a SQLite URL names a file, not a host "
                            f"(sqlite:///relative/path.db or sqlite:////absolute/path.db)")
    if parsed.database in (None, "", ":memory:") or parsed.query.get("uri"):
        return None
    return Path(parsed.database)


def _parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise DatabaseError(f"not a database URL: {redact(url)!r} (expected e.g. sqlite:///facerec.db)") from None


def _create_engine(url: str, parsed: URL) -> Engine:
    is_sqlite = parsed.get_backend_name() == "sqlite"
    try:
        # hide_parameters: an error must never print statement parameters (embedding bytes)
        kwargs = {"connect_args": {"timeout": 30}} if is_sqlite else {"pool_pre_ping": True}
        if not is_sqlite and parsed.get_backend_name() == "postgresql":
            kwargs["connect_args"] = {"connect_timeout": 10}
        engine = create_engine(url, hide_parameters=True, **kwargs)
    except (NoSuchModuleError, ArgumentError, ImportError) as exc:
        raise DatabaseError(f"unsupported database URL {redact(url)!r}: {_first_line(exc)}") from None
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class Store:
    """Open with `Store.open(url)`; SQLite files are created (owner-only) and migrated on first use.

    Database errors leave as `DatabaseError` with the driver's one-line reason (never statement parameters:
    they hold embeddings); a lost connection or a lock that never came is `DatabaseUnavailableError` (the
    transaction rolled back; exit code 75, retry). With a `cipher`, templates are sealed at rest (AES-GCM).
    """

    def __init__(self, engine: Engine, url: str, cipher: TemplateCipher | None = None) -> None:
        self.engine = engine
        self.url = url
        self.cipher = cipher
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    # --- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, url: str, auto_migrate: bool | None = None, cipher: TemplateCipher | None = None) -> "Store":
        parsed = _parse_url(url)
        is_sqlite = parsed.get_backend_name() == "sqlite"
        if auto_migrate is None:
            auto_migrate = is_sqlite
        if is_sqlite:
            path = check_sqlite_url(url)
            if path is not None:
                _create_sqlite_file(path)
        store = cls(_create_engine(url, parsed), url, cipher)
        store._check_schema(auto_migrate)
        return store

    @classmethod
    def bound_model(cls, url: str) -> str | None:
        """The model a database was made for, read from its facts without creating, migrating or binding
        anything; None when there is no such database yet or nothing has bound it."""
        parsed = _parse_url(url)
        if parsed.get_backend_name() == "sqlite":
            path = check_sqlite_url(url)
            if path is None or not path.exists():
                return None
        engine = _create_engine(url, parsed)
        try:  # the errors Store.open gives for the same database
            with engine.connect() as conn:
                if not inspect(conn).has_table(DatabaseInfo.__tablename__):
                    return None
                return conn.execute(select(DatabaseInfo.value).where(DatabaseInfo.key == MODEL_KEY)).scalar()
        except DBAPIError as exc:
            raise DatabaseError(f"cannot use database {redact(url)}: {_first_line(exc)}") from None
        except SQLAlchemyError as exc:
            raise DatabaseError(f"database {redact(url)}: {_first_line(exc)}") from None
        finally:
            engine.dispose()

    def _check_schema(self, auto_migrate: bool) -> None:
        try:
            current = migrate.current_revision(self.engine)
            head = migrate.HEAD_REVISION
            if current != head:
                if current is not None and not migrate.is_known(current):
                    raise DatabaseError(
                        f"database {redact(self.url)} is at revision {current}, which this facerec does not "
                        f"know (it knows up to {head}): it was written by a newer facerec; upgrade facerec"
                    )
                if not auto_migrate:
                    state = "is empty" if current is None else f"is at revision {current}"
                    raise DatabaseError(
                        f"database {redact(self.url)} {state}, facerec needs {head}: run `facerec db upgrade`"
                    )
                migrate.upgrade(self.engine)
        except DatabaseError:
            raise
        except DBAPIError as exc:
            hint = " (SQLite writes the file and, for its log, its folder)" if "readonly" in _first_line(exc) else ""
            raise DatabaseError(f"cannot use database {redact(self.url)}: {_first_line(exc)}{hint}") from None
        except SQLAlchemyError as exc:
            raise DatabaseError(f"database {redact(self.url)}: {_first_line(exc)}") from None

    def upgrade(self) -> str:
        try:
            migrate.upgrade(self.engine)
        except SQLAlchemyError as exc:
            raise DatabaseError(f"upgrade of {redact(self.url)} failed: {_first_line(exc)}") from None
        return migrate.HEAD_REVISION

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any exception (Ctrl-C included).

        `write=True` on SQLite takes the write lock first (BEGIN IMMEDIATE): a transaction that reads and
        then writes would otherwise fail with 'database is locked' when another process wrote in between.
        """
        session = self._sessions()
        try:
            if write and self.is_sqlite:
                session.connection().exec_driver_sql("BEGIN IMMEDIATE")
            yield session
            session.commit()
        except BaseException as exc:
            try:
                session.rollback()
            except SQLAlchemyError:  # the connection is gone: the server rolled the transaction back
                pass
            if isinstance(exc, SQLAlchemyError):
                raise self._translate(exc) from None
            raise
        finally:
            session.close()

    def _translate(self, exc: SQLAlchemyError) -> DatabaseError:
        reason = _first_line(exc)
        if isinstance(exc, DBAPIError) and exc.connection_invalidated or (
                isinstance(exc, OperationalError) and ("locked" in reason or "connection" in reason.lower())):
            return DatabaseUnavailableError(
                f"database {redact(self.url)} unavailable ({reason}); this step was rolled back: run it again"
            )
        return DatabaseError(f"database {redact(self.url)}: {reason}")

    # --- database facts ------------------------------------------------------------------------
    def info(self, key: str) -> str | None:
        with self.session() as s:
            row = s.get(DatabaseInfo, key)
            return row.value if row else None

    def bind_model(self, model_id: str) -> None:
        """Refuse a database made for another model; record the model on first use."""
        bound = self.info(MODEL_KEY)
        if bound is None:
            with self.session(write=True) as s:
                _insert_missing(s, MODEL_KEY, model_id)
                bound = s.get(DatabaseInfo, MODEL_KEY).value
        if bound != model_id:
            raise ModelMismatchError(
                f"database {redact(self.url)} was made for model {bound!r}, not {model_id!r}: use "
                f"--model {bound}, or re-enroll into a new database with `facerec --db NEW --model {model_id} "
                f"enroll --from-dir DIR` (see README, 'Changing model')"
            )

    def generation(self) -> int:
        """A counter bumped by every template change: the index records the one it reflects."""
        with self.session() as s:
            return self._generation(s)

    @staticmethod
    def _generation(s: Session) -> int:
        row = s.get(DatabaseInfo, GENERATION_KEY)
        return int(row.value) if row else 0

    @staticmethod
    def _lock_generation(s: Session) -> DatabaseInfo:
        """Lock the generation row first: writers of templates take turns, in one order (no deadlock)."""
        _insert_missing(s, GENERATION_KEY, "0")
        return s.get(DatabaseInfo, GENERATION_KEY, with_for_update=True)

    @staticmethod
    def _bump_generation(s: Session, row: DatabaseInfo, added: list[int] = (), removed: list[int] = ()) -> int:
        """Next generation, with the template ids it added and removed in the change log."""
        generation = int(row.value) + 1
        row.value = str(generation)
        _insert_missing(s, TOKEN_KEY, "")
        s.execute(update(DatabaseInfo).where(DatabaseInfo.key == TOKEN_KEY).values(value=uuid.uuid4().hex))
        changes = ([{"generation": generation, "template_id": int(i), "added": True} for i in added]
                   + [{"generation": generation, "template_id": int(i), "added": False} for i in removed])
        if changes:  # one executemany: a bulk chunk logs thousands of ids
            s.execute(TemplateChange.__table__.insert(), changes)
        return generation

    def state(self) -> GalleryState:
        """Generation and token in one query: what a long-lived process checks before every search."""
        with self.session() as s:
            rows = dict(s.execute(select(DatabaseInfo.key, DatabaseInfo.value)
                                  .where(DatabaseInfo.key.in_((GENERATION_KEY, TOKEN_KEY)))).all())
        return GalleryState(int(rows.get(GENERATION_KEY, 0)), rows.get(TOKEN_KEY, ""))

    def database_id(self) -> str:
        """A random id written when the schema was created: binds index files to this database."""
        value = self.info(DATABASE_ID_KEY)
        if value is None:
            raise DatabaseError(f"database {redact(self.url)} has no database id: run `facerec db upgrade`")
        return value

    def changes_since(self, generation: int, model_id: str) -> ChangeSet | None:
        """Net template changes after `generation` up to the current state, or None when the change log
        does not reach back that far (or the database went back, as after restoring a backup)."""
        with self.session() as s:
            start = s.get(DatabaseInfo, CHANGE_LOG_FROM_KEY)
            if start is None or generation < int(start.value):
                return None
        state = self.state()
        if state.generation < generation:
            return None
        with self.session() as s:
            rows = s.execute(select(TemplateChange.template_id, TemplateChange.added)
                             .where(TemplateChange.generation > generation,
                                    TemplateChange.generation <= state.generation)  # later: next time
                             .order_by(TemplateChange.id)).all()
        added: set[int] = set()
        removed: set[int] = set()
        for template_id, was_added in rows:
            if was_added:
                added.add(template_id)
            else:
                removed.add(template_id)
                added.discard(template_id)
        fresh = self.templates(model_id, ids=sorted(added)) if added else TemplateRows.empty()
        return ChangeSet(state, np.array(sorted(removed), dtype=np.int64), fresh)

    # --- people and templates ------------------------------------------------------------------
    def add_templates(self, name: str, templates: list[NewTemplate],
                      audit: AuditEntry | None = None) -> tuple[list[int], int]:
        """Add a person's templates and the audit event that records it, in one transaction.

        Returns the new template ids and the generation after the write (unchanged when nothing new).
        """
        with self.session(write=True) as s:
            generation_row = self._lock_generation(s)  # two processes adding the same new name take turns
            person = s.scalar(select(Person).where(Person.name == name))
            if person is None:
                person = Person(name=name)
                s.add(person)
                s.flush()
            known = set(
                s.scalars(select(Template.source_sha256).where(Template.person_id == person.id,
                                                               Template.model_id.in_({t.model_id for t in templates})))
            )
            rows = []
            for t in templates:
                if t.source_sha256 in known:
                    continue
                known.add(t.source_sha256)
                vec = np.asarray(t.embedding, dtype="<f4")
                blob, sealed_with = self._seal(vec.tobytes(), name, t.model_id, t.source_sha256)
                rows.append(Template(
                    person_id=person.id, model_id=t.model_id, model_version=t.model_version,
                    dim=int(vec.shape[0]), embedding=blob, key_id=sealed_with, source_sha256=t.source_sha256,
                    source_name=_fit(t.source_name, MAX_SOURCE_NAME), detection_score=float(t.detection_score),
                    quality=t.quality, forced=t.forced,
                ))
            s.add_all(rows)
            s.flush()
            ids = [r.id for r in rows]
            generation = self._bump_generation(s, generation_row, added=ids) if rows else int(generation_row.value)
            if audit is not None:
                self._add_audit(s, audit, details={"added": len(ids)})
            return ids, generation

    def add_templates_bulk(self, entries: Sequence[tuple[str, NewTemplate]],
                           audit: AuditEntry | None = None) -> tuple[list[int | None], int]:
        """Add many people's templates (one chunk of a bulk enrollment) in ONE transaction.

        Missing people are created; a template whose person already has its source (same model and
        SHA-256) is skipped, so a re-run resumes; rows go in with executemany (sqlite3's executemany; multi-row
        INSERT batches, SQLAlchemy's insertmanyvalues, on PostgreSQL); one generation logs every new id; one
        audit event lists the people. Returns the new template id of each entry (None: skipped) and the generation.
        """
        with self.session(write=True) as s:
            generation_row = self._lock_generation(s)
            names = sorted({name for name, _ in entries})
            person_ids = dict(_in_batches(s, select(Person.name, Person.id), Person.name, names))
            missing = [n for n in names if n not in person_ids]
            if missing:  # plain executemany, ids read back (RETURNING in order is one statement a row on SQLite)
                now = utcnow()
                s.execute(Person.__table__.insert(), [{"name": n, "created_at": now} for n in missing])
                person_ids.update(_in_batches(s, select(Person.name, Person.id), Person.name, missing))
            models = sorted({t.model_id for _, t in entries})
            known = set(_in_batches(s, select(Template.person_id, Template.source_sha256).where(
                Template.model_id.in_(models)), Template.person_id, sorted(set(person_ids.values()) - {
                    person_ids[n] for n in missing})))
            rows, at = [], []
            now = utcnow()
            for k, (name, t) in enumerate(entries):
                key = (person_ids[name], t.source_sha256)
                if key in known:
                    continue
                known.add(key)
                vec = np.asarray(t.embedding, dtype="<f4")
                blob, sealed_with = self._seal(vec.tobytes(), name, t.model_id, t.source_sha256)
                rows.append({"person_id": key[0], "model_id": t.model_id, "model_version": t.model_version,
                             "dim": int(vec.shape[0]), "embedding": blob, "key_id": sealed_with,
                             "source_sha256": t.source_sha256, "source_name": _fit(t.source_name, MAX_SOURCE_NAME),
                             "detection_score": float(t.detection_score), "quality": t.quality, "forced": t.forced,
                             "created_at": now})
                at.append(k)
            new_ids = []
            if rows:  # writers of templates hold the generation lock: every id above the old maximum is ours
                before = s.scalar(select(func.max(Template.id))) or 0
                s.execute(Template.__table__.insert(), rows)
                by_key = {(p, h): i for i, p, h in s.execute(select(Template.id, Template.person_id,
                                                                    Template.source_sha256).where(Template.id > before))}
                new_ids = [by_key[(r["person_id"], r["source_sha256"])] for r in rows]
            generation = (self._bump_generation(s, generation_row, added=new_ids) if new_ids
                          else int(generation_row.value))
            if audit is not None:
                self._add_audit(s, audit, details={"added": len(new_ids), "skipped": len(entries) - len(new_ids),
                                                   "people": names})
            ids: list[int | None] = [None] * len(entries)
            for k, template_id in zip(at, new_ids):
                ids[k] = template_id
            return ids, generation

    def owners(self, ids: Sequence[int]) -> dict[int, str]:
        """Template id -> person name for these ids (ids no longer stored are absent)."""
        with self.session() as s:
            return dict(_in_batches(s, select(Template.id, Person.name).join(Person), Template.id,
                                    sorted({int(i) for i in ids})))

    def template_count(self, model_id: str) -> int:
        with self.session() as s:
            return int(s.scalar(select(func.count(Template.id)).where(Template.model_id == model_id)))

    def person_count(self, model_id: str) -> int:
        """People with at least one template of this model."""
        with self.session() as s:
            return int(s.scalar(select(func.count(func.distinct(Template.person_id)))
                                .where(Template.model_id == model_id)))

    def known_sources(self, name: str, model_id: str) -> set[str]:
        with self.session() as s:
            return set(s.scalars(
                select(Template.source_sha256).join(Person).where(Person.name == name, Template.model_id == model_id)
            ))

    def remove_person(self, name: str, audit: AuditEntry | None = None) -> tuple[list[int], int]:
        """Delete a person and their templates, with the audit event, in one transaction.

        Returns the removed template ids and the new generation."""
        with self.session(write=True) as s:
            generation_row = self._lock_generation(s)
            person = s.scalar(select(Person).where(Person.name == name))
            if person is None:
                raise UnknownPersonError(f"unknown person {name!r} (see `facerec list`)")
            ids = list(s.scalars(select(Template.id).where(Template.person_id == person.id)))
            s.execute(delete(Template).where(Template.person_id == person.id))
            s.delete(person)
            generation = self._bump_generation(s, generation_row, removed=ids)
            if audit is not None:
                self._add_audit(s, audit, details={"templates": len(ids)})
            return ids, generation

    def has_person(self, name: str) -> bool:
        with self.session() as s:
            return s.scalar(select(Person.id).where(Person.name == name)) is not None

    def list_people(self, model_id: str | None = None) -> list[PersonSummary]:
        with self.session() as s:
            count = func.count(Template.id)
            join_on = Template.person_id == Person.id
            if model_id is not None:
                join_on = join_on & (Template.model_id == model_id)
            rows = s.execute(
                select(Person.name, count, Person.created_at).outerjoin(Template, join_on)
                .group_by(Person.id).order_by(Person.name)
            ).all()
            return [PersonSummary(n, int(c), created.isoformat(timespec="seconds")) for n, c, created in rows]

    def templates(self, model_id: str, name: str | None = None, ids: list[int] | None = None,
                  with_embeddings: bool = True) -> TemplateRows:
        """Templates of one model: all, one person's, or the given ids (owners only: `with_embeddings=False`)."""
        with self.session() as s:
            columns = (Template.id, Person.name) + ((Template.embedding, Template.key_id, Template.model_id,
                                                     Template.source_sha256) if with_embeddings else ())
            query = select(*columns).join(Person).where(
                Template.model_id == model_id
            ).order_by(Template.id)
            if name is not None:
                query = query.where(Person.name == name)
            if ids is None:
                rows = s.execute(query).all()
            else:  # batches: a catch-up after a bulk enrollment names a million ids (SQL variable limits)
                wanted = sorted(int(i) for i in ids)
                rows = [r for start in range(0, len(wanted), IN_BATCH)
                        for r in s.execute(query.where(Template.id.in_(wanted[start:start + IN_BATCH]))).all()]
        if not rows:
            return TemplateRows.empty()
        return TemplateRows(
            ids=np.array([r[0] for r in rows], dtype=np.int64),
            person_names=[r[1] for r in rows],
            embeddings=np.stack([np.frombuffer(self._open_sealed(r[2], r[3], r[1], r[4], r[5]), dtype="<f4")
                                 for r in rows]).astype(np.float32)
            if with_embeddings else np.zeros((len(rows), 0), dtype=np.float32),
        )

    # --- templates at rest ---------------------------------------------------------------------
    def _seal(self, plain: bytes, person: str, model_id: str, source_sha256: str) -> tuple[bytes, str | None]:
        if self.cipher is None:
            return plain, None
        return self.cipher.seal(plain, template_context(person, model_id, source_sha256)), self.cipher.key_id

    def _open_sealed(self, blob: bytes, sealed_with: str | None, person: str, model_id: str,
                     source_sha256: str) -> bytes:
        if sealed_with is None:
            return blob
        if self.cipher is None:
            raise TemplateKeyError(f"templates in {redact(self.url)} are sealed with key {sealed_with}: "
                                   f"set FACEREC_KEY_FILE (or --key-file) to that key file")
        return self.cipher.open(blob, sealed_with, template_context(person, model_id, source_sha256))

    def key_ids(self) -> dict[str, int]:
        """How many templates each key sealed ("" = stored in the clear)."""
        with self.session() as s:
            return {k or "": int(n) for k, n in
                    s.execute(select(Template.key_id, func.count(Template.id)).group_by(Template.key_id)).all()}

    def reseal_templates(self, new: TemplateCipher, audit: AuditEntry) -> int:
        """Open every template with the current cipher (or read it in the clear) and seal it under `new`,
        with the audit event, in one transaction: a failure leaves every template as it was."""
        with self.session(write=True) as s:
            self._lock_generation(s)
            rows = s.execute(select(Template.id, Template.embedding, Template.key_id, Person.name,
                                    Template.model_id, Template.source_sha256).join(Person)).all()
            for template_id, blob, sealed_with, person, model_id, digest in rows:
                plain = self._open_sealed(blob, sealed_with, person, model_id, digest)
                s.execute(update(Template).where(Template.id == template_id).values(
                    embedding=new.seal(plain, template_context(person, model_id, digest)), key_id=new.key_id))
            self._add_audit(s, audit, details={"templates": len(rows), "key_id": new.key_id})
        self.cipher = new
        return len(rows)

    def erase_residue(self) -> list[str]:
        """After an erasure: push deleted pages out of the SQLite write-ahead log (secure_delete already
        zeroes them in the file), or VACUUM the template tables on PostgreSQL. Returns what was done."""
        try:
            with self.engine.connect() as conn:
                if self.is_sqlite:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                    return ["sqlite: deleted pages zeroed (secure_delete) and the write-ahead log truncated"]
                if self.engine.dialect.name == "postgresql":
                    conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                    conn.exec_driver_sql("VACUUM templates")
                    conn.exec_driver_sql("VACUUM template_changes")
                    return ["postgresql: VACUUM templates (dead rows reclaimed; not overwritten on disk)"]
        except SQLAlchemyError as exc:
            return [f"database clean-up skipped: {_first_line(exc)}"]
        return []

    # --- calibrations ---------------------------------------------------------------------------
    def save_calibration(self, model_id: str, kind: str, scorer: str, data: str, n_genuine: int, n_impostor: int,
                         eer: float | None, threshold: float, operating: str, report: dict) -> int:
        """Store a calibration and make it the one in force for (model, kind, scorer)."""
        with self.session(write=True) as s:
            for old in s.scalars(select(CalibrationRecord).where(
                    CalibrationRecord.model_id == model_id, CalibrationRecord.kind == kind,
                    CalibrationRecord.scorer == scorer, CalibrationRecord.active.is_(True))):
                old.active = False
            record = CalibrationRecord(model_id=model_id, kind=kind, scorer=scorer, data=data[:1024],
                                       n_genuine=n_genuine, n_impostor=n_impostor, eer=eer, threshold=threshold,
                                       operating=operating, report=report, active=True)
            s.add(record)
            s.flush()
            return record.id

    def active_calibration(self, model_id: str, kind: str, scorer: str = "cosine") -> dict | None:
        with self.session() as s:
            record = s.scalar(select(CalibrationRecord).where(
                CalibrationRecord.model_id == model_id, CalibrationRecord.kind == kind,
                CalibrationRecord.scorer == scorer, CalibrationRecord.active.is_(True),
            ).order_by(CalibrationRecord.id.desc()).limit(1))
            if record is None:
                return None
            return {"id": record.id, "created_at": record.created_at.isoformat(timespec="seconds"),
                    "data": record.data, "threshold": record.threshold, "operating": record.operating,
                    "n_genuine": record.n_genuine, "n_impostor": record.n_impostor, "eer": record.eer,
                    "report": record.report}

    # --- audit ---------------------------------------------------------------------------------
    def audit(self, entry: AuditEntry) -> None:
        """Record a decision that changes nothing else (verify, identify, calibrate)."""
        with self.session(write=True) as s:
            self._add_audit(s, entry)

    def audit_many(self, entries: list[AuditEntry]) -> None:
        """Record several decisions in one transaction (a batch of identified faces)."""
        with self.session(write=True) as s:
            for entry in entries:
                self._add_audit(s, entry)

    @staticmethod
    def _add_audit(s: Session, entry: AuditEntry, details: dict | None = None) -> None:
        """Append one event to the hash chain, under the lock on its head (one chain for all writers).

        The one place audit events are written: every verb reaches it through `audit`, `audit_many`,
        `add_templates`, `remove_person` or `reseal_templates`.
        """
        _insert_missing(s, HEAD_KEY, "")
        head = s.get(DatabaseInfo, HEAD_KEY, with_for_update=True)
        _, prev_hash = parse_head(head.value)
        at = utcnow()
        score = None if entry.score is None else float(entry.score)
        threshold = None if entry.threshold is None else float(entry.threshold)
        content = canonical_details({**(entry.details or {}), **(details or {})})
        digest = event_hash(prev_hash, at, entry.action, entry.person_name, entry.outcome, score, threshold,
                            entry.model_id, content)
        row = AuditEvent(at=at, action=entry.action, outcome=entry.outcome, person_name=entry.person_name,
                         score=score, threshold=threshold, model_id=entry.model_id, details=content,
                         prev_hash=prev_hash, hash=digest)
        s.add(row)
        s.flush()
        head.value = head_value(row.id, digest)

    def verify_audit(self) -> ChainReport:
        """Recompute the audit hash chain: edited events, deleted or inserted ones, a cut-off end."""
        with self.session() as s:
            head = s.get(DatabaseInfo, HEAD_KEY)
            rows = s.execute(select(AuditEvent.id, AuditEvent.at, AuditEvent.action, AuditEvent.person_name,
                                    AuditEvent.outcome, AuditEvent.score, AuditEvent.threshold, AuditEvent.model_id,
                                    AuditEvent.details, AuditEvent.prev_hash, AuditEvent.hash)
                             .order_by(AuditEvent.id).execution_options(yield_per=5000))
            return verify_chain(rows, head.value if head else None)

    def audit_events(self, limit: int = 100) -> list[dict]:
        with self.session() as s:
            rows = s.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)).all()
            return [
                {"id": e.id, "at": e.at.isoformat(timespec="seconds"), "action": e.action,
                 "person": e.person_name, "outcome": e.outcome, "score": e.score,
                 "threshold": e.threshold, "model_id": e.model_id, "details": e.details}
                for e in rows
            ]


IN_BATCH = 10_000  # values per IN (...) list: under SQLite's 32,766 variables and PostgreSQL's 65,535 parameters


def _in_batches(s: Session, query, column, values: list) -> list:
    """Rows of `query` where `column` is in `values`, asked in batches."""
    return [r for start in range(0, len(values), IN_BATCH)
            for r in s.execute(query.where(column.in_(values[start:start + IN_BATCH]))).all()]


def _insert_missing(s: Session, key: str, value: str) -> None:
    """Insert a facerec_info row unless it exists (concurrent first writers must not collide on the key)."""
    dialect = s.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite_insert if dialect == "sqlite" else pg_insert
        s.execute(insert(DatabaseInfo).values(key=key, value=value).on_conflict_do_nothing(index_elements=["key"]))
    elif s.get(DatabaseInfo, key) is None:
        s.add(DatabaseInfo(key=key, value=value))
        s.flush()


def _create_sqlite_file(path: Path) -> None:
    """Biometric data: a new database file is 0600 in a folder created 0700 (SQLite gives its -wal and
    -shm files the database file's mode)."""
    if path.is_dir():
        raise DatabaseError(f"{path}: is a directory, expected a SQLite database file")
    try:
        private_dir(path.parent)
        private_file(path)
    except OSError as exc:
        raise DatabaseError(f"{path}: cannot create the database ({exc.strerror})") from None


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA secure_delete=ON")  # deleted templates are overwritten, not left in free pages
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
