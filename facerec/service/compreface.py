"""CompreFace-shaped routes (recognition service, `x-api-key`), so CompreFace clients switch by URL.

Mapped onto the same engine, with one deliberate difference: CompreFace lists the nearest subjects whatever
their similarity and leaves the decision to the client; here `subjects` lists only subjects at or above the
threshold in force (a client that takes `subjects[0]` never gets a forced nearest match), and each result
also carries facerec's full answer under `facerec` (decision, score, threshold and source, margin,
candidates, model). `similarity` is facerec's score (cosine for the default model), not CompreFace's.
An image without a face is an error (`no_face`, 422), as in CompreFace (which answers 400).
"""

from __future__ import annotations

import math

from fastapi import APIRouter, Query
from pydantic import BaseModel
from starlette.requests import Request

from facerec.api import FaceInfo
from facerec.errors import NoFaceError, UsageError
from facerec.service.app import face_answer, service
from facerec.service.inputs import openapi_body, read_payload
from facerec.service.native import enrollable

router = APIRouter(prefix="/api/v1", tags=["compreface"])
FILE = {"file": "the photo"}


def box(face: FaceInfo) -> dict:
    x_min, y_min, x_max, y_max = (int(round(v)) for v in face.box)
    return {"probability": face.score, "x_min": x_min, "y_min": y_min, "x_max": x_max, "y_max": y_max}


@router.post("/recognition/faces", status_code=201, summary="Add a face example of a subject",
             openapi_extra=openapi_body(FILE, {"subject": {"type": "string"}}))
async def add_face(request: Request) -> dict:
    svc = service(request)
    engine = await svc.authorize(request, "enroll")
    payload = await read_payload(request, ("file",), svc.options.max_images)
    subject = enrollable(payload.text("subject") or "")
    upload = payload.image("file")
    result = await svc.run(engine.enroll_uploads, subject, [upload],
                           allow_duplicate=payload.flag("allow_duplicate"))
    image_id = result.template_ids[0]
    return {"image_id": None if image_id is None else str(image_id), "subject": result.name}


@router.get("/recognition/faces", summary="List face examples")
async def list_faces(request: Request, page: int = Query(0, ge=0), size: int = Query(20, ge=1, le=1000),
                     subject: str | None = None) -> dict:
    svc = service(request)
    engine = await svc.authorize(request, "recognize")
    faces = await svc.query(engine.enrolled_faces, subject or None)
    shown = faces[page * size:(page + 1) * size]
    return {"faces": [{"image_id": str(i), "subject": name} for i, name in shown], "page_number": page,
            "page_size": size, "total_pages": math.ceil(len(faces) / size), "total_elements": len(faces)}


@router.delete("/recognition/faces", summary="Delete all examples of a subject")
async def delete_faces(request: Request, subject: str | None = None) -> dict:
    svc = service(request)
    engine = await svc.authorize(request, "admin")
    if not subject:
        raise UsageError("give ?subject=NAME (deleting every subject at once is not offered)")
    result = await svc.query(engine.remove, subject)
    return {"deleted": result.removed_templates}


@router.delete("/recognition/faces/{image_id}", summary="Delete one face example")
async def delete_face(request: Request, image_id: int) -> dict:
    svc = service(request)
    engine = await svc.authorize(request, "admin")
    owner = await svc.query(engine.remove_face, image_id)
    return {"image_id": str(image_id), "subject": owner}


@router.post("/recognition/recognize", summary="Recognize every face in an image",
             openapi_extra=openapi_body(FILE, {"limit": {"type": "integer"},
                                               "prediction_count": {"type": "integer"}}))
async def recognize(request: Request) -> dict:
    svc = service(request)
    engine = await svc.authorize(request, "recognize")
    payload = await read_payload(request, ("file",), svc.options.max_images)
    count = int(payload.number("prediction_count", 1, int, 1, svc.options.max_top_k))
    limit = int(payload.number("limit", 0, int, 0))
    _, image = payload.image("file")
    result = await svc.run(engine.identify, image, top_k=count)
    if not result.faces:
        raise NoFaceError("No face is found in the given image")  # CompreFace answers an error too
    model, faces = engine.model_info(), result.faces[:limit] if limit else result.faces
    return {"result": [{
        "box": box(f.face),
        "subjects": [{"subject": c.name, "similarity": round(c.score, 5)} for c in f.candidates
                     if f.decision == "match" and c.score >= result.threshold],
        "landmarks": f.face.landmarks,
        "facerec": face_answer(f, result.threshold, result.threshold_source, model),
    } for f in faces]}


@router.get("/recognition/subjects", summary="List subjects")
async def subjects(request: Request) -> dict:
    svc = service(request)
    engine = await svc.authorize(request, "recognize")
    return {"subjects": [p.name for p in await svc.query(engine.people)]}


class SubjectName(BaseModel):
    subject: str


@router.put("/recognition/subjects/{subject}", summary="Rename a subject")
async def rename_subject(request: Request, subject: str, body: SubjectName) -> dict:
    svc = service(request)
    engine = await svc.authorize(request, "admin")
    await svc.query(engine.rename, subject, enrollable(body.subject))
    return {"updated": True}


@router.delete("/recognition/subjects/{subject}", summary="Delete a subject")
async def delete_subject(request: Request, subject: str) -> dict:
    svc = service(request)
    engine = await svc.authorize(request, "admin")
    result = await svc.query(engine.remove, subject)
    return {"subject": result.name}


@router.post("/detection/detect", summary="Detect faces", openapi_extra=openapi_body(FILE, {}))
async def detect(request: Request) -> dict:
    svc = service(request)
    engine = await svc.authorize(request, "recognize")
    payload = await read_payload(request, ("file",), svc.options.max_images)
    _, image = payload.image("file")
    faces = await svc.run(engine.detect, image)
    if not faces:
        raise NoFaceError("No face is found in the given image")
    return {"result": [{"box": box(f), "landmarks": f.landmarks} for f in faces]}


@router.post("/verification/verify", summary="Compare the face of two images",
             openapi_extra=openapi_body({"source_image": "reference", "target_image": "photo to check"}, {}))
async def verify(request: Request) -> dict:
    svc = service(request)
    engine = await svc.authorize(request, "recognize")
    payload = await read_payload(request, ("source_image", "target_image"), svc.options.max_images)
    (_, source), (_, target) = payload.image("source_image"), payload.image("target_image")
    result = await svc.run(engine.compare, source, target)
    return {"result": [{
        "source_image_face": {"box": box(result.face_a)},
        "face_matches": [{"box": box(result.face_b), "similarity": round(result.score, 5)}],
        "facerec": result.to_dict() | {"model": engine.model_info()},
    }]}
