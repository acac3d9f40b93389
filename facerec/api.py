"""The public verbs: enroll, verify, identify, remove, people, calibrate; one engine per process.

    from facerec.api import FaceRec
    fr = FaceRec(db="sqlite:///office.db")
    fr.enroll("Ada Lovelace", ["ada.jpg"])
    fr.verify("Ada Lovelace", "door.jpg").match       # True / False
    [f.name for f in fr.identify("group.jpg").faces]  # "Ada Lovelace" or "unknown"

`FaceRec` is thin verbs over parts it is given or builds lazily from its `Settings`: the face pipeline
(detect, align, embed), the gallery (store + index, kept in step with other processes), the liveness model,
the thresholds in force and an audit policy. A kiosk loop, a batch runner and an HTTP server each hold one
engine per process and share it between threads. Results are typed dataclasses with `to_dict()`; bad input
raises a `FacerecError` subclass (exit code and HTTP status attached).
"""

from __future__ import annotations

import copy
import getpass
import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path

import numpy as np

from facerec.config import Settings
from facerec.decisions.calibration import (
    Calibration,
    RateCheck,
    calibrate_scores,
    check_threshold,
    fpir_threshold,
    write_report,
)
from facerec.decisions.scorers import Scorer, get_scorer
from facerec.decisions.thresholds import (
    IDENTIFICATION,
    VERIFICATION,
    DecisionThreshold,
    duplicate_threshold,
    identification_threshold,
    resolve_threshold,
)
from facerec.errors import (
    DuplicateIdentityError,
    EmbeddingsFileError,
    FacerecError,
    InputPathError,
    QualityError,
    UnknownPersonError,
)
from facerec.face.pipeline import Face, FacePipeline, ImageFaces
from facerec.face.quality import QualityReport
from facerec.gallery import Gallery, Match
from facerec.io.images import ImageInput, check_file, check_image, image_files, sha256_file
from facerec.models.base import ModelCard
from facerec.models.liveness import LivenessDecision, LivenessModel, get_liveness_model
from facerec.models.registry import available_models, get_model, model_card
from facerec.names import validate_name
from facerec.store import AuditEntry, NewTemplate, PersonSummary, Store
from facerec.store.crypto import TemplateCipher, read_key_file, write_key_file
from facerec.store.keys import KeyInfo, KeyRing
from facerec.store.people import audit_query, remove_template, rename_person, template_ids_by_source
from facerec.store.repository import redact

log = logging.getLogger("facerec")

UNKNOWN = "unknown"


class AuditPolicy(str, Enum):
    """Which decisions leave an audit event. Changes to the gallery (enroll, remove, calibrate) always do."""

    EVERY_DECISION = "every_decision"  # each verify / identify (a door: every decision is evidence)
    PER_JOB = "per_job"  # only what the caller records with `FaceRec.record` (a batch job's summary)


# --- typed results ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FaceInfo:
    """Where a face is and how good it is (no embedding: results may be printed or sent anywhere)."""

    box: list[float]
    score: float
    landmarks: list[list[float]]
    quality: QualityReport

    @classmethod
    def of(cls, face: Face) -> "FaceInfo":
        d = face.detection.to_dict()
        return cls(d["box"], d["score"], d["landmarks"], face.quality)

    def to_dict(self) -> dict:
        return {"box": self.box, "score": self.score, "landmarks": self.landmarks, "quality": self.quality.to_dict()}


@dataclass(frozen=True)
class EnrolledPhoto:
    image: str
    face: FaceInfo

    def to_dict(self) -> dict:
        return {"image": self.image, **self.face.to_dict()}


@dataclass(frozen=True)
class EnrollResult:
    name: str
    added: int
    skipped: int
    faces: list[EnrolledPhoto] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"name": self.name, "added": self.added, "skipped": self.skipped,
                "faces": [f.to_dict() for f in self.faces], "errors": list(self.errors)}


@dataclass(frozen=True)
class VerifyResult:
    name: str
    match: bool
    score: float
    threshold: float
    threshold_source: str
    face: FaceInfo
    liveness: LivenessDecision | None = None  # when asked: score, threshold, is_live
    reason: str = ""  # why match is False: "below_threshold" or "spoof"

    def to_dict(self) -> dict:
        return {"name": self.name, "match": self.match, "score": self.score, "threshold": self.threshold,
                "threshold_source": self.threshold_source, "face": self.face.to_dict(),
                "liveness": self.liveness.to_dict() if self.liveness else None, "reason": self.reason}


@dataclass(frozen=True)
class Candidate:
    name: str
    score: float


@dataclass(frozen=True)
class IdentifiedFace:
    name: str  # the best match at or above the threshold, else "unknown" (never a forced nearest match)
    score: float  # best candidate's similarity (-1 when the gallery is empty)
    margin: float  # best minus runner-up similarity (minus -1 when nobody else is enrolled)
    candidates: list[Candidate]
    face: FaceInfo
    liveness: LivenessDecision | None = None
    reason: str = ""  # why "unknown": "below_threshold", "empty_gallery" or "spoof"

    @property
    def decision(self) -> str:
        return "unknown" if self.name == UNKNOWN else "match"

    def to_dict(self) -> dict:
        return {"name": self.name, "decision": self.decision, "score": self.score, "margin": self.margin,
                "candidates": [asdict(c) for c in self.candidates], "face": self.face.to_dict(),
                "liveness": self.liveness.to_dict() if self.liveness else None, "reason": self.reason}


@dataclass(frozen=True)
class IdentifyResult:
    image: str
    threshold: float
    threshold_source: str
    faces: list[IdentifiedFace]

    def to_dict(self) -> dict:
        return {"image": self.image, "threshold": self.threshold, "threshold_source": self.threshold_source,
                "faces": [f.to_dict() for f in self.faces]}


@dataclass(frozen=True)
class RemoveResult:
    name: str
    removed_templates: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class IndexStatus:
    index: str
    templates: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CalibrationResult:
    calibration: Calibration
    files: list[Path]

    def to_dict(self) -> dict:
        return self.calibration.to_dict() | {"files": [str(p) for p in self.files]}


@dataclass(frozen=True)
class CalibrationCheck:
    """`FaceRec.check_calibration`: the threshold in force measured on a folder of the user's own photos."""

    folder: str
    threshold: float
    threshold_source: str
    calibration_domain: dict | None  # the data the threshold was measured on (None: a model default, see source)
    data: dict  # the checked folder: people, images, pairs, fingerprint
    far: RateCheck
    frr: RateCheck
    genuine_scores: np.ndarray = field(repr=False)
    impostor_scores: np.ndarray = field(repr=False)

    @property
    def drifted(self) -> bool:
        return self.far.drifted or self.frr.drifted

    def to_dict(self) -> dict:
        return {"folder": self.folder, "drifted": self.drifted, "threshold": self.threshold,
                "threshold_source": self.threshold_source, "calibration_domain": self.calibration_domain,
                "data": self.data, "far": asdict(self.far), "frr": asdict(self.frr)}


@dataclass(frozen=True)
class IdentificationCalibration:
    id: int
    threshold: float
    target_fpir: float
    measured_fpir: float
    gallery_size: int
    probes: int
    data: str

    def to_dict(self) -> dict:
        return asdict(self)


# --- the engine -----------------------------------------------------------------------------------------
class FaceRec:
    """One enrollment database + one model: the engine a process shares between its threads.

    Parts not given are built lazily from `settings` on first use, so creating an engine costs nothing and a
    command that lists people never imports torch.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        pipeline: FacePipeline | None = None,
        gallery: Gallery | None = None,
        liveness: LivenessModel | None = None,
        audit: AuditPolicy = AuditPolicy.EVERY_DECISION,
        actor: dict | None = None,
        **overrides,
    ) -> None:
        self._settings = settings or Settings.resolve(**overrides)
        # a chosen id is validated now (without torch); an unchosen one is resolved at first use
        self._card = model_card(self._settings.model_id) if self._settings.model_id else None
        self.audit_policy = AuditPolicy(audit)
        self.actor = actor or process_actor()
        self._pipeline = pipeline
        self._gallery = gallery
        self._liveness = liveness
        self._scorer: Scorer | None = None

    # --- parts --------------------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        """This engine's settings, its model resolved (`resolve_model`: reads the database's facts once)."""
        if self._settings.model_id is None:
            self._settings = resolve_model(self._settings)
        return self._settings

    @property
    def card(self) -> ModelCard:
        """The embedding model's card: the one this engine decides with."""
        if self._card is None:
            self._card = model_card(self.settings.model_id)
        return self._card

    @property
    def store(self) -> Store:
        return self.gallery.store

    @property
    def gallery(self) -> Gallery:
        if self._gallery is None:
            cipher = TemplateCipher.from_file(self.settings.key_file) if self.settings.key_file else None
            store = Store.open(self.settings.db_url, cipher=cipher)
            store.bind_model(self.card.id)
            # sealed templates: the index (every embedding in the clear) stays in memory, never on disk
            self._gallery = Gallery(store, self.card.id, self.card.embedding_dim, self.settings.index_path,
                                    self.settings.index_kind, persist=cipher is None)
        return self._gallery

    @property
    def pipeline(self) -> FacePipeline:
        if self._pipeline is None:
            s = self.settings
            self._pipeline = FacePipeline(get_model(self.card.id), min_score=s.min_face_score,
                                          min_size=s.min_face_size, max_pixels=s.max_pixels,
                                          torch_threads=s.torch_threads)
        return self._pipeline

    @property
    def liveness(self) -> LivenessModel:
        if self._liveness is None:
            self._liveness = get_liveness_model()
        return self._liveness

    @property
    def scorer(self) -> Scorer:
        """How two templates are compared (cosine, or the learned verifier / chi-square of this model)."""
        if self._scorer is None:
            self._scorer = get_scorer(self.settings.scorer, self.card.id)
        return self._scorer

    def operating_point(self, kind: str = VERIFICATION) -> DecisionThreshold:
        """The threshold in force: the stored calibration of this model and scorer, else its default; for 1:K
        (every identify verb, the kiosk, the batch scan) a default that grows with the gallery's size."""
        if kind == IDENTIFICATION:
            return identification_threshold(self.store, self.card, self.gallery.person_count(), self.scorer.name)
        return resolve_threshold(self.store, self.card, kind, scorer=self.scorer.name)

    def close(self) -> None:
        if self._gallery is not None:
            self._gallery.store.close()

    def __enter__(self) -> "FaceRec":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- faces ----------------------------------------------------------------------------------------
    def analyse(self, images: Sequence[ImageInput]) -> list[ImageFaces]:
        """Decode and detect every image, embedding all their faces in one batch (for batch and kiosk)."""
        return self.pipeline.analyse_many([self.pipeline.load(image) for image in images])

    # --- enroll ---------------------------------------------------------------------------------------
    def enroll(self, name: str, images: Sequence[str | os.PathLike], force: bool = False,
               allow_duplicate: bool = False, choose_subject: bool = False) -> EnrollResult:
        """Enroll one person from one or more photos; every photo is checked before anything is written.

        Photos already enrolled for this person (same SHA-256) are skipped, so re-running is harmless.
        """
        name = validate_name(name)
        if not images:
            raise InputPathError("no image given")
        paths = [check_file(p) for p in images]
        batch = _EnrollBatch(name, self.store.known_sources(name, self.card.id))
        for path in paths:
            self._prepare(batch, path, force, allow_duplicate, choose_subject)
        return self._commit(batch, paths)

    def enroll_from_dir(self, root: str | os.PathLike, force: bool = False, allow_duplicate: bool = False,
                        on_person: Callable[[EnrollResult], None] | None = None) -> list[EnrollResult]:
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
                        self._prepare(batch, path, force, allow_duplicate, choose_subject=False)
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
                 choose_subject: bool) -> None:
        """Detect, quality-check and duplicate-check one photo; add its template to the batch."""
        self._prepare_image(batch, str(path), sha256_file(path), path, force, allow_duplicate, choose_subject)

    def _prepare_image(self, batch: "_EnrollBatch", label: str, digest: str, image: ImageInput, force: bool,
                       allow_duplicate: bool, choose_subject: bool) -> None:
        """`_prepare` for any image input (a file, an upload's bytes), named `label` in errors and the store."""
        check_image(image, self.settings.max_pixels)  # from the header: a bomb is refused before the model loads
        if digest in batch.known or digest in batch.seen:
            batch.skipped += 1
            return
        face = self.pipeline.single_face(image, choose_subject=choose_subject, label=label)
        if not face.quality.passed and not force:
            raise QualityError(
                f"{label}: refused for enrollment: {'; '.join(face.quality.problems)} (--force overrides)"
            )
        if not allow_duplicate:
            self._refuse_duplicate(batch.name, label, face)
        batch.seen.add(digest)
        batch.templates.append(NewTemplate(
            embedding=face.embedding, model_id=self.card.id, model_version=self.card.version,
            source_sha256=digest, source_name=label, detection_score=face.detection.score,
            quality=face.quality.to_dict(), forced=not face.quality.passed,
        ))
        batch.faces.append(EnrolledPhoto(label, FaceInfo.of(face)))

    def _commit(self, batch: "_EnrollBatch", paths: Sequence[Path]) -> EnrollResult:
        outcome = "enrolled" if batch.templates else ("failed" if batch.errors else "unchanged")
        audit = self._entry("enroll", outcome, person_name=batch.name,
                            details={"errors": batch.errors, "images": [str(p) for p in paths]})
        if batch.templates:
            added = len(self.gallery.add(batch.name, batch.templates, audit=audit))
        else:
            self.store.audit(audit)
            added = 0
        skipped = batch.skipped + len(batch.templates) - added
        return EnrollResult(batch.name, added, skipped, batch.faces, batch.errors)

    def _refuse_duplicate(self, name: str, path: Path | str, face: Face) -> None:
        """Refuse a face that already matches someone else, at a threshold made for comparing one face with
        the whole gallery (a 1:1 threshold would refuse ever more new people as the gallery grows)."""
        point = duplicate_threshold(self.store, self.card, self.gallery.person_count(), self.scorer.name)
        for candidate in self._candidates([face.embedding], top_k=3)[0]:
            if candidate.name != name and candidate.score >= point.threshold:
                raise DuplicateIdentityError(
                    f"{path}: this face already matches enrolled person {candidate.name!r} "
                    f"(score {candidate.score:.3f} >= duplicate threshold {point.threshold:.3f}: {point.source}); "
                    f"pass --allow-duplicate if they really are different people"
                )

    # --- verify / identify ------------------------------------------------------------------------
    def verify(self, name: str, image: ImageInput, choose_subject: bool = False,
               liveness: bool = False) -> VerifyResult:
        """1:1: is the one face in `image` the enrolled person `name`? With `liveness`, a face the
        presentation-attack detector calls a spoof is refused (reason "spoof") whatever its score."""
        return self._verify(name, image, choose_subject, liveness)[0]

    def _verify(self, name: str, image: ImageInput, choose_subject: bool,
                liveness: bool) -> tuple[VerifyResult, Face]:
        """`verify`, and the face it decided on (the HTTP service ranks the gallery around it)."""
        name = validate_name(name)
        gallery = self.store.templates(self.card.id, name=name)
        if len(gallery.ids) == 0:
            raise UnknownPersonError(f"unknown person {name!r} (see `facerec list`)")
        check_image(image, self.settings.max_pixels)
        analysed = self.pipeline.analyse(image)
        face = analysed.subject(_label(image), choose_subject)
        score = float(np.max(self.scorer.score(gallery.embeddings, face.embedding[None])))
        point = self.operating_point()
        live = self.liveness.decide(analysed.rgb, face.detection) if liveness else None
        match, reason = _one_to_one(score, point, live)
        if self.audit_policy is AuditPolicy.EVERY_DECISION:
            self.store.audit(self._entry("verify", "match" if match else reason, person_name=name, score=score,
                                         threshold=point.threshold,
                                         details={"image": _label(image),
                                                  "liveness": live.to_dict() if live else None}))
        result = VerifyResult(name, match, score, point.threshold, point.source, FaceInfo.of(face), live, reason)
        return result, face

    def identify(self, image: ImageInput, top_k: int = 1, liveness: bool = False) -> IdentifyResult:
        """1:K open-set: every face in `image` with its best enrolled match, or "unknown" below threshold."""
        check_image(image, self.settings.max_pixels)
        analysed = self.pipeline.analyse(image)
        point = self.operating_point(IDENTIFICATION)
        faces = self.identify_faces(analysed.faces, top_k, frame=analysed.rgb if liveness else None,
                                    source=_label(image), point=point)
        return IdentifyResult(_label(image), point.threshold, point.source, faces)

    def identify_many(self, images: Sequence[ImageInput], top_k: int = 1) -> list[IdentifyResult]:
        """Identify every face of many images with one embedding batch and one gallery search."""
        point = self.operating_point(IDENTIFICATION)
        analysed = self.analyse(images)
        faces = [f for a in analysed for f in a.faces]
        identified = iter(self.identify_faces(faces, top_k, source=f"{len(images)} images", point=point))
        return [IdentifyResult(_label(image), point.threshold, point.source, [next(identified) for _ in a.faces])
                for image, a in zip(images, analysed)]

    def identify_faces(self, faces: Sequence[Face], top_k: int = 1, frame: np.ndarray | None = None,
                       source: str = "", point: DecisionThreshold | None = None) -> list[IdentifiedFace]:
        """Identify already-detected faces (the kiosk and batch runners detect themselves), with one gallery
        search for all of them. With `frame` (the image they came from), each face's liveness is checked and
        a spoof is "unknown" with reason "spoof". Audited per the engine's policy."""
        point = point or self.operating_point(IDENTIFICATION)
        # two candidates at least: the margin over the runner-up is part of every answer
        candidates = self._candidates([f.embedding for f in faces], max(top_k, 2)) if faces else []
        identified = []
        for face, ranked in zip(faces, candidates):
            live = self.liveness.decide(frame, face.detection) if frame is not None else None
            identified.append(_decide(face, ranked, top_k, point, live))
        if self.audit_policy is AuditPolicy.EVERY_DECISION:
            self.store.audit(self._entry(
                "identify", "faces" if identified else "no_face",
                score=max((f.score for f in identified), default=None), threshold=point.threshold,
                details={"image": source, "names": [f.name for f in identified],
                         "reasons": [f.reason for f in identified]}))
        return identified

    def _candidates(self, embeddings: Sequence[np.ndarray], top_k: int) -> list[list[Candidate]]:
        """Best `top_k` people for each embedding: a person scores their best template.

        Cosine: straight from the gallery's search. Other scorers re-score the gallery's cosine shortlist
        (someone outside it cannot be found), reading those templates from the store.
        """
        if self.scorer.name == "cosine":
            return [[Candidate(m.name, m.score) for m in row]
                    for row in self.gallery.search(np.stack(embeddings), top_k)]
        ranked = []
        for embedding in embeddings:
            ids = self.gallery.shortlist_ids(embedding, top_k)
            rows = self.store.templates(self.card.id, ids=ids) if ids else None
            best: dict[str, float] = {}
            if rows is not None and len(rows.ids):
                for person, score in zip(rows.person_names, self.scorer.score(rows.embeddings, embedding[None])):
                    best[person] = max(best.get(person, -np.inf), float(score))
            ranked.append([Candidate(n, s) for n, s in
                           sorted(best.items(), key=lambda kv: kv[1], reverse=True)[: max(1, top_k)]])
        return ranked

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
    ) -> CalibrationResult:
        """Measure genuine/impostor scores of this model and pipeline, store the calibration, put it in force.

        Genuine pairs: the matched pairs of `pairs_file`, or every same-folder pair of `from_dir`.
        Impostor pairs: every cross-identity pair of the images involved (`impostors="all"`, sampled down to
        `max_impostors`), or only the file's mismatched pairs (`"listed"`). `far=None` selects the EER point.
        """
        from facerec.evaluation.calibration_data import pair_scores_for_calibration

        data = pair_scores_for_calibration(
            self.pipeline, pairs_file=pairs_file, root=root, from_dir=from_dir, impostors=impostors,
            max_impostors=max_impostors, progress=progress, on_total=on_total, scorer=self.scorer,
            cache_dir=Path(cache_dir) if cache_dir else None,
        )
        calibration = calibrate_scores(data.genuine, data.impostor, self.card.id, data.description, far=far,
                                       scorer=self.scorer.name)
        # the domain (source, counts, people, date, model, fingerprint) travels with the threshold it made
        report = calibration.to_dict() | {"target_far": far, "domain": data.domain}
        record_id = self.store.save_calibration(
            self.card.id, VERIFICATION, calibration.scorer, data.description, calibration.n_genuine,
            calibration.n_impostor, calibration.eer, calibration.threshold, calibration.operating, report,
        )
        self.store.audit(self._entry("calibrate", calibration.operating, threshold=calibration.threshold,
                                     details={"calibration_id": record_id, "data": data.description,
                                              "fingerprint": data.domain["fingerprint"]}))
        written = write_report(calibration, data.genuine, data.impostor, Path(report_dir)) if report_dir else []
        return CalibrationResult(calibration, written)

    def check_calibration(self, folder: str | os.PathLike, max_impostors: int = 5_000_000,
                          progress: Callable[[int], None] | None = None,
                          on_total: Callable[[int], None] | None = None,
                          cache_dir: str | os.PathLike | None = None) -> CalibrationCheck:
        """Does the 1:1 threshold in force keep its promise on the user's own labelled photos (a sub-folder
        per person)? FAR over every cross-person pair, FRR over every same-person pair, each with a
        Clopper-Pearson 95 % interval against the FAR and FRR the threshold promised on its own data. Never
        calibrates: the only write is one audit event."""
        from facerec.evaluation.calibration_data import pair_scores_for_calibration

        person_folders(folder)
        point = self.operating_point(VERIFICATION)
        data = pair_scores_for_calibration(self.pipeline, from_dir=folder, max_impostors=max_impostors,
                                           progress=progress, on_total=on_total, scorer=self.scorer,
                                           cache_dir=Path(cache_dir) if cache_dir else None)
        far, frr = check_threshold(data.genuine, data.impostor, point.threshold, point.promised_far,
                                   point.promised_frr)
        result = CalibrationCheck(str(folder), point.threshold, point.source, point.domain, data.domain, far, frr,
                                  data.genuine, data.impostor)
        self.store.audit(self._entry(
            "calibration_check", "drifted" if result.drifted else "consistent", threshold=point.threshold,
            details={"folder": str(folder), "fingerprint": data.domain["fingerprint"],
                     "far": [far.errors, far.pairs, far.promised], "frr": [frr.errors, frr.pairs, frr.promised]}))
        return result

    def calibrate_identification(self, unknowns: str | os.PathLike, fpir: float = 0.01) -> IdentificationCalibration:
        """Open-set threshold for this gallery: photos of people who are NOT enrolled are searched, and the
        threshold is set so that at most `fpir` of them would be identified as someone."""
        from facerec.evaluation.pairs import embed_images

        paths = image_files(unknowns, recursive=True) if Path(unknowns).is_dir() else []
        if not paths:
            raise InputPathError(f"{unknowns}: no images of unknown people found")
        embedded = embed_images(self.pipeline, paths)
        if not embedded.embeddings:
            raise InputPathError(f"{unknowns}: no face found in any image")
        ranked = self._candidates(list(embedded.embeddings.values()), 1)
        best = np.array([row[0].score if row else -1.0 for row in ranked])
        threshold, measured = fpir_threshold(best, fpir)
        gallery = self.gallery.person_count()
        description = f"{len(best)} unknown probes from {unknowns} against a gallery of {gallery} people"
        report = {"target_fpir": fpir, "measured_fpir": measured, "gallery_size": gallery, "probes": int(best.size)}
        record_id = self.store.save_calibration(self.card.id, IDENTIFICATION, self.scorer.name, description, 0,
                                                int(best.size), None, threshold, f"fpir={fpir:g}", report)
        self.store.audit(self._entry("calibrate", f"fpir={fpir:g}", threshold=threshold,
                                     details={"calibration_id": record_id, "data": description}))
        return IdentificationCalibration(record_id, threshold, fpir, measured, gallery, int(best.size), description)

    # --- gallery management ---------------------------------------------------------------------
    def remove(self, name: str) -> RemoveResult:
        """Delete a person's templates from database and index (gone for every process's next decision);
        the audit trail stays."""
        name = validate_name(name)
        removed = self.gallery.remove(name, audit=self._entry("remove", "removed", person_name=name))
        return RemoveResult(name, len(removed))

    def people(self) -> list[PersonSummary]:
        return self.store.list_people(self.card.id)

    def rebuild_index(self) -> IndexStatus:
        return IndexStatus(str(self.settings.index_path), self.gallery.rebuild())

    def audit_events(self, limit: int = 100) -> list[dict]:
        return self.store.audit_events(limit)

    def record(self, action: str, outcome: str, details: dict | None = None) -> None:
        """Write one audit event of the caller's own (a batch job's summary under `AuditPolicy.PER_JOB`)."""
        self.store.audit(self._entry(action, outcome, details=details))

    # --- security (issue 16) ----------------------------------------------------------------------
    def erase(self, name: str) -> "EraseResult":
        """Remove a person and every trace facerec keeps of their face: templates, index entries, index
        temporaries, whatever registered erasers hold (evidence crops, batch results), and deleted database
        pages. The audit trail keeps the name and the counts, never biometric data."""
        name = validate_name(name)
        removed = self.gallery.remove(name, audit=self._entry("erase", "removed", person_name=name))
        traces = [f"{len(removed)} template(s) deleted from the database and the index"]
        if self.gallery.persist:  # removal only marks rows deleted in the index files: rewrite them without
            self.gallery.rebuild()
            traces.append("index files rewritten without their vectors")
        traces += [f"index temporary {p} deleted" for p in self.gallery.remove_stale_temporaries()]
        for eraser in _ERASERS:
            traces += eraser(self, name)
        traces += self.store.erase_residue()
        self.store.audit(self._entry("erase", "completed", person_name=name, details={"traces": traces}))
        return EraseResult(name, len(removed), traces)

    def verify_audit(self) -> dict:
        """Recompute the audit log's hash chain (edited, deleted or inserted events; a cut-off end)."""
        return self.store.verify_audit().to_dict()

    def rotate_key(self, new_key_file: str | os.PathLike) -> dict:
        """Re-seal every template under the key in `new_key_file`, in one transaction (templates stored in
        the clear are sealed now). Afterwards the database needs that key: point FACEREC_KEY_FILE at it."""
        new = TemplateCipher(read_key_file(new_key_file))
        old = self.store.cipher.key_id if self.store.cipher else None
        count = self.store.reseal_templates(new, self._entry("keys_rotate", "resealed",
                                                             details={"from_key": old, "to_key": new.key_id}))
        if self.gallery.persist and self.settings.index_path.exists():  # it held the embeddings in the clear
            self.settings.index_path.unlink()
        self.gallery.persist = False
        return {"templates": count, "from_key": old, "to_key": new.key_id}

    def key_usage(self) -> dict[str, int]:
        """Templates per sealing key id ("" = in the clear)."""
        return self.store.key_ids()

    def enroll_embeddings(self, name: str, embeddings: np.ndarray, source_sha256: Sequence[str],
                          source_names: Sequence[str], detection_scores: Sequence[float],
                          qualities: Sequence[dict]) -> EnrollResult:
        """Enroll a person from faces already detected and embedded by this engine's model (a batch job's
        cluster the user named), through the gallery, so every process sees them at its next decision.

        No duplicate check: such faces matched nobody when they were identified. Sources already enrolled
        for this person (same SHA-256) are skipped."""
        name = validate_name(name)
        rows = np.asarray(embeddings, dtype=np.float32).reshape(len(source_sha256), -1)
        if len(rows) == 0:
            raise InputPathError("no face given")
        if rows.shape[1] != self.card.embedding_dim:
            raise FacerecError(f"embeddings of dimension {rows.shape[1]}, model {self.card.id} makes "
                               f"{self.card.embedding_dim}")
        known = self.store.known_sources(name, self.card.id)
        templates = [NewTemplate(embedding=e, model_id=self.card.id, model_version=self.card.version,
                                 source_sha256=sha, source_name=src, detection_score=float(det), quality=q,
                                 forced=not q.get("passed", True))
                     for e, sha, src, det, q in zip(rows, source_sha256, source_names, detection_scores, qualities)
                     if sha not in known]
        audit = self._entry("enroll", "enrolled" if templates else "unchanged", person_name=name,
                            details={"images": list(source_names), "from": "embeddings"})
        if not templates:
            self.store.audit(audit)
            return EnrollResult(name, 0, len(rows))
        added = len(self.gallery.add(name, templates, audit=audit))
        return EnrollResult(name, added, len(rows) - added)

    def _entry(self, action: str, outcome: str, person_name: str | None = None, score: float | None = None,
               threshold: float | None = None, details: dict | None = None) -> AuditEntry:
        return AuditEntry(action, outcome, person_name=person_name, score=score, threshold=threshold,
                          model_id=self.card.id, details={**(details or {}), "actor": self.actor})

    # --- frames of a stream (the kiosk detects, tracks and decides over many frames itself) -------------
    def detect_frame(self, rgb: np.ndarray, detector: str = "mtcnn") -> list:
        """Faces (detections) in one decoded RGB frame, largest first, by one of `FRAME_DETECTORS`:
        "mtcnn" (the pipeline's own, min face size from settings), "yunet" / "yunet-half" (YuNet on the
        frame at full / half resolution: door faces are large), "+onet" (landmarks from MTCNN's O-Net on
        YuNet's boxes, as at enrollment)."""
        from facerec.face.detect import detect_faces

        if detector == "mtcnn":
            return self.pipeline.detect(rgb)
        if detector not in FRAME_DETECTORS:
            raise FacerecError(f"unknown detector {detector!r} (choose from {', '.join(FRAME_DETECTORS)})")
        cache = self.__dict__.setdefault("_frame_detectors", {})  # built on first use, like the other parts
        found = cache.get(detector)
        if found is None:
            from facerec.models.yunet import YuNetDetector

            found = cache[detector] = YuNetDetector(scale=0.5 if "half" in detector else 1.0,
                                                    refine=detector.endswith("+onet"))
        return detect_faces(found, rgb, found.min_score, self.settings.min_face_size)

    def faces_in_frame(self, rgb: np.ndarray, detections: Sequence) -> list[Face]:
        """Align, embed (one batch) and quality-assess already-detected faces of one frame."""
        return self.pipeline.faces_in(rgb, list(detections))

    def record_decision(self, action: str, outcome: str, person_name: str | None, score: float | None,
                        threshold: float | None, details: dict) -> None:
        """One audit event for a decision a front end reached over many frames (a kiosk's visit)."""
        self.store.audit(self._entry(action, outcome, person_name=person_name, score=score, threshold=threshold,
                                     details=details))


    # --- verbs of the HTTP service (facerec.service) ------------------------------------------------
    @property
    def keys(self) -> KeyRing:
        """The API keys kept in this engine's database."""
        return KeyRing(self.store)

    def model_info(self) -> dict:
        """Which model decides: reported with every face answer."""
        return {"id": self.card.id, "version": self.card.version}

    def detect(self, image: ImageInput) -> list[FaceInfo]:
        """Every face in an image (largest first), with box, landmarks and quality; no gallery involved."""
        return [FaceInfo.of(f) for f in self.pipeline.analyse(image).faces]

    def enroll_uploads(self, name: str, uploads: Sequence[tuple[str, bytes]], force: bool = False,
                       allow_duplicate: bool = False, choose_subject: bool = False) -> UploadEnrollResult:
        """`enroll` for uploaded photos (label, encoded bytes): every photo is checked before anything is
        written; a photo already enrolled for this person (same SHA-256) is skipped."""
        name = validate_name(name)
        if not uploads:
            raise InputPathError("no image given")
        batch = _EnrollBatch(name, self.store.known_sources(name, self.card.id))
        digests = [hashlib.sha256(data).hexdigest() for _, data in uploads]
        for (label, data), digest in zip(uploads, digests):
            self._prepare_image(batch, label, digest, bytes(data), force, allow_duplicate, choose_subject)
        result = self._commit(batch, [label for label, _ in uploads])
        ids = template_ids_by_source(self.store, name, self.card.id, digests)
        return UploadEnrollResult(**vars(result), template_ids=[ids.get(d) for d in digests])

    def verify_subject(self, name: str, image: ImageInput, top_k: int = 3, liveness: bool = False,
                       choose_subject: bool = False) -> SubjectVerification:
        """`verify`, answered like an identification: the claimed person's score against the 1:1 threshold,
        and the gallery's best other people (the margin says how far ahead of them the claim is)."""
        verified, face = self._verify(name, image, choose_subject, liveness)
        others = [c for c in self._candidates([face.embedding], max(top_k, 2) + 1)[0] if c.name != verified.name]
        runner_up = others[0].score if others else -1.0
        return SubjectVerification(**vars(verified), margin=verified.score - runner_up, others=others[:top_k])

    def compare(self, image_a: ImageInput, image_b: ImageInput, liveness: bool = False) -> Comparison:
        """1:1 between two photos (no gallery): the subject of each, scored against the 1:1 threshold."""
        analysed = self.analyse([image_a, image_b])
        faces = [a.subject(label, False) for a, label in zip(analysed, ("image_a", "image_b"))]
        score = float(self.scorer.score(faces[0].embedding[None], faces[1].embedding[None])[0])
        point = self.operating_point()
        live = self.liveness.decide(analysed[1].rgb, faces[1].detection) if liveness else None
        match, reason = _one_to_one(score, point, live)
        if self.audit_policy is AuditPolicy.EVERY_DECISION:
            self.store.audit(self._entry("compare", "match" if match else reason, score=score,
                                         threshold=point.threshold))
        return Comparison(match, score, point.threshold, point.source, FaceInfo.of(faces[0]), FaceInfo.of(faces[1]),
                          live, reason)

    def rename(self, old: str, new: str) -> int:
        """Rename an enrolled person (templates kept; every process sees the new name at its next search)."""
        old, new = validate_name(old), validate_name(new)
        count = rename_person(self.store, old, new, audit=self._entry("rename", "renamed", person_name=new))
        self.gallery.sync()
        return count

    def enrolled_faces(self, name: str | None = None) -> list[tuple[int, str]]:
        """(template id, person) of every enrolled photo, or one person's."""
        rows = self.store.templates(self.card.id, name=validate_name(name) if name else None, with_embeddings=False)
        return list(zip(rows.ids.tolist(), rows.person_names))

    def remove_face(self, template_id: int) -> str:
        """Delete one enrolled photo's template (its person goes too when it was their last); returns the owner."""
        owner = remove_template(self.store, template_id, self.card.id, audit=self._entry("remove_face", "removed"))
        self.gallery.sync()
        return owner

    def calibration_status(self) -> dict:
        """The thresholds in force for 1:1 and 1:K decisions, and where each comes from."""
        return {"model": self.model_info(), "scorer": self.scorer.name,
                "verification": self.operating_point(VERIFICATION).to_dict(),
                "identification": self.operating_point(IDENTIFICATION).to_dict(),
                "calibrated": {kind: self.store.active_calibration(self.card.id, kind, self.scorer.name) is not None
                               for kind in (VERIFICATION, IDENTIFICATION)}}

    def acting_as(self, actor: dict) -> "FaceRec":
        """This engine (the same parts, built once) with audit events naming another actor, e.g. the API key
        of an HTTP request; cheap enough for every request."""
        twin = copy.copy(self)
        twin.actor = {**self.actor, **actor}
        return twin

    def audit_query(self, limit: int = 100, action: str | None = None, person: str | None = None,
                    before_id: int | None = None) -> list[dict]:
        return audit_query(self.store, limit, action, person, before_id)

    # --- bulk enrollment at scale (issue 21) -------------------------------------------------------
    def enroll_bulk(self, source: str | os.PathLike, chunk: int = 10_000, force: bool = False,
                    allow_duplicate: bool = False,
                    progress: Callable[[int, int], None] | None = None) -> "BulkEnrollResult":
        """Enroll many people from a precomputed-embeddings file (.npz / .parquet, see facerec/io/embeddings.py)
        or a folder with one sub-folder per person, `chunk` templates per transaction.

        Each chunk is one transaction (people, templates, change log and one audit event listing its people),
        then one batched index add and one append to the index file; an interruption (even SIGKILL) leaves
        whole chunks, and a re-run skips every template already stored (same person and source hash), so it
        resumes. Other processes catch up from the change log as after any enrollment. Embeddings must come
        from this engine's model (declared in the file) and are not checked for duplicate identities; photos
        from folders pass the quality gate and the duplicate check against the gallery as committed before
        their chunk (faces within one chunk are not compared with each other). `progress(done, total)`:
        rows or photos handled so far.
        """
        if chunk < 1:
            raise InputPathError(f"chunk size must be at least 1 (got {chunk})")
        started = time.perf_counter()
        path = Path(source)
        if path.is_dir():
            result = self._bulk_from_folders(path, chunk, force, allow_duplicate, progress)
        else:
            result = self._bulk_from_embeddings(path, chunk, progress)
        self.gallery.finish_maintenance()  # a writer leaves its index compacted (see Gallery)
        return replace(result, seconds=time.perf_counter() - started)

    def _bulk_from_embeddings(self, path: Path, chunk: int,
                              progress: Callable[[int, int], None] | None) -> "BulkEnrollResult":
        from facerec.io.embeddings import read_embeddings

        data = read_embeddings(path)
        if data.model_id != self.card.id:
            raise EmbeddingsFileError(f"{path}: embeddings of model {data.model_id!r}, this database uses "
                                      f"{self.card.id!r} (--model): they are not comparable")
        if data.dim != self.card.embedding_dim:
            raise EmbeddingsFileError(f"{path}: embeddings of dimension {data.dim}, model {self.card.id} makes "
                                      f"{self.card.embedding_dim}")
        valid: dict[str, str] = {}
        for row, raw in enumerate(data.names):
            if raw not in valid:
                try:
                    valid[raw] = validate_name(raw)
                except FacerecError as exc:
                    raise EmbeddingsFileError(f"{path}: row {row}: {exc}") from None
        card, total = self.card, len(data.names)
        quality = {"precomputed": path.name}  # no photo here: nothing to grade
        added = skipped = chunks = 0
        for start in range(0, total, chunk):
            stop = min(start + chunk, total)
            entries = [(valid[data.names[k]], NewTemplate(data.vectors[k], card.id, card.version, data.digests[k],
                                                          data.source_names[k], 0.0, quality))
                       for k in range(start, stop)]
            new = self._bulk_commit(entries, {"file": str(path), "rows": [start, stop]})
            added, skipped, chunks = added + new, skipped + (stop - start - new), chunks + 1
            if progress is not None:
                progress(stop, total)
        return BulkEnrollResult(added, skipped, len(set(valid.values())), chunks, data.notes, [])

    def _bulk_from_folders(self, root: Path, chunk: int, force: bool, allow_duplicate: bool,
                           progress: Callable[[int, int], None] | None) -> "BulkEnrollResult":
        folders = [(folder, image_files(folder)) for folder in person_folders(root)]
        total = sum(len(paths) for _, paths in folders)
        pending: list[tuple[str, NewTemplate]] = []
        added = skipped = chunks = done = people = submitted = 0
        errors: list[str] = []

        def flush() -> None:
            nonlocal added, chunks
            if pending:
                added += self._bulk_commit(pending, {"folder": str(root)})
                chunks += 1
                pending.clear()

        for folder, paths in folders:
            try:
                name = validate_name(folder.name)
            except FacerecError as exc:
                errors.append(f"{folder}: {exc}")
                done += len(paths)
                continue
            people += 1
            batch = _EnrollBatch(name, self.store.known_sources(name, self.card.id))
            for path in paths:
                try:
                    self._prepare(batch, path, force, allow_duplicate, choose_subject=False)
                except FacerecError as exc:
                    errors.append(str(exc))
                done += 1
                if progress is not None:
                    progress(done, total)
            skipped += batch.skipped
            submitted += len(batch.templates)
            pending.extend((name, t) for t in batch.templates)
            if len(pending) >= chunk:
                flush()
        flush()
        return BulkEnrollResult(added, skipped + submitted - added, people, chunks, [], errors)

    def _bulk_commit(self, entries: list[tuple[str, NewTemplate]], details: dict) -> int:
        """One chunk: one transaction with its audit event, one index add; returns how many were new."""
        audit = self._entry("enroll", "enrolled", details={**details, "bulk": True})
        return sum(i is not None for i in self.gallery.add_many(entries, audit=audit))


@dataclass(frozen=True)
class BulkEnrollResult:
    added: int  # templates written
    skipped: int  # already enrolled (same person and source hash) or, from folders, repeated photos
    people: int
    chunks: int  # transactions
    notes: list[str]  # e.g. embeddings that were normalised
    errors: list[str]  # photos refused (folders); the rest of their person still counts
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class UploadEnrollResult(EnrollResult):
    template_ids: list[int | None] = field(default_factory=list)  # one per upload (None: refused or skipped)

    def to_dict(self) -> dict:
        return super().to_dict() | {"template_ids": list(self.template_ids)}


@dataclass(frozen=True)
class SubjectVerification(VerifyResult):
    margin: float = 0.0  # score minus the best other enrolled person's (minus -1 when nobody else)
    others: list[Candidate] = field(default_factory=list)

    @property
    def decision(self) -> str:
        return "match" if self.match else "unknown"

    def to_dict(self) -> dict:
        return super().to_dict() | {"decision": self.decision, "margin": self.margin,
                                    "candidates": [asdict(c) for c in self.others]}


@dataclass(frozen=True)
class Comparison:
    match: bool
    score: float
    threshold: float
    threshold_source: str
    face_a: FaceInfo
    face_b: FaceInfo
    liveness: LivenessDecision | None = None  # of image_b, the live capture
    reason: str = ""

    def to_dict(self) -> dict:
        return {"decision": "match" if self.match else "unknown", "match": self.match, "score": self.score,
                "threshold": self.threshold, "threshold_source": self.threshold_source,
                "face_a": self.face_a.to_dict(), "face_b": self.face_b.to_dict(),
                "liveness": self.liveness.to_dict() if self.liveness else None, "reason": self.reason}

# Detectors a stream front end may pick per frame (`FaceRec.detect_frame`); accuracy in BENCHMARKS.md.
FRAME_DETECTORS = ("mtcnn", "yunet", "yunet-half", "yunet+onet", "yunet-half+onet")


@dataclass(frozen=True)
class EraseResult:
    name: str
    removed_templates: int
    traces: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


# Erasers: what other parts keep about a person (kiosk evidence crops, batch results) register a function
# (engine, name) -> descriptions of what it deleted; `FaceRec.erase` runs each after the templates are gone.
Eraser = Callable[["FaceRec", str], list[str]]
_ERASERS: list[Eraser] = []


def register_eraser(eraser: Eraser) -> Eraser:
    """Add an eraser (usable as a decorator); `remove --erase` then deletes what it knows about a person."""
    if eraser not in _ERASERS:
        _ERASERS.append(eraser)
    return eraser


def generate_key(path: str | os.PathLike) -> str:
    """Write a new template key file (0600, never overwriting); returns its key id."""
    return write_key_file(path)


# --- module-level verbs that need no gallery -----------------------------------------------------
def models() -> list[ModelCard]:
    """The shipped embedding models' cards (input, accuracy, licences)."""
    return [model_card(m) for m in available_models()]


def resolve_model(settings: Settings, new_database: str | None = None) -> Settings:
    """The one rule for which model an engine runs when `settings.model_id` is None (no --model,
    FACEREC_MODEL or Settings.model_id): the model the database is bound to (its facts table; an upgrade
    never changes an existing database's model), else, for a new database, `new_database` when the data
    declares its model (an embeddings file), else `new_database_model()`. A chosen model is kept as chosen:
    opening a database bound to another one is then refused (Store.bind_model)."""
    if settings.model_id:
        return settings
    return settings.with_(model_id=Store.bound_model(settings.db_url) or new_database or new_database_model())


def embeddings_file_model(path: str | os.PathLike) -> str | None:
    """The model an embeddings file declares (for `resolve_model(settings, new_database=...)`)."""
    from facerec.io.embeddings import declared_model

    return declared_model(path)


def new_database_model() -> str:
    """The model a new database gets when none is chosen (facerec/data/model_defaults.json, `new_database`)."""
    from facerec.models.defaults import new_database_model as chosen

    return chosen()


def model_roles() -> dict[str, str]:
    """model id -> its recommended role ("most_accurate", "commercial_use"), from facerec/data/model_defaults.json."""
    from facerec.models.defaults import recommended_models

    return {entry["model"]: role for role, entry in recommended_models().items()}


def upgrade_database(settings: Settings) -> str:
    """Create or migrate a database to the newest schema; returns the revision."""
    return Store.open(settings.db_url, auto_migrate=True).upgrade()


def plot_liveness_roc(scores: dict[str, np.ndarray], is_live: np.ndarray, path: Path) -> None:
    """The liveness ROC (APCER against 1 - BPCER) of each model as one PNG."""
    from facerec.decisions.liveness_metrics import liveness_roc
    from facerec.decisions.plots import plot_roc

    plot_roc({m: liveness_roc(s, is_live) for m, s in scores.items()}, path,
             title="Liveness ROC (FAR = APCER, TAR = 1 - BPCER)")


def liveness_models() -> list[str]:
    """Ids of the shipped liveness models (see `facerec liveness evaluate --model`)."""
    from facerec.models.liveness import liveness_models as ids

    return sorted(ids())


def remove_index_files(path: str | os.PathLike) -> int:
    """Delete an index file and all its parts (a server worker's own index at shutdown); returns how many."""
    from facerec.index.storage import remove_index_files as remove

    return len(remove(Path(path)))


def redacted_url(url: str) -> str:
    """A database URL with its password hidden, for printing."""
    return redact(url)


def scorer_for(name: str, model_id: str) -> Scorer:
    """A template scorer by name (cosine, learned, chi2) for evaluation runs."""
    return get_scorer(name, model_id)


def evaluation_pipeline(model: str | None = None, flip_fusion: bool | None = None,
                        db: str | None = None) -> FacePipeline:
    """A pipeline with the configured detector settings, for evaluation runs; no model chosen: the one the
    configured database (`db`, FACEREC_DB) uses or would get (`resolve_model`), never created here."""
    s = resolve_model(Settings.resolve(model=model, db=db))
    return FacePipeline(get_model(s.model_id), min_score=s.min_face_score, min_size=s.min_face_size,
                        flip_fusion=flip_fusion, max_pixels=s.max_pixels, torch_threads=s.torch_threads)


def process_actor() -> dict:
    """Who acts, for the audit trail: OS user, host and process."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name (some containers): the uid still says who
        user = f"uid {os.getuid()}"
    return {"user": user, "host": socket.gethostname(), "pid": os.getpid()}


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


def _one_to_one(score: float, point: DecisionThreshold, live: LivenessDecision | None) -> tuple[bool, str]:
    """A 1:1 decision: a match at or above the threshold and live when checked; else why not."""
    match = score >= point.threshold and (live is None or live.is_live)
    reason = "" if match else ("spoof" if live is not None and not live.is_live else "below_threshold")
    return match, reason


def _decide(face: Face, ranked: list[Candidate], top_k: int, point: DecisionThreshold,
            live: LivenessDecision | None) -> IdentifiedFace:
    """The open-set rule: the best candidate if at or above the threshold (and live when checked)."""
    info = FaceInfo.of(face)
    if not ranked:
        return IdentifiedFace(UNKNOWN, -1.0, 0.0, [], info, live, "empty_gallery")
    best, shown = ranked[0], ranked[:top_k]
    # against the lowest possible similarity (-1) when nobody else is enrolled
    margin = best.score - (ranked[1].score if len(ranked) > 1 else -1.0)
    if live is not None and not live.is_live:
        return IdentifiedFace(UNKNOWN, best.score, margin, shown, info, live, "spoof")
    if best.score < point.threshold:
        return IdentifiedFace(UNKNOWN, best.score, margin, shown, info, live, "below_threshold")
    return IdentifiedFace(best.name, best.score, margin, shown, info, live)


def _label(image: ImageInput) -> str:
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    return "<upload>" if isinstance(image, (bytes, bytearray, memoryview)) else "<image>"


@dataclass
class _EnrollBatch:
    name: str
    known: set[str]
    seen: set[str] = field(default_factory=set)
    templates: list[NewTemplate] = field(default_factory=list)
    faces: list[EnrolledPhoto] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: int = 0


__all__ = [
    "AuditPolicy", "BulkEnrollResult", "Candidate", "Comparison", "KeyInfo", "KeyRing", "SubjectVerification", "UploadEnrollResult",
    "CalibrationCheck", "CalibrationResult", "EnrollResult", "EraseResult", "FaceInfo", "FaceRec", "IdentifiedFace", "generate_key",
    "register_eraser",
    "IdentificationCalibration", "IdentifyResult", "IndexStatus", "Match", "RemoveResult", "Settings",
    "liveness_models", "plot_liveness_roc", "remove_index_files", "model_roles", "new_database_model", "embeddings_file_model",
    "resolve_model",
    "VerifyResult", "evaluation_pipeline", "models", "person_folders", "redacted_url", "scorer_for",
    "upgrade_database", "UNKNOWN",
]
