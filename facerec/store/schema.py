"""SQLAlchemy 2 models. Changes here need an Alembic migration in `migrations/versions/`."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
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


# --- batch identification over photo collections (facerec.batch, facerec/store/batch.py) ---------------
class BatchJob(Base):
    """One named scan of photo folders: its files, faces and the user's decisions about them."""

    __tablename__ = "batch_jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), unique=True, nullable=False)
    model_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    roots: Mapped[list] = mapped_column(JSON, default=list)
    stats: Mapped[dict] = mapped_column(JSON, default=dict)  # the last scan's counts


class BatchFile(Base):
    """A photo of a job as it was read: path, size, mtime and content hash (what a re-run compares)."""

    __tablename__ = "batch_files"
    __table_args__ = (UniqueConstraint("job_id", "path", name="uq_batch_file_path"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("batch_jobs.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(String(4096))
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    width: Mapped[int] = mapped_column(Integer, default=0)
    height: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(1024), nullable=True)  # why it could not be read
    scanned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BatchFace(Base):
    """One face of a photo: where, how good, the gallery's answer, its embedding, cluster and labels.

    `person` is a name the user gave this face (a label carried by the face id, not by its vector, so it
    survives re-clustering and re-embedding); `cluster` is the automatic clustering's answer.
    """

    __tablename__ = "batch_faces"
    __table_args__ = (UniqueConstraint("file_id", "face_index", name="uq_batch_face"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("batch_jobs.id", ondelete="CASCADE"), index=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("batch_files.id", ondelete="CASCADE"), index=True)
    face_index: Mapped[int] = mapped_column(Integer)
    box: Mapped[list] = mapped_column(JSON)
    detection_score: Mapped[float] = mapped_column(Float)
    quality: Mapped[dict] = mapped_column(JSON)
    quality_passed: Mapped[bool] = mapped_column(Boolean)
    model_id: Mapped[str] = mapped_column(String(64))
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian, L2-normalised
    match: Mapped[str | None] = mapped_column(String(MAX_NAME_LENGTH), nullable=True)  # None: unknown
    score: Mapped[float] = mapped_column(Float)
    margin: Mapped[float] = mapped_column(Float)
    candidates: Mapped[list] = mapped_column(JSON)
    person: Mapped[str | None] = mapped_column(String(MAX_NAME_LENGTH), nullable=True, index=True)
    cluster: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)


class BatchFaceEmbedding(Base):
    """A face's embedding by another model, staged by `facerec batch reembed` while the job's own embeddings
    (and every answer made from them) stay in force; the switch copies them over in one transaction.
    `error`: the face could not be found again in its photo (embedding None)."""

    __tablename__ = "batch_face_embeddings"
    face_id: Mapped[int] = mapped_column(ForeignKey("batch_faces.id", ondelete="CASCADE"), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("batch_jobs.id", ondelete="CASCADE"), index=True)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    error: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BatchConstraint(Base):
    """A user decision about two faces ("must" / "cannot" be one person) or a face and a name ("not")."""

    __tablename__ = "batch_constraints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("batch_jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # must | cannot | not
    face_a: Mapped[int] = mapped_column(ForeignKey("batch_faces.id", ondelete="CASCADE"))
    face_b: Mapped[int | None] = mapped_column(ForeignKey("batch_faces.id", ondelete="CASCADE"), nullable=True)
    name: Mapped[str | None] = mapped_column(String(MAX_NAME_LENGTH), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
