"""The public verbs: enroll, verify, identify, remove, people, rebuild_index.

    from facerec import FaceRec
    fr = FaceRec(db="sqlite:///office.db")
    fr.enroll("Ada Lovelace", ["ada.jpg"])
    fr.verify("Ada Lovelace", "door.jpg").match       # True / False
    [f.name for f in fr.identify("group.jpg").faces]  # "Ada Lovelace" or "unknown"

Plain arguments in, plain dataclasses out, `FacerecError` subclasses (with exit codes) on bad input.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from facerec.config import Settings
from facerec.decisions.scorers import Scorer, get_scorer
from facerec.decisions.calibration import Calibration, calibrate_scores, fpir_threshold, write_report
from facerec.decisions.thresholds import IDENTIFICATION, VERIFICATION, DecisionThreshold, resolve_threshold
from facerec.errors import (
    DuplicateIdentityError,
    FacerecError,
    InputPathError,
    QualityError,
    UnknownPersonError,
)
from facerec.face.pipeline import Face, FacePipeline
from facerec.index.faiss_index import IndexMeta, SearchIndex, open_index, rebuild_index
from facerec.io.images import check_file, image_files, load_image, sha256_file
from facerec.models.liveness import get_liveness_model
from facerec.models.base import EmbeddingModel
from facerec.models.registry import get_model, model_card
from facerec.names import validate_name
from facerec.store import NewTemplate, PersonSummary, Store

log = logging.getLogger("facerec")

UNKNOWN = "unknown"


@dataclass
class EnrollResult:
    name: str
    added: int
    skipped: int
    faces: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class VerifyResult:
    name: str
    match: bool
    score: float
    threshold: float
    threshold_source: str
    face: dict
    liveness: dict | None = None  # with --liveness: score, threshold, is_live, reason ("spoof")
    reason: str = ""  # why match is False: "below_threshold" or "spoof"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Candidate:
    name: str
    score: float


@dataclass
class IdentifiedFace:
    name: str  # the best match at or above the threshold, else "unknown"
    score: float  # best candidate's similarity (-1 when the gallery is empty)
    candidates: list[Candidate]
    face: dict


@dataclass
class IdentifyResult:
    image: str
    threshold: float
    threshold_source: str
    faces: list[IdentifiedFace]

    def to_dict(self) -> dict:
        return asdict(self)


class FaceRec:
    """One enrollment database + one model + its search index. Cheap to create; loads lazily."""

    def __init__(self, settings: Settings | None = None, **overrides) -> None:
        self.settings = settings or Settings.resolve(**overrides)
        self.card = model_card(self.settings.model_id)  # validates the id without importing torch
        self._store: Store | None = None
        self._index: SearchIndex | None = None
        self._index_generation = -1
        self._pipeline: FacePipeline | None = None
        self._scorer: Scorer | None = None

    # --- lazily opened parts -----------------------------------------------------------------------
    @property
    def model(self) -> EmbeddingModel:
        return get_model(self.card.id)

    @property
    def store(self) -> Store:
        if self._store is None:
            store = Store.open(self.settings.db_url)
            store.bind_model(self.card.id)
            self._store = store
        return self._store

    @property
    def pipeline(self) -> FacePipeline:
        if self._pipeline is None:
            self._pipeline = FacePipeline(
                self.model, min_score=self.settings.min_face_score, min_size=self.settings.min_face_size
            )
        return self._pipeline

    @property
    def index(self) -> SearchIndex:
        if self._index is None:
            self._index, self._index_generation = open_index(
                self.settings.index_path, self.store, self.card.id, self.card.embedding_dim,
                self.settings.index_kind,
            )
        return self._index

    @property
    def scorer(self) -> Scorer:
        """How two templates are compared (cosine, or the learned verifier / chi-square of this model)."""
        if self._scorer is None:
            self._scorer = get_scorer(self.settings.scorer, self.card.id)
        return self._scorer

    def operating_point(self, kind: str = VERIFICATION) -> DecisionThreshold:
        """The threshold in force: the stored calibration of this model and scorer, else its default."""
        return resolve_threshold(self.store, self.card, kind, scorer=self.scorer.name)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def __enter__(self) -> "FaceRec":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- enroll --------------------------------------------------------------------------------------
    def enroll(
        self,
        name: str,
        images: Sequence[str | os.PathLike],
        force: bool = False,
        allow_duplicate: bool = False,
        largest: bool = False,
    ) -> EnrollResult:
        """Enroll one person from one or more photos; every photo is checked before anything is written.

        Photos already enrolled for this person (same SHA-256) are skipped, so re-running is harmless.
        """
        name = validate_name(name)
        if not images:
            raise InputPathError("no image given")
        paths = [check_file(p) for p in images]
        batch = _EnrollBatch(name, self.store.known_sources(name, self.card.id))
        for path in paths:
            self._prepare(batch, path, force, allow_duplicate, largest)
        return self._commit(batch, paths)

    def enroll_from_dir(
        self,
        root: str | os.PathLike,
        force: bool = False,
        allow_duplicate: bool = False,
        on_person: Callable[[EnrollResult], None] | None = None,
    ) -> list[EnrollResult]:
        """Enroll every sub-folder of `root` as one person (the folder name is the person's name).

        Each person is one transaction. A bad photo is reported and skipped; the person's other photos
        still count. Unchanged photos are skipped by hash, so re-running after an interruption resumes.
        """
        results = []
        for folder in person_folders(root):
            try:
                name = validate_name(folder.name)
                paths = image_files(folder)
                batch = _EnrollBatch(name, self.store.known_sources(name, self.card.id))
                for path in paths:
                    try:
                        self._prepare(batch, path, force, allow_duplicate, largest=False)
                    except FacerecError as exc:
                        batch.errors.append(str(exc))
                result = self._commit(batch, paths)
            except FacerecError as exc:
                result = EnrollResult(name=folder.name, added=0, skipped=0, errors=[str(exc)])
            results.append(result)
            if on_person is not None:
                on_person(result)
        return results

    def _prepare(self, batch: "_EnrollBatch", path: Path, force: bool, allow_duplicate: bool,
                 largest: bool) -> None:
        """Detect, quality-check and duplicate-check one photo; add its template to the batch."""
        digest = sha256_file(path)
        if digest in batch.known or digest in batch.seen:
            batch.skipped += 1
            return
        face = self.pipeline.single_face(path, largest=largest)
        if not face.quality.passed and not force:
            raise QualityError(
                f"{path}: refused for enrollment: {'; '.join(face.quality.problems)} (--force overrides)"
            )
        if not allow_duplicate:
            self._refuse_duplicate(batch.name, path, face)
        batch.seen.add(digest)
        batch.templates.append(NewTemplate(
            embedding=face.embedding, model_id=self.card.id, model_version=self.card.version,
            source_sha256=digest, source_name=str(path), detection_score=face.detection.score,
            quality=face.quality.to_dict(), forced=not face.quality.passed,
        ))
        batch.faces.append({"image": str(path), **face.to_dict()})

    def _commit(self, batch: "_EnrollBatch", paths: Sequence[Path]) -> EnrollResult:
        _ = self.index  # loaded before the write, so the write can be applied to it incrementally
        new_ids, generation = self.store.add_templates(batch.name, batch.templates) if batch.templates else ([], 0)
        added = len(new_ids)
        if added:
            rows = self.store.templates(self.card.id, ids=new_ids)
            self._apply_to_index(generation, add=(rows.ids, rows.embeddings))
        skipped = batch.skipped + len(batch.templates) - added
        self.store.audit(
            "enroll", "enrolled" if added else ("failed" if batch.errors else "unchanged"),
            person_name=batch.name, model_id=self.card.id,
            details={"added": added, "skipped": skipped, "errors": batch.errors,
                     "images": [str(p) for p in paths]},
        )
        return EnrollResult(batch.name, added, skipped, batch.faces, batch.errors)

    def _refuse_duplicate(self, name: str, path: Path, face: Face) -> None:
        threshold = self.operating_point().threshold
        for candidate in self._candidates(face.embedding, top_k=3):
            if candidate.name != name and candidate.score >= threshold:
                raise DuplicateIdentityError(
                    f"{path}: this face already matches enrolled person {candidate.name!r} "
                    f"(score {candidate.score:.3f} >= threshold {threshold:.3f}); "
                    f"pass --allow-duplicate if they really are different people"
                )

    # --- verify / identify ------------------------------------------------------------------------
    def verify(self, name: str, image: str | os.PathLike, largest: bool = False,
               liveness: bool = False) -> VerifyResult:
        """1:1: is the one face in `image` the enrolled person `name`? With `liveness`, a face the
        presentation-attack detector calls a spoof is refused (reason "spoof") whatever its score."""
        name = validate_name(name)
        gallery = self.store.templates(self.card.id, name=name)
        if len(gallery.ids) == 0:
            raise UnknownPersonError(f"unknown person {name!r} (see `facerec list`)")
        rgb = load_image(image)
        face = self.pipeline.single_face(rgb, largest=largest, label=str(image))
        score = float(np.max(self.scorer.score(gallery.embeddings, face.embedding[None])))
        point = self.operating_point()
        live = get_liveness_model().decide(rgb, face.detection) if liveness else None
        match = score >= point.threshold and (live is None or live.is_live)
        reason = "" if match else ("spoof" if live is not None and not live.is_live else "below_threshold")
        self.store.audit("verify", "match" if match else reason, person_name=name, score=score,
                         threshold=point.threshold, model_id=self.card.id,
                         details={"image": str(image), "liveness": live.to_dict() if live else None})
        return VerifyResult(name, match, score, point.threshold, point.source, face.to_dict(),
                            live.to_dict() if live else None, reason)

    def identify(self, image: str | os.PathLike, top_k: int = 1) -> IdentifyResult:
        """1:K open-set: every face in `image` with its best enrolled match, or "unknown" below threshold."""
        point = self.operating_point(IDENTIFICATION)
        identified = [self._identify_face(face, top_k, point) for face in self.pipeline.faces(image)]
        self.store.audit(
            "identify", "faces" if identified else "no_face", score=max((f.score for f in identified), default=None),
            threshold=point.threshold, model_id=self.card.id,
            details={"image": str(image), "names": [f.name for f in identified]},
        )
        return IdentifyResult(str(image), point.threshold, point.source, identified)

    def identify_faces(self, faces: Iterable[Face], top_k: int = 1) -> list[IdentifiedFace]:
        """Identify already-detected faces (for the kiosk and batch runners, which detect themselves)."""
        point = self.operating_point(IDENTIFICATION)
        return [self._identify_face(face, top_k, point) for face in faces]

    def _identify_face(self, face: Face, top_k: int, point: DecisionThreshold) -> IdentifiedFace:
        candidates = self._candidates(face.embedding, top_k)
        best = candidates[0] if candidates else Candidate(UNKNOWN, -1.0)
        name = best.name if best.score >= point.threshold else UNKNOWN
        return IdentifiedFace(name, best.score, candidates, face.to_dict())

    def _candidates(self, embedding: np.ndarray, top_k: int) -> list[Candidate]:
        """Best `top_k` people for one embedding: a person scores their best template.

        The index gives a cosine shortlist (extra neighbours, so that people with many templates do not
        crowd out others); other scorers re-score the shortlist, so someone outside it cannot be found.
        """
        index = self.index
        if index.ntotal == 0:
            return []
        scores, ids = index.search(embedding[None], max(top_k * 8, 16))
        valid = ids[0] >= 0
        owners = self.store.templates(self.card.id, ids=ids[0][valid].tolist())
        owner_of = dict(zip(owners.ids.tolist(), owners.person_names))
        if self.scorer.name == "cosine":
            scored = zip(ids[0][valid].tolist(), scores[0][valid].tolist())
        else:
            scored = zip(owners.ids.tolist(), self.scorer.score(owners.embeddings, embedding[None]).tolist())
        best: dict[str, float] = {}
        for template_id, score in scored:
            person = owner_of.get(template_id)
            if person is not None and score > best.get(person, -np.inf):
                best[person] = float(score)
        ranked = sorted(best.items(), key=lambda kv: kv[1], reverse=True)[: max(1, top_k)]
        return [Candidate(n, s) for n, s in ranked]

    # --- calibration -------------------------------------------------------------------------------
    def calibrate(
        self,
        pairs_file: str | os.PathLike | None = None,
        root: str | os.PathLike | None = None,
        from_dir: str | os.PathLike | None = None,
        far: float | None = 1e-3,
        impostors: str = "all",
        max_impostors: int = 5_000_000,
        report_dir: str | os.PathLike | None = None,
        progress: Callable[[int], None] | None = None,
        on_total: Callable[[int], None] | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> tuple[Calibration, list[Path]]:
        """Measure genuine/impostor scores of this model and pipeline, store the calibration, put it in force.

        Genuine pairs: the matched pairs of `pairs_file`, or every same-folder pair of `from_dir`.
        Impostor pairs: every cross-identity pair of the images involved (`impostors="all"`, sampled down to
        `max_impostors`), or only the file's mismatched pairs (`"listed"`). `far=None` selects the EER point.
        """
        from facerec.evaluation.calibration_data import pair_scores_for_calibration

        genuine, impostor, description = pair_scores_for_calibration(
            self.pipeline, pairs_file=pairs_file, root=root, from_dir=from_dir, impostors=impostors,
            max_impostors=max_impostors, progress=progress, on_total=on_total, scorer=self.scorer,
            cache_dir=Path(cache_dir) if cache_dir else None,
        )
        calibration = calibrate_scores(genuine, impostor, self.card.id, description, far=far,
                                       scorer=self.scorer.name)
        report = calibration.to_dict() | {"target_far": far}
        record_id = self.store.save_calibration(
            self.card.id, VERIFICATION, calibration.scorer, description, calibration.n_genuine,
            calibration.n_impostor, calibration.eer, calibration.threshold, calibration.operating, report,
        )
        self.store.audit("calibrate", calibration.operating, threshold=calibration.threshold, model_id=self.card.id,
                         details={"calibration_id": record_id, "data": description})
        written = write_report(calibration, genuine, impostor, Path(report_dir)) if report_dir else []
        return calibration, written

    def calibrate_identification(self, unknowns: str | os.PathLike, fpir: float = 0.01) -> dict:
        """Open-set threshold for this gallery: photos of people who are NOT enrolled are searched, and the
        threshold is set so that at most `fpir` of them would be identified as someone."""
        from facerec.evaluation.pairs import embed_images

        paths = image_files(unknowns, recursive=True) if Path(unknowns).is_dir() else []
        if not paths:
            raise InputPathError(f"{unknowns}: no images of unknown people found")
        embedded = embed_images(self.pipeline, paths)
        best = np.array([c[0].score if (c := self._candidates(e, 1)) else -1.0 for e in embedded.embeddings.values()])
        if best.size == 0:
            raise InputPathError(f"{unknowns}: no face found in any image")
        threshold, measured = fpir_threshold(best, fpir)
        gallery = len(self.people())
        description = f"{len(best)} unknown probes from {unknowns} against a gallery of {gallery} people"
        report = {"target_fpir": fpir, "measured_fpir": measured, "gallery_size": gallery, "probes": int(best.size)}
        record_id = self.store.save_calibration(self.card.id, IDENTIFICATION, self.scorer.name, description, 0,
                                                int(best.size), None, threshold, f"fpir={fpir:g}", report)
        return {"id": record_id, "threshold": threshold, **report, "data": description}

    # --- gallery management ---------------------------------------------------------------------
    def remove(self, name: str) -> int:
        """Delete a person's templates from database and index; the audit trail stays."""
        name = validate_name(name)
        _ = self.index
        removed, generation = self.store.remove_person(name)
        self._apply_to_index(generation, remove=np.asarray(removed, dtype=np.int64))
        self.store.audit("remove", "removed", person_name=name, model_id=self.card.id,
                         details={"templates": len(removed)})
        return len(removed)

    def people(self) -> list[PersonSummary]:
        return self.store.list_people(self.card.id)

    def rebuild_index(self) -> int:
        self._index, self._index_generation = rebuild_index(
            self.settings.index_path, self.store, self.card.id, self.card.embedding_dim,
            self.settings.index_kind,
        )
        return self._index.ntotal

    def _apply_to_index(self, generation: int, add: tuple[np.ndarray, np.ndarray] | None = None,
                        remove: np.ndarray | None = None) -> None:
        """Apply our own write to the loaded index and save it; rebuild if anyone else wrote meanwhile.

        A crash between the database commit and this save leaves an index of an older generation,
        which the next open detects and rebuilds: the database stays the truth.
        """
        index = self._index
        if index is None or generation != self._index_generation + 1:
            self.rebuild_index()
            return
        if add is not None:
            index.add(*add)
        if remove is not None and len(remove) and not index.remove(remove):
            self.rebuild_index()
            return
        index.save(self.settings.index_path, IndexMeta(
            self.card.id, self.card.embedding_dim, self.settings.index_kind, generation, index.ntotal, index.kind,
        ))
        self._index_generation = generation


def evaluation_pipeline(model: str | None = None, flip_fusion: bool | None = None) -> FacePipeline:
    """A pipeline with the configured detector settings, for evaluation runs (no database needed)."""
    settings = Settings.resolve(model=model)
    return FacePipeline(get_model(settings.model_id), min_score=settings.min_face_score,
                        min_size=settings.min_face_size, flip_fusion=flip_fusion)


@dataclass
class _EnrollBatch:
    name: str
    known: set[str]
    seen: set[str] = field(default_factory=set)
    templates: list[NewTemplate] = field(default_factory=list)
    faces: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: int = 0


def person_folders(root: str | os.PathLike) -> list[Path]:
    root = Path(root)
    if not root.exists():
        raise InputPathError(f"{root}: no such directory")
    if not root.is_dir():
        raise InputPathError(f"{root}: not a directory (expected one sub-folder per person)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputPathError(f"{root}: no person sub-folders (expected {root}/NAME/photo.jpg)")
    return folders

