"""SQLAlchemy 2 models. Changes here need an Alembic migration in `migrations/versions/`."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

MAX_NAME_LENGTH = 128


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class DatabaseInfo(Base):
    """Key/value facts about the database: the model it was made for, the template generation."""

    __tablename__ = "facerec_info"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(512))


class Person(Base):
    __tablename__ = "people"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    templates: Mapped[list["Template"]] = relationship(
        back_populates="person", cascade="all, delete-orphan", passive_deletes=True
    )


class Template(Base):
    """One enrolled face: its embedding under one model, and where it came from."""

    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("person_id", "model_id", "source_sha256", name="uq_template_source"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(String(64), index=True)
    model_version: Mapped[str] = mapped_column(String(32))
    dim: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian, L2-normalised
    source_sha256: Mapped[str] = mapped_column(String(64))
    source_name: Mapped[str] = mapped_column(String(1024))
    detection_score: Mapped[float] = mapped_column(Float)
    quality: Mapped[dict] = mapped_column(JSON)
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # sealing key (None: in the clear)
    person: Mapped[Person] = relationship(back_populates="templates")


class AuditEvent(Base):
    """Every enroll / verify / identify / remove decision; names are copied so removal keeps the trail."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(32))
    person_name: Mapped[str | None] = mapped_column(String(MAX_NAME_LENGTH), nullable=True)
    outcome: Mapped[str] = mapped_column(String(32))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    model_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)  # hash chain (store/audit_chain.py)
    hash: Mapped[str | None] = mapped_column(String(64), nullable=True)


class CalibrationRecord(Base):
    """A stored calibration (see facerec.decisions.calibration); the newest active one of a model decides."""

    __tablename__ = "calibrations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    model_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # "verification" or "identification"
    scorer: Mapped[str] = mapped_column(String(32))
    data: Mapped[str] = mapped_column(String(1024))
    n_genuine: Mapped[int] = mapped_column(Integer)
    n_impostor: Mapped[int] = mapped_column(Integer)
    eer: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float] = mapped_column(Float)
    operating: Mapped[str] = mapped_column(String(64))
    report: Mapped[dict] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class TemplateChange(Base):
    """Which template ids a generation added or removed: lets other processes catch up incrementally."""

    __tablename__ = "template_changes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    generation: Mapped[int] = mapped_column(Integer, index=True)
    template_id: Mapped[int] = mapped_column(Integer)
    added: Mapped[bool] = mapped_column(Boolean)


class ApiKey(Base):
    """An HTTP API key: only the SHA-256 of its secret is stored; scoped by action and gallery, expiring."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # public key id, the token's prefix
    name: Mapped[str] = mapped_column(String(128))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(String(128))  # comma-separated: recognize, enroll, admin
    galleries: Mapped[str] = mapped_column(String(512))  # comma-separated gallery names, or "*"
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    rotated_to: Mapped[str | None] = mapped_column(String(32), nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive wrong secrets
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
