"""DeepStack / CodeProject.AI-shaped routes (/v1/vision/face/...), as Double Take and Home Assistant call them.

Form fields as DeepStack takes them; the key may also come as the `api_key` form field (DeepStack's way).
A face nobody matches is `userid: "unknown"` with confidence 0, as DeepStack answers. `min_confidence`
can only make a match stricter: a face is someone only when its score reaches both facerec's threshold in
force and `min_confidence` (DeepStack's own default of 0.67 does not apply: facerec's scores are on
another scale). "unknown" cannot be registered as a userid.
"""

from __future__ import annotations

import time

from fastapi import APIRouter
from starlette.requests import Request

from facerec.api import FaceInfo
from facerec.service.app import face_answer, service
from facerec.service.inputs import Payload, openapi_body, read_payload
from facerec.service.native import enrollable

router = APIRouter(prefix="/v1/vision", tags=["deepstack"])
KEY = {"api_key": {"type": "string", "description": "the API key, if not sent as x-api-key"}}


def corners(face: FaceInfo) -> dict:
    x_min, y_min, x_max, y_max = (int(round(v)) for v in face.box)
    return {"x_min": x_min, "y_min": y_min, "x_max": x_max, "y_max": y_max}


async def _call(request: Request, scope: str) -> tuple:
    svc = service(request)
    payload: Payload = await read_payload(request, (), svc.options.max_images)
    engine = await svc.authorize(request, scope, token=payload.text("api_key"))
    return svc, engine, payload


@router.post("/face/register", summary="Register photos of a userid",
             openapi_extra=openapi_body({"image": "one or more photos (any field names)"},
                                        {"userid": {"type": "string"}} | KEY))
async def register(request: Request) -> dict:
    started = time.monotonic()
    svc, engine, payload = await _call(request, "enroll")
    uploads = [item for items in payload.images.values() for item in items]
    result = await svc.run(engine.enroll_uploads, enrollable(payload.text("userid") or ""), uploads)
    return {"success": True, "message": "face added", "added": result.added, "skipped": result.skipped,
            "duration": round(time.monotonic() - started, 3)}


@router.post("/face/recognize", summary="Recognize every face ('unknown' below the threshold)",
             openapi_extra=openapi_body({"image": "the photo"},
                                        {"min_confidence": {"type": "number"}} | KEY))
async def recognize(request: Request) -> dict:
    started = time.monotonic()
    svc, engine, payload = await _call(request, "recognize")
    min_confidence = payload.number("min_confidence", 0.0, float, 0.0, 1.0)
    _, image = payload.image("image")
    result = await svc.run(engine.identify, image, top_k=3)
    model, predictions = engine.model_info(), []
    for f in result.faces:
        known = f.decision == "match" and f.score >= min_confidence
        predictions.append({"userid": f.name if known else "unknown",
                            "confidence": round(max(0.0, f.score), 5) if known else 0.0,
                            **corners(f.face),
                            "facerec": face_answer(f, result.threshold, result.threshold_source, model)})
    return {"success": True, "predictions": predictions, "duration": round(time.monotonic() - started, 3)}


@router.post("/face/list", summary="Registered userids", openapi_extra=openapi_body({}, KEY))
async def list_faces(request: Request) -> dict:
    svc, engine, _ = await _call(request, "recognize")
    return {"success": True, "faces": [p.name for p in await svc.query(engine.people)]}


@router.post("/face/delete", summary="Delete a userid", openapi_extra=openapi_body({}, {"userid": {"type": "string"}} | KEY))
async def delete(request: Request) -> dict:
    svc, engine, payload = await _call(request, "admin")
    await svc.query(engine.remove, payload.text("userid") or "")
    return {"success": True}


@router.post("/face", summary="Detect faces", openapi_extra=openapi_body({"image": "the photo"}, KEY))
async def detect(request: Request) -> dict:
    started = time.monotonic()
    svc, engine, payload = await _call(request, "recognize")
    _, image = payload.image("image")
    faces = await svc.run(engine.detect, image)
    return {"success": True, "predictions": [{"confidence": f.score, **corners(f)} for f in faces],
            "duration": round(time.monotonic() - started, 3)}


@router.post("/face/match", summary="Similarity of the faces of two images",
             openapi_extra=openapi_body({"image1": "first photo", "image2": "second photo"}, KEY))
async def match(request: Request) -> dict:
    svc, engine, payload = await _call(request, "recognize")
    (_, a), (_, b) = payload.image("image1"), payload.image("image2")
    result = await svc.run(engine.compare, a, b)
    return {"success": True, "similarity": round(result.score, 5),
            "facerec": result.to_dict() | {"model": engine.model_info()}}
