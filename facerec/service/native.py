"""facerec's own routes: every face answer carries decision, score, threshold (+ source), margin, candidates,
model and (when asked) liveness. Scopes: recognize (read and decide), enroll (add photos), admin (rename,
delete, audit)."""

from __future__ import annotations

import os

import anyio
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.requests import Request

from facerec.api import UNKNOWN
from facerec.errors import InvalidNameError
from facerec.service.app import VERSION, face_answer, service
from facerec.service.inputs import openapi_body, read_payload

router = APIRouter()

IMAGE = {"image": "the photo (JPEG, PNG, ...)"}
TOP_K = {"top_k": {"type": "integer", "default": 3, "description": "candidates reported per face"}}
LIVENESS = {"liveness": {"type": "boolean", "default": False,
                         "description": "check for a presentation attack (a spoof is 'unknown', reason 'spoof')"}}


def enrollable(name: str) -> str:
    """'unknown' is the answer for nobody: no one may be enrolled under it."""
    if name.strip().lower() == UNKNOWN:
        raise InvalidNameError(f"{name!r} is reserved for faces that match nobody")
    return name


@router.get("/health", tags=["service"], summary="Liveness of the process (no key needed)")
async def health(request: Request) -> dict:
    svc = service(request)
    return {"status": "ok", "version": VERSION, "model": svc.engine.model_info(), "gallery": svc.options.gallery,
            "worker_pid": os.getpid(), "startup_seconds": svc.startup_seconds}


@router.get("/ready", tags=["service"], summary="Ready to decide: models loaded, database reachable")
async def ready(request: Request) -> JSONResponse:
    svc = service(request)
    templates = await anyio.to_thread.run_sync(lambda: svc.engine.gallery.size)
    return JSONResponse({"ready": True, "templates": templates, "worker_pid": os.getpid(),
                         "startup_seconds": svc.startup_seconds})


@router.post("/v1/identify", tags=["recognize"], summary="1:K: every face in the image, each matched or unknown",
             openapi_extra=openapi_body(IMAGE, TOP_K | LIVENESS))
async def identify(request: Request) -> dict:
    svc = service(request)
    engine = await svc.authorize(request, "recognize")
    payload = await read_payload(request, ("image",), svc.options.max_images)
    top_k = int(payload.number("top_k", 3, int, 1, svc.options.max_top_k))
    _, image = payload.image("image")
    result = await svc.run(engine.identify, image, top_k=top_k, liveness=payload.flag("liveness"))
    model = engine.model_info()
    return {"threshold": result.threshold, "threshold_source": result.threshold_source, "model": model,
            "faces": [face_answer(f, result.threshold, result.threshold_source, model) for f in result.faces]}


@router.post("/v1/verify", tags=["recognize"], summary="1:1 against an enrolled subject (all their photos)",
             openapi_extra=openapi_body(IMAGE, {"subject": {"type": "string"}} | TOP_K | LIVENESS))
async def verify(request: Request) -> dict:
    svc = service(request)
    engine = await svc.authorize(request, "recognize")
    payload = await read_payload(request, ("image",), svc.options.max_images)
    subject = payload.text("subject") or payload.text("name") or ""
    _, image = payload.image("image")
    result = await svc.run(engine.verify_subject, subject, image,
                           top_k=int(payload.number("top_k", 3, int, 1, svc.options.max_top_k)),
                           liveness=payload.flag("liveness"), choose_subject=payload.flag("choose_subject"))
    return result.to_dict() | {"model": engine.model_info()}


@router.post("/v1/compare", tags=["recognize"], summary="1:1 between two photos (no gallery)",
             openapi_extra=openapi_body({"image_a": "reference photo", "image_b": "photo to check"}, LIVENESS))
async def compare(request: Request) -> dict:
    svc = service(request)
    engine = await svc.authorize(request, "recognize")
    payload = await read_payload(request, ("image_a", "image_b"), svc.options.max_images)
    (_, a), (_, b) = payload.image("image_a"), payload.image("image_b")
    result = await svc.run(engine.compare, a, b, liveness=payload.flag("liveness"))
    return result.to_dict() | {"model": engine.model_info()}


@router.post("/v1/detect", tags=["recognize"], summary="Faces in an image: boxes, landmarks, quality",
             openapi_extra=openapi_body(IMAGE, {}))
async def detect(request: Request) -> dict:
    svc = service(request)
    engine = await svc.authorize(request, "recognize")
    payload = await read_payload(request, ("image",), svc.options.max_images)
    _, image = payload.image("image")
    faces = await svc.run(engine.detect, image)
    return {"faces": [f.to_dict() for f in faces], "model": engine.model_info()}


@router.post("/v1/subjects/{name}/faces", tags=["enroll"], status_code=201,
             summary="Enroll photos of a subject (created on first photo); all photos are checked first",
             openapi_extra=openapi_body({"images": "one or more photos (repeat the field)"}, {
                 "force": {"type": "boolean", "description": "enroll despite the quality gate (recorded)"},
                 "allow_duplicate": {"type": "boolean",
                                     "description": "enroll even if the face matches someone else"}}))
async def enroll(request: Request, name: str) -> dict:
    svc = service(request)
    engine = await svc.authorize(request, "enroll")
    payload = await read_payload(request, ("images", "image"), svc.options.max_images)
    uploads = payload.all_images("images", "image")
    result = await svc.run(engine.enroll_uploads, enrollable(name), uploads, force=payload.flag("force"),
                           allow_duplicate=payload.flag("allow_duplicate"),
                           choose_subject=payload.flag("choose_subject"))
    return result.to_dict() | {"model": engine.model_info()}


@router.get("/v1/subjects", tags=["recognize"], summary="Enrolled subjects with their number of photos")
async def subjects(request: Request) -> dict:
    svc = service(request)
    engine = await svc.authorize(request, "recognize")
    people = await svc.query(engine.people)
    return {"subjects": [{"name": p.name, "templates": p.templates, "created_at": p.created_at} for p in people]}


class Rename(BaseModel):
    name: str = Field(description="the new name")


@router.patch("/v1/subjects/{name}", tags=["admin"], summary="Rename a subject (photos kept)")
async def rename(request: Request, name: str, body: Rename) -> dict:
    svc = service(request)
    engine = await svc.authorize(request, "admin")
    templates = await svc.query(engine.rename, name, enrollable(body.name))
    return {"name": body.name.strip(), "previous": name, "templates": templates}


@router.delete("/v1/subjects/{name}", tags=["admin"], summary="Delete a subject and all their templates")
async def delete(request: Request, name: str) -> dict:
    svc = service(request)
    engine = await svc.authorize(request, "admin")
    result = await svc.query(engine.remove, name)
    return result.to_dict()


@router.get("/v1/calibration", tags=["recognize"], summary="The thresholds in force and where they come from")
async def calibration(request: Request) -> dict:
    svc = service(request)
    engine = await svc.authorize(request, "recognize")
    return await svc.query(engine.calibration_status)


@router.get("/v1/audit", tags=["admin"], summary="Audit events, newest first")
async def audit(request: Request, limit: int = Query(100, ge=1, le=1000), action: str | None = None,
                person: str | None = None, before_id: int | None = None) -> dict:
    svc = service(request)
    engine = await svc.authorize(request, "admin")
    events = await svc.query(engine.audit_query, limit, action, person, before_id)
    return {"events": events}
