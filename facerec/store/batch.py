"""Repository of batch jobs: files, faces (with embeddings) and the user's decisions about them.

Every chunk of scanned photos is one transaction, so a run killed at any point leaves whole photos (a file
row with all of its faces) or nothing of them; the next run skips what is there. No torch here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import delete, func, insert, select, update

from facerec.errors import FacerecError
from facerec.store.repository import Store
from facerec.store.schema import BatchConstraint, BatchFace, BatchFaceEmbedding, BatchFile, BatchJob, utcnow

MUST, CANNOT, NOT = "must", "cannot", "not"


class UnknownJobError(FacerecError):
    code = "unknown_job"


@dataclass(frozen=True)
class ScannedFace:
    box: list[float]
    detection_score: float
    quality: dict
    quality_passed: bool
    embedding: np.ndarray
    match: str | None
    score: float
    margin: float
    candidates: list[dict]


@dataclass(frozen=True)
class ScannedFile:
    path: str
    size: int
    mtime_ns: int
    sha256: str
    width: int = 0
    height: int = 0
    error: str | None = None
    faces: list[ScannedFace] = field(default_factory=list)


@dataclass(frozen=True)
class KnownFile:
    id: int
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True)
class FaceRows:
    """A job's faces as arrays (one row each), for clustering, export and reports."""

    ids: np.ndarray
    file_ids: np.ndarray
    face_index: np.ndarray
    paths: list[str]
    sha256: list[str]
    embeddings: np.ndarray
    match: list[str | None]
    person: list[str | None]
    cluster: np.ndarray  # -1: none
    score: np.ndarray
    margin: np.ndarray
    detection_score: np.ndarray
    quality_passed: np.ndarray
    boxes: list[list[float]]
    candidates: list[list[dict]]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class PhotoToReembed:
    """A photo with faces that have nothing staged yet for the new model: where they are, as scanned."""

    file_id: int
    path: str
    sha256: str
    faces: list[tuple[int, list[float]]]  # (face id, box in the original photo's pixels)


@dataclass(frozen=True)
class ReembedStatus:
    model_id: str  # the model being staged
    job_model_id: str  # the model of the job's embeddings in force
    faces: int
    staged: int  # faces with an embedding by `model_id`
    missing: list[tuple[int, str]]  # (face id, why it could not be re-embedded)

    @property
    def complete(self) -> bool:
        return self.staged == self.faces


@dataclass(frozen=True)
class Constraints:
    must: list[tuple[int, int]]
    cannot: list[tuple[int, int]]
    rejected: list[tuple[int, str]]  # (face id, name): "not this person"


class BatchStore:
    """Batch tables over an open `Store` (same engine, same transactions rules)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # --- jobs -------------------------------------------------------------------------------------
    def open_job(self, name: str, model_id: str, roots: Sequence[str] = ()) -> int:
        """The id of job `name`, created on first use; a job belongs to one model."""
        with self.store.session() as s:
            job = s.scalar(select(BatchJob).where(BatchJob.name == name))
            if job is None:
                job = BatchJob(name=name, model_id=model_id, roots=sorted(set(roots)), stats={})
                s.add(job)
                s.flush()
            elif job.model_id != model_id:
                raise FacerecError(f"job {name!r} was scanned with model {job.model_id!r}, not {model_id!r}")
            elif roots:
                job.roots = sorted(set(job.roots) | set(roots))
            return job.id

    def job_id(self, name: str) -> int:
        with self.store.session() as s:
            job_id = s.scalar(select(BatchJob.id).where(BatchJob.name == name))
        if job_id is None:
            raise UnknownJobError(f"no batch job named {name!r} (see `facerec batch jobs`)")
        return job_id

    def jobs(self) -> list[dict]:
        with self.store.session() as s:
            files = (select(BatchFile.job_id, func.count().label("n")).group_by(BatchFile.job_id)).subquery()
            faces = (select(BatchFace.job_id, func.count().label("n")).group_by(BatchFace.job_id)).subquery()
            rows = s.execute(
                select(BatchJob.name, BatchJob.model_id, BatchJob.updated_at, files.c.n, faces.c.n, BatchJob.stats)
                .outerjoin(files, files.c.job_id == BatchJob.id).outerjoin(faces, faces.c.job_id == BatchJob.id)
                .order_by(BatchJob.name)).all()
        return [{"name": n, "model": m, "updated_at": u.isoformat(timespec="seconds"), "files": int(f or 0),
                 "faces": int(c or 0), "last_scan": st} for n, m, u, f, c, st in rows]

    def save_stats(self, job_id: int, stats: dict) -> None:
        with self.store.session() as s:
            job = s.get(BatchJob, job_id)
            job.stats = stats
            job.updated_at = utcnow()

    # --- files ------------------------------------------------------------------------------------
    def known_files(self, job_id: int) -> dict[str, KnownFile]:
        """Path -> what the last scan saw, for the skip rule (path + size + mtime, then SHA-256)."""
        with self.store.session() as s:
            rows = s.execute(select(BatchFile.path, BatchFile.id, BatchFile.size, BatchFile.mtime_ns,
                                    BatchFile.sha256).where(BatchFile.job_id == job_id)).all()
        return {p: KnownFile(i, size, mtime, sha) for p, i, size, mtime, sha in rows}

    def touch_files(self, updates: Iterable[tuple[int, int]]) -> None:
        """New mtimes of files whose content (SHA-256) did not change: skipped cheaply next time."""
        with self.store.session() as s:
            for file_id, mtime_ns in updates:
                s.execute(update(BatchFile).where(BatchFile.id == file_id).values(mtime_ns=mtime_ns))

    def write_chunk(self, job_id: int, model_id: str, files: Sequence[ScannedFile]) -> int:
        """Store scanned files with all their faces in one transaction (a changed file replaces its old row).
        Returns the number of faces written."""
        with self.store.session() as s:
            paths = [f.path for f in files]
            old = s.scalars(select(BatchFile.id).where(BatchFile.job_id == job_id, BatchFile.path.in_(paths))).all()
            if old:
                s.execute(delete(BatchFace).where(BatchFace.file_id.in_(old)))
                s.execute(delete(BatchFile).where(BatchFile.id.in_(old)))
            if not files:
                return 0
            # bulk inserts (no ORM unit of work): the file rows' ids come back in parameter order
            ids = s.scalars(insert(BatchFile).returning(BatchFile.id, sort_by_parameter_order=True), [
                {"job_id": job_id, "path": f.path, "size": f.size, "mtime_ns": f.mtime_ns, "sha256": f.sha256,
                 "width": f.width, "height": f.height, "error": f.error[:1024] if f.error else None,
                 "scanned_at": utcnow()} for f in files]).all()
            faces = [{
                "job_id": job_id, "file_id": file_id, "face_index": k, "box": face.box,
                "detection_score": face.detection_score, "quality": face.quality,
                "quality_passed": face.quality_passed, "model_id": model_id,
                "embedding": np.asarray(face.embedding, dtype="<f4").tobytes(), "match": face.match,
                "score": face.score, "margin": face.margin, "candidates": face.candidates,
            } for file_id, f in zip(ids, files) for k, face in enumerate(f.faces)]
            if faces:
                s.execute(insert(BatchFace), faces)
        return len(faces)

    def file_errors(self, job_id: int) -> list[tuple[str, str]]:
        with self.store.session() as s:
            return [tuple(r) for r in s.execute(select(BatchFile.path, BatchFile.error).where(
                BatchFile.job_id == job_id, BatchFile.error.is_not(None)).order_by(BatchFile.path)).all()]

    # --- faces ------------------------------------------------------------------------------------
    def faces(self, job_id: int, ids: Sequence[int] | None = None) -> FaceRows:
        """Faces of a job in face-id order (or only `ids`)."""
        with self.store.session() as s:
            query = (select(BatchFace.id, BatchFace.file_id, BatchFace.face_index, BatchFile.path, BatchFile.sha256,
                            BatchFace.embedding, BatchFace.match, BatchFace.person, BatchFace.cluster,
                            BatchFace.score, BatchFace.margin, BatchFace.detection_score, BatchFace.quality_passed,
                            BatchFace.box, BatchFace.candidates)
                     .join(BatchFile, BatchFile.id == BatchFace.file_id)
                     .where(BatchFace.job_id == job_id).order_by(BatchFace.id))
            if ids is not None:
                query = query.where(BatchFace.id.in_([int(i) for i in ids]))
            rows = s.execute(query).all()
        col = list(zip(*rows)) if rows else [[] for _ in range(15)]
        return FaceRows(
            ids=np.array(col[0], dtype=np.int64), file_ids=np.array(col[1], dtype=np.int64),
            face_index=np.array(col[2], dtype=np.int64), paths=list(col[3]), sha256=list(col[4]),
            embeddings=np.stack([np.frombuffer(e, dtype="<f4") for e in col[5]]).astype(np.float32)
            if rows else np.zeros((0, 0), dtype=np.float32),
            match=list(col[6]), person=list(col[7]),
            cluster=np.array([-1 if c is None else c for c in col[8]], dtype=np.int64),
            score=np.array(col[9], dtype=np.float64), margin=np.array(col[10], dtype=np.float64),
            detection_score=np.array(col[11], dtype=np.float64), quality_passed=np.array(col[12], dtype=bool),
            boxes=list(col[13]), candidates=list(col[14]),
        )

    def set_clusters(self, job_id: int, clusters: dict[int, int | None]) -> None:
        """Face id -> cluster for the whole job, in one transaction (faces not given lose their cluster)."""
        with self.store.session() as s:
            s.execute(update(BatchFace).where(BatchFace.job_id == job_id).values(cluster=None))
            by_cluster: dict[int, list[int]] = {}
            for face_id, cluster in clusters.items():
                if cluster is not None:
                    by_cluster.setdefault(int(cluster), []).append(int(face_id))
            for cluster, ids in by_cluster.items():
                s.execute(update(BatchFace).where(BatchFace.id.in_(ids)).values(cluster=cluster))

    def cluster_faces(self, job_id: int, cluster: int) -> list[int]:
        with self.store.session() as s:
            return list(s.scalars(select(BatchFace.id).where(BatchFace.job_id == job_id, BatchFace.cluster == cluster)
                                  .order_by(BatchFace.id)))

    # --- user decisions -------------------------------------------------------------------------
    def name_faces(self, job_id: int, face_ids: Sequence[int], name: str | None) -> None:
        """Label faces with a person (or clear the label); labels stay with the face ids."""
        with self.store.session() as s:
            s.execute(update(BatchFace).where(BatchFace.job_id == job_id, BatchFace.id.in_(list(face_ids)))
                      .values(person=name))

    def erase_person(self, name: str) -> int:
        """Delete every batch face labelled with, or identified as, `name` (they hold the face's embedding)."""
        with self.store.session(write=True) as s:
            result = s.execute(delete(BatchFace).where((BatchFace.person == name) | (BatchFace.match == name)))
            return int(result.rowcount or 0)

    def add_constraints(self, job_id: int, kind: str, pairs: Iterable[tuple[int, int | None]],
                        name: str | None = None) -> None:
        with self.store.session() as s:
            s.add_all([BatchConstraint(job_id=job_id, kind=kind, face_a=int(a), face_b=None if b is None else int(b),
                                       name=name) for a, b in pairs])

    def constraints(self, job_id: int) -> Constraints:
        with self.store.session() as s:
            rows = s.execute(select(BatchConstraint.kind, BatchConstraint.face_a, BatchConstraint.face_b,
                                    BatchConstraint.name).where(BatchConstraint.job_id == job_id)
                             .order_by(BatchConstraint.id)).all()
        return Constraints(must=[(a, b) for k, a, b, _ in rows if k == MUST],
                           cannot=[(a, b) for k, a, b, _ in rows if k == CANNOT],
                           rejected=[(a, n) for k, a, _, n in rows if k == NOT])

    def set_cluster(self, job_id: int, face_ids: Sequence[int], cluster: int) -> None:
        """Put faces into one cluster now (a user's merge or split, before the next clustering)."""
        with self.store.session() as s:
            s.execute(update(BatchFace).where(BatchFace.job_id == job_id, BatchFace.id.in_([int(f) for f in face_ids]))
                      .values(cluster=int(cluster)))

    def photo_sizes(self, job_id: int) -> dict[int, tuple[int, int]]:
        """File id -> (width, height) of the original photo, as scanned."""
        with self.store.session() as s:
            return {i: (w, h) for i, w, h in s.execute(select(BatchFile.id, BatchFile.width, BatchFile.height)
                                                      .where(BatchFile.job_id == job_id))}

    # --- re-embedding after a model change --------------------------------------------------------
    def job_model(self, job_id: int) -> str:
        with self.store.session() as s:
            return s.get(BatchJob, job_id).model_id

    def photos_to_reembed(self, job_id: int, model_id: str) -> list[PhotoToReembed]:
        """The job's photos (path order) holding faces with nothing staged for `model_id`: what a resumed
        re-embedding still has to do."""
        with self.store.session() as s:
            staged = select(BatchFaceEmbedding.face_id).where(BatchFaceEmbedding.job_id == job_id,
                                                              BatchFaceEmbedding.model_id == model_id)
            rows = s.execute(select(BatchFile.id, BatchFile.path, BatchFile.sha256, BatchFace.id, BatchFace.box)
                             .join(BatchFace, BatchFace.file_id == BatchFile.id)
                             .where(BatchFace.job_id == job_id, BatchFace.id.not_in(staged))
                             .order_by(BatchFile.path, BatchFace.face_index)).all()
        photos: dict[int, PhotoToReembed] = {}
        for file_id, path, sha, face_id, box in rows:
            photos.setdefault(file_id, PhotoToReembed(file_id, path, sha, [])).faces.append((face_id, list(box)))
        return list(photos.values())

    def stage_embeddings(self, job_id: int, model_id: str,
                         rows: Iterable[tuple[int, np.ndarray | None, str | None]]) -> None:
        """Stage (face id, embedding or None, error) for `model_id` in one transaction (a chunk of photos)."""
        with self.store.session() as s:
            s.add_all([BatchFaceEmbedding(
                face_id=int(face_id), model_id=model_id, job_id=job_id, error=error[:1024] if error else None,
                embedding=None if embedding is None else np.asarray(embedding, dtype="<f4").tobytes(),
            ) for face_id, embedding, error in rows])

    def reembed_status(self, job_id: int, model_id: str) -> ReembedStatus:
        with self.store.session() as s:
            job_model = s.get(BatchJob, job_id).model_id
            faces = s.scalar(select(func.count()).select_from(BatchFace).where(BatchFace.job_id == job_id))
            rows = s.execute(select(BatchFaceEmbedding.face_id, BatchFaceEmbedding.embedding.is_not(None),
                                    BatchFaceEmbedding.error)
                             .join(BatchFace, BatchFace.id == BatchFaceEmbedding.face_id)
                             .where(BatchFaceEmbedding.job_id == job_id, BatchFaceEmbedding.model_id == model_id)
                             .order_by(BatchFaceEmbedding.face_id)).all()
        return ReembedStatus(model_id, job_model, int(faces or 0), sum(1 for _, ok, _ in rows if ok),
                             [(int(f), e or "") for f, ok, e in rows if not ok])

    def forget_failed(self, job_id: int, model_id: str) -> None:
        """Drop staged failures, so that the next re-embedding tries those faces again."""
        with self.store.session() as s:
            s.execute(delete(BatchFaceEmbedding).where(BatchFaceEmbedding.job_id == job_id,
                                                       BatchFaceEmbedding.model_id == model_id,
                                                       BatchFaceEmbedding.embedding.is_(None)))

    def switch_model(self, job_id: int, model_id: str) -> int:
        """Put the staged embeddings of `model_id` in force for the whole job in one transaction (every face
        keeps its id, and so its name, cluster and the user's links), or nothing when one face lacks one.
        Returns the number of faces switched."""
        with self.store.session(write=True) as s:
            job = s.get(BatchJob, job_id)
            staged = dict(s.execute(select(BatchFaceEmbedding.face_id, BatchFaceEmbedding.embedding)
                                    .where(BatchFaceEmbedding.job_id == job_id, BatchFaceEmbedding.model_id == model_id,
                                           BatchFaceEmbedding.embedding.is_not(None))).all())
            ids = s.scalars(select(BatchFace.id).where(BatchFace.job_id == job_id)).all()
            lacking = [i for i in ids if i not in staged]
            if lacking:
                raise FacerecError(f"{len(lacking)} face(s) of the job have no {model_id} embedding yet "
                                   f"(first: {lacking[0]}): the job stays on {job.model_id}")
            for face_id in ids:
                s.execute(update(BatchFace).where(BatchFace.id == face_id)
                          .values(embedding=staged[face_id], model_id=model_id))
            s.execute(delete(BatchFaceEmbedding).where(BatchFaceEmbedding.job_id == job_id))
            job.model_id = model_id
            job.updated_at = utcnow()
        return len(ids)
