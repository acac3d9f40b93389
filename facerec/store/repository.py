"""Repository over the enrollment database. Every write is one transaction; readers never see half a person."""

from __future__ import annotations

import re
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
from facerec.store.schema import AuditEvent, CalibrationRecord, DatabaseInfo, Person, Template

MODEL_KEY = "model_id"
GENERATION_KEY = "templates_generation"


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
    def _bump_generation(s: Session) -> int:
        row = s.get(DatabaseInfo, GENERATION_KEY, with_for_update=True)
        if row is None:
            s.add(DatabaseInfo(key=GENERATION_KEY, value="1"))
            return 1
        row.value = str(int(row.value) + 1)
        return int(row.value)

    # --- people and templates ------------------------------------------------------------------
    def add_templates(self, name: str, templates: list[NewTemplate]) -> tuple[list[int], int]:
        """Add a person's templates in one transaction.

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
            generation = self._bump_generation(s) if rows else self._generation(s)
            return [r.id for r in rows], generation

    def known_sources(self, name: str, model_id: str) -> set[str]:
        with self.session() as s:
            return set(s.scalars(
                select(Template.source_sha256).join(Person).where(Person.name == name, Template.model_id == model_id)
            ))

    def remove_person(self, name: str) -> tuple[list[int], int]:
        """Delete a person and their templates; returns the removed template ids and the new generation."""
        with self.session() as s:
            person = s.scalar(select(Person).where(Person.name == name))
            if person is None:
                raise UnknownPersonError(f"unknown person {name!r} (see `facerec list`)")
            ids = list(s.scalars(select(Template.id).where(Template.person_id == person.id)))
            s.execute(delete(Template).where(Template.person_id == person.id))
            s.delete(person)
            return ids, self._bump_generation(s)

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

    def templates(self, model_id: str, name: str | None = None, ids: list[int] | None = None) -> TemplateRows:
        """Templates of one model: all, one person's, or the given ids."""
        with self.session() as s:
            query = select(Template.id, Person.name, Template.embedding).join(Person).where(
                Template.model_id == model_id
            ).order_by(Template.id)
            if name is not None:
                query = query.where(Person.name == name)
            if ids is not None:
                query = query.where(Template.id.in_([int(i) for i in ids]))
            rows = s.execute(query).all()
        if not rows:
            return TemplateRows(np.zeros(0, dtype=np.int64), [], np.zeros((0, 0), dtype=np.float32))
        return TemplateRows(
            ids=np.array([r[0] for r in rows], dtype=np.int64),
            person_names=[r[1] for r in rows],
            embeddings=np.stack([np.frombuffer(r[2], dtype="<f4") for r in rows]).astype(np.float32),
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
    def audit(self, action: str, outcome: str, person_name: str | None = None, score: float | None = None,
              threshold: float | None = None, model_id: str | None = None, details: dict | None = None) -> None:
        with self.session() as s:
            s.add(AuditEvent(
                action=action, outcome=outcome, person_name=person_name,
                score=None if score is None else float(score),
                threshold=None if threshold is None else float(threshold),
                model_id=model_id, details=details or {},
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
