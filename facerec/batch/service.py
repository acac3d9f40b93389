"""The batch verbs over one engine: scan, cluster, name, merge, split, reject, export, report.

One `FaceRec` with `AuditPolicy.PER_JOB` (a scan of 10^5 photos writes one audit event, not 10^5) and the
batch tables of the same database.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from facerec.api import IDENTIFICATION, VERIFICATION, AuditPolicy, FaceRec, Settings, register_eraser
from facerec.batch import export as exporter
from facerec.batch import report, xmp
from facerec.batch.cluster import DEFAULT_NEIGHBOURS, ClusterInput, cluster
from facerec.batch.thresholds import ClusterThreshold, cluster_threshold
from facerec.batch.pipeline import Progress, ScanOptions, ScanReport, scan
from facerec.batch.scan import DEFAULT_MAX_SIDE, FileEntry, read_photo
from facerec.errors import UsageError
from facerec.store.batch import CANNOT, MUST, NOT, BatchStore, PhotoToReembed


class BatchService:
    def __init__(self, settings: Settings | None = None, engine: FaceRec | None = None) -> None:
        self.fr = engine or FaceRec(settings, audit=AuditPolicy.PER_JOB)
        self._store: BatchStore | None = None

    @property
    def store(self) -> BatchStore:
        if self._store is None:
            self._store = BatchStore(self.fr.store)
        return self._store

    def scan(self, roots: Sequence[str], job: str, options: ScanOptions = ScanOptions(),
             progress: Progress | None = None, engine: str = "local", ray_address: str | None = None) -> ScanReport:
        if engine == "local":
            return scan(self.fr, roots, job, options, progress)
        if engine == "ray":
            from facerec.batch.ray_engine import scan_with_ray

            return scan_with_ray(self.fr, roots, job, options, progress, address=ray_address)
        raise UsageError(f"unknown engine {engine!r} (use local or ray)")

    def jobs(self) -> list[dict]:
        return self.store.jobs()

    def export(self, job: str, path: str | Path, fmt: str | None = None) -> int:
        return exporter.export(self.store.faces(self.store.job_id(job)), path, fmt)

    def report(self, job: str, path: str | Path) -> Path:
        """The job's HTML contact sheet (see facerec.batch.report)."""
        faces = self.store.faces(self.store.job_id(job))
        return report.write(report.ReportInput(
            job, faces, self.fr.operating_point(IDENTIFICATION).threshold,
            self.fr.operating_point(VERIFICATION).threshold,
            cluster_threshold(self.fr.card.id, int((faces.cluster >= 0).sum())).threshold), path)

    def xmp(self, job: str, out_dir: str | Path | None = None) -> list[Path]:
        """MWG face-region sidecars for the job's photos with named faces (see facerec.batch.xmp)."""
        job_id = self.store.job_id(job)
        return xmp.write_sidecars(self.store.faces(job_id), self.store.photo_sizes(job_id), out_dir)

    # --- clustering and the user's decisions ------------------------------------------------------
    def cluster(self, job: str, threshold: float | None = None, neighbours: int = DEFAULT_NEIGHBOURS,
                quality_only: bool = False) -> ClusterSummary:
        """Cluster the job's unknown faces (and the faces the user named) from scratch, keeping every user
        decision: names and links are constraints, so only automatic assignments move."""
        job_id = self.store.job_id(job)
        faces = self.store.faces(job_id)
        chosen = [i for i in range(len(faces))
                  if faces.person[i] is not None
                  or (faces.match[i] is None and (faces.quality_passed[i] or not quality_only))]
        point = cluster_threshold(self.store.job_model(job_id), len(chosen)) if threshold is None \
            else ClusterThreshold(threshold, "--threshold")
        constraints = self.store.constraints(job_id)
        data = ClusterInput(
            ids=faces.ids[chosen], keys=[(faces.sha256[i], int(faces.face_index[i])) for i in chosen],
            embeddings=faces.embeddings[chosen] if chosen else faces.embeddings, photos=faces.file_ids[chosen],
            names=[faces.person[i] for i in chosen], must=constraints.must, cannot=constraints.cannot,
            rejected=constraints.rejected)
        labels = cluster(data, point.threshold, neighbours, point.pair_threshold)
        self.store.set_clusters(job_id, labels)
        sizes = Counter(labels.values())
        return ClusterSummary(job, len(labels), len(sizes), sum(1 for s in sizes.values() if s > 1),
                              point.threshold, point.source, point.pair_threshold)

    def clusters(self, job: str) -> list[ClusterView]:
        """The job's clusters, largest first: id, size, the user's name for it (if any), member face ids."""
        faces = self.store.faces(self.store.job_id(job))
        members: dict[int, list[int]] = {}
        for i, c in enumerate(faces.cluster.tolist()):
            if c >= 0:
                members.setdefault(c, []).append(i)
        views = []
        for c, rows in members.items():
            names = sorted({faces.person[i] for i in rows if faces.person[i]})
            views.append(ClusterView(c, len(rows), names[0] if names else None, [int(faces.ids[i]) for i in rows]))
        return sorted(views, key=lambda v: (-v.size, v.id))

    def name(self, job: str, cluster_id: int, name: str, enroll: bool = True, max_templates: int = 10) -> dict:
        """Name a cluster: its faces get the label (kept by every re-clustering) and, with `enroll`, the best
        of them become the person's templates in the gallery (so the next scans identify them)."""
        job_id = self.store.job_id(job)
        ids = self._cluster(job_id, cluster_id)
        if enroll and self.store.job_model(job_id) != self.fr.card.id:
            raise UsageError(f"job {job!r} holds {self.store.job_model(job_id)} embeddings, the gallery "
                             f"{self.fr.card.id} ones: name with --no-enroll")
        self.store.name_faces(job_id, ids, name)
        result = {"job": job, "cluster": cluster_id, "name": name, "faces": len(ids), "enrolled": 0}
        if enroll:
            faces = self.store.faces(job_id, ids)
            best = sorted(range(len(faces)), key=lambda i: (not faces.quality_passed[i], -faces.detection_score[i],
                                                             int(faces.ids[i])))[:max_templates]
            enrolled = self.fr.enroll_embeddings(
                name, faces.embeddings[best], [faces.sha256[i] for i in best], [faces.paths[i] for i in best],
                [float(faces.detection_score[i]) for i in best],
                [{"passed": bool(faces.quality_passed[i]), "from_batch_job": job} for i in best])
            result["enrolled"] = enrolled.added
        return result

    def merge(self, job: str, clusters: Sequence[int]) -> int:
        """The user says these clusters are one person: all their faces are linked (must) and share a name
        if one of them has one. Returns the merged cluster's id."""
        job_id = self.store.job_id(job)
        groups = [self._cluster(job_id, c) for c in clusters]
        faces = sorted(i for g in groups for i in g)
        named = {n for n in self.store.faces(job_id, faces).person if n}
        if len(named) > 1:
            raise UsageError(f"clusters {', '.join(map(str, clusters))} carry different names: "
                             f"{', '.join(sorted(named))}")
        anchor = faces[0]
        self.store.add_constraints(job_id, MUST, [(anchor, f) for f in faces[1:]])
        if named:
            self.store.name_faces(job_id, faces, named.pop())
        self.store.set_cluster(job_id, faces, anchor)
        return anchor

    def split(self, job: str, cluster_id: int, face_ids: Sequence[int]) -> int:
        """The user says these faces are not the rest of their cluster: they leave it together (cannot-links
        to the rest, must-links among them) and lose its name. Returns their new cluster's id."""
        job_id = self.store.job_id(job)
        members = set(self._cluster(job_id, cluster_id))
        moved = sorted(set(int(f) for f in face_ids))
        if not moved or not set(moved) <= members:
            raise UsageError(f"faces {', '.join(map(str, moved))} are not all in cluster {cluster_id}")
        rest = sorted(members - set(moved))
        if not rest:
            raise UsageError("a split must leave faces in the cluster")
        self.store.add_constraints(job_id, CANNOT, [(a, b) for a in moved for b in rest])
        self.store.add_constraints(job_id, MUST, [(moved[0], f) for f in moved[1:]])
        self._forget_name(job_id, moved)
        self.store.set_cluster(job_id, moved, moved[0])
        self.store.set_cluster(job_id, rest, rest[0])
        return moved[0]

    def reject(self, job: str, face_ids: Sequence[int]) -> None:
        """"Not this person": each face leaves its cluster and never joins one carrying that name again."""
        job_id = self.store.job_id(job)
        faces = [int(f) for f in face_ids]
        self._forget_name(job_id, faces)
        for f in faces:
            self.store.set_cluster(job_id, [f], f)

    def _forget_name(self, job_id: int, face_ids: Sequence[int]) -> None:
        """Remember that these faces are not their cluster's person, and clear their labels."""
        rows = self.store.faces(job_id, face_ids)
        views = {v.id: v.name for v in self._views(job_id)}
        rejected = []
        for i in range(len(rows)):
            name = rows.person[i] or views.get(int(rows.cluster[i]))
            if name:
                rejected.append((int(rows.ids[i]), name))
        for face_id, name in rejected:
            self.store.add_constraints(job_id, NOT, [(face_id, None)], name=name)
        self.store.name_faces(job_id, face_ids, None)

    def _views(self, job_id: int) -> list[ClusterView]:
        faces = self.store.faces(job_id)
        names: dict[int, str] = {}
        for c, n in zip(faces.cluster.tolist(), faces.person):
            if c >= 0 and n:
                names[c] = n
        return [ClusterView(c, 0, n, []) for c, n in names.items()]

    def _cluster(self, job_id: int, cluster_id: int) -> list[int]:
        ids = self.store.cluster_faces(job_id, cluster_id)
        if not ids:
            raise UsageError(f"no cluster {cluster_id} in this job (see `facerec batch clusters JOB`)")
        return ids


    # --- a model change ------------------------------------------------------------------------------
    def reembed(self, job: str, model_id: str, chunk: int = 32, switch: bool = True, retry_failed: bool = False,
                progress: Progress | None = None) -> ReembedReport:
        """Re-embed every face of the job with `model_id`, from its photo and stored box, keeping face ids
        (so names, clusters, must/cannot-links and "not this person" stay with their faces).

        New embeddings are staged one chunk of photos per transaction, so a killed run resumes where it
        stopped; the job's own embeddings stay in force (clustering, exports, reports) until every face has
        one, then one transaction switches the job to `model_id`. A face not found again in its photo (the
        photo changed or went away) blocks the switch and is reported; re-scan the job, then re-run with
        `retry_failed`."""
        job_id = self.store.job_id(job)
        old_model = self.store.job_model(job_id)
        if old_model == model_id:
            raise UsageError(f"job {job!r} is already embedded with {model_id}")
        if retry_failed:
            self.store.forget_failed(job_id, model_id)
        engine = FaceRec(self.fr.settings.with_(model_id=model_id), audit=AuditPolicy.PER_JOB)  # its pipeline only
        photos = self.store.photos_to_reembed(job_id, model_id)
        total, done = sum(len(p.faces) for p in photos), 0
        for start in range(0, len(photos), chunk):
            part = photos[start:start + chunk]
            self.store.stage_embeddings(job_id, model_id, [row for p in part for row in reembed_photo(engine, p)])
            done += sum(len(p.faces) for p in part)
            if progress:
                progress(done, total)
        status = self.store.reembed_status(job_id, model_id)
        switched = self.store.switch_model(job_id, model_id) if switch and status.complete else 0
        result = ReembedReport(job, old_model, model_id, status.faces, status.staged, done, len(status.missing),
                               status.missing[:20], switched > 0)
        self.fr.record("batch_reembed", "switched" if switched else "staged", details=result.to_dict())
        return result


MATCH_IOU = 0.5  # a stored face is the re-detected face overlapping its box at least this much


def reembed_photo(engine: FaceRec, photo: PhotoToReembed) -> list[tuple[int, object, str | None]]:
    """(face id, new embedding or None, error) for each stored face of one photo: the photo is read as a
    scan reads it, its faces detected and embedded by `engine`, each stored box paired with the detection
    it overlaps most (IoU >= MATCH_IOU, each detection used once)."""
    try:
        st = os.stat(photo.path)
    except OSError as exc:
        return [(f, None, f"cannot read its photo ({exc.strerror})") for f, _ in photo.faces]
    read = read_photo(FileEntry(photo.path, st.st_size, st.st_mtime_ns), None, DEFAULT_MAX_SIDE,
                      engine.settings.max_pixels)
    if read.error or read.sha256 != photo.sha256:
        why = read.error or "its photo changed since the scan: re-scan the job"
        return [(f, None, why) for f, _ in photo.faces]
    found = engine.analyse([read.rgb])[0].faces
    boxes = [np.asarray(face.detection.box[:4], dtype=float) / read.scale for face in found]
    pairs = sorted(((iou(np.asarray(box, dtype=float), b), -k, j) for k, (_, box) in enumerate(photo.faces)
                    for j, b in enumerate(boxes)), reverse=True)
    chosen: dict[int, int] = {}
    for overlap, neg_k, j in pairs:
        if overlap >= MATCH_IOU and -neg_k not in chosen and j not in chosen.values():
            chosen[-neg_k] = j
    return [(f, found[chosen[k]].embedding, None) if k in chosen
            else (f, None, "not found again in its photo") for k, (f, _) in enumerate(photo.faces)]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes (x1, y1, x2, y2)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0


@dataclass(frozen=True)
class ReembedReport:
    job: str
    old_model: str
    model: str
    faces: int
    staged: int  # faces with a new embedding, this run and earlier ones
    embedded_now: int  # faces handled by this run
    failed: int
    failures: list[tuple[int, str]]  # the first (face id, why)
    switched: bool  # the job's embeddings in force are now the new model's

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ClusterSummary:
    job: str
    faces: int
    clusters: int
    multi_face_clusters: int
    threshold: float
    threshold_source: str
    pair_threshold: float | None = None  # the bar of two single faces (see facerec.batch.thresholds)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ClusterView:
    id: int
    size: int
    name: str | None
    faces: list[int]

    def to_dict(self) -> dict:
        return asdict(self)


@register_eraser
def erase_batch_results(fr: FaceRec, name: str) -> list[str]:
    """`facerec remove NAME --erase`: batch faces named or identified as the person go too."""
    count = BatchStore(fr.store).erase_person(name)
    return [f"{count} batch face(s) deleted"] if count else []
