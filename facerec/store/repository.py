"""Repository over the enrollment database. Every write is one transaction; readers never see half a person."""

from __future__ import annotations

import re
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from sqlalchemy import create_engine, delete, event, func, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from facerec.errors import DatabaseError, ModelMismatchError, UnknownPersonError
from facerec.store import migrate
from facerec.store.schema import AuditEvent, CalibrationRecord, DatabaseInfo, Person, Template, TemplateChange

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
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class Store:
    """Open with `Store.open(url)`; SQLite files are created and migrated on first use."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    # --- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, url: str, auto_migrate: bool | None = None) -> "Store":
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise DatabaseError(f"not a database URL: {redact(url)!r} (expected e.g. sqlite:///facerec.db)") from None
        is_sqlite = parsed.get_backend_name() == "sqlite"
        if auto_migrate is None:
            auto_migrate = is_sqlite
        if is_sqlite and parsed.database not in (None, "", ":memory:"):
            path = Path(parsed.database)
            if path.is_dir():
                raise DatabaseError(f"{path}: is a directory, expected a SQLite database file")
            if not path.parent.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
        try:
            kwargs = {"connect_args": {"timeout": 30}} if is_sqlite else {"pool_pre_ping": True}
            if not is_sqlite and parsed.get_backend_name() == "postgresql":
                kwargs["connect_args"] = {"connect_timeout": 10}
            engine = create_engine(url, **kwargs)
        except (NoSuchModuleError, ArgumentError, ImportError) as exc:
            raise DatabaseError(f"unsupported database URL {redact(url)!r}: {_first_line(exc)}") from None
        if is_sqlite:
            event.listen(engine, "connect", _sqlite_pragmas)
        store = cls(engine, url)
        store._check_schema(auto_migrate)
        return store

    def _check_schema(self, auto_migrate: bool) -> None:
        try:
            current = migrate.current_revision(self.engine)
            head = migrate.HEAD_REVISION
            if current != head:
                if not auto_migrate:
                    state = "is empty" if current is None else f"is at revision {current}"
                    raise DatabaseError(
                        f"database {redact(self.url)} {state}, facerec needs {head}: run `facerec db upgrade`"
                    )
                migrate.upgrade(self.engine)
        except DatabaseError:
            raise
        except DBAPIError as exc:
            raise DatabaseError(f"cannot use database {redact(self.url)}: {_first_line(exc)}") from None
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
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any exception (Ctrl-C included)."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # --- database facts ------------------------------------------------------------------------
    def info(self, key: str) -> str | None:
        with self.session() as s:
            row = s.get(DatabaseInfo, key)
            return row.value if row else None

    def bind_model(self, model_id: str) -> None:
        """Refuse a database made for another model; record the model on first use."""
        bound = self.info(MODEL_KEY)
        if bound is None:
            with self.session() as s:
                if s.get(DatabaseInfo, MODEL_KEY) is None:
                    s.add(DatabaseInfo(key=MODEL_KEY, value=model_id))
            return
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
    def _bump_generation(s: Session, added: list[int] = (), removed: list[int] = ()) -> int:
        """Next generation, with the template ids it added and removed in the change log."""
        row = s.get(DatabaseInfo, GENERATION_KEY, with_for_update=True)
        if row is None:
            row = DatabaseInfo(key=GENERATION_KEY, value="0")
            s.add(row)
        generation = int(row.value) + 1
        row.value = str(generation)
        token = s.get(DatabaseInfo, TOKEN_KEY)
        if token is None:
            s.add(DatabaseInfo(key=TOKEN_KEY, value=uuid.uuid4().hex))
        else:
            token.value = uuid.uuid4().hex
        s.add_all([TemplateChange(generation=generation, template_id=int(i), added=True) for i in added]
                  + [TemplateChange(generation=generation, template_id=int(i), added=False) for i in removed])
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
        with self.session() as s:
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
                rows.append(Template(
                    person_id=person.id, model_id=t.model_id, model_version=t.model_version,
                    dim=int(vec.shape[0]), embedding=vec.tobytes(), source_sha256=t.source_sha256,
                    source_name=t.source_name, detection_score=float(t.detection_score),
                    quality=t.quality, forced=t.forced,
                ))
            s.add_all(rows)
            s.flush()
            ids = [r.id for r in rows]
            generation = self._bump_generation(s, added=ids) if rows else self._generation(s)
            if audit is not None:
                self._add_audit(s, audit, details={"added": len(ids)})
            return ids, generation

    def known_sources(self, name: str, model_id: str) -> set[str]:
        with self.session() as s:
            return set(s.scalars(
                select(Template.source_sha256).join(Person).where(Person.name == name, Template.model_id == model_id)
            ))

    def remove_person(self, name: str, audit: AuditEntry | None = None) -> tuple[list[int], int]:
        """Delete a person and their templates, with the audit event, in one transaction.

        Returns the removed template ids and the new generation."""
        with self.session() as s:
            person = s.scalar(select(Person).where(Person.name == name))
            if person is None:
                raise UnknownPersonError(f"unknown person {name!r} (see `facerec list`)")
            ids = list(s.scalars(select(Template.id).where(Template.person_id == person.id)))
            s.execute(delete(Template).where(Template.person_id == person.id))
            s.delete(person)
            generation = self._bump_generation(s, removed=ids)
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
            columns = (Template.id, Person.name) + ((Template.embedding,) if with_embeddings else ())
            query = select(*columns).join(Person).where(
                Template.model_id == model_id
            ).order_by(Template.id)
            if name is not None:
                query = query.where(Person.name == name)
            if ids is not None:
                query = query.where(Template.id.in_([int(i) for i in ids]))
            rows = s.execute(query).all()
        if not rows:
            return TemplateRows.empty()
        return TemplateRows(
            ids=np.array([r[0] for r in rows], dtype=np.int64),
            person_names=[r[1] for r in rows],
            embeddings=np.stack([np.frombuffer(r[2], dtype="<f4") for r in rows]).astype(np.float32)
            if with_embeddings else np.zeros((len(rows), 0), dtype=np.float32),
        )

    # --- calibrations ---------------------------------------------------------------------------
    def save_calibration(self, model_id: str, kind: str, scorer: str, data: str, n_genuine: int, n_impostor: int,
                         eer: float | None, threshold: float, operating: str, report: dict) -> int:
        """Store a calibration and make it the one in force for (model, kind, scorer)."""
        with self.session() as s:
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
        with self.session() as s:
            self._add_audit(s, entry)

    def audit_many(self, entries: list[AuditEntry]) -> None:
        """Record several decisions in one transaction (a batch of identified faces)."""
        with self.session() as s:
            for entry in entries:
                self._add_audit(s, entry)

    @staticmethod
    def _add_audit(s: Session, entry: AuditEntry, details: dict | None = None) -> None:
        s.add(AuditEvent(
            action=entry.action, outcome=entry.outcome, person_name=entry.person_name,
            score=None if entry.score is None else float(entry.score),
            threshold=None if entry.threshold is None else float(entry.threshold),
            model_id=entry.model_id, details={**(entry.details or {}), **(details or {})},
        ))

    def audit_events(self, limit: int = 100) -> list[dict]:
        with self.session() as s:
            rows = s.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)).all()
            return [
                {"id": e.id, "at": e.at.isoformat(timespec="seconds"), "action": e.action,
                 "person": e.person_name, "outcome": e.outcome, "score": e.score,
                 "threshold": e.threshold, "model_id": e.model_id, "details": e.details}
                for e in rows
            ]


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
