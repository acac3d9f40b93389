"""The FastAPI application: one engine per worker process, shared by its request threads.

Each worker builds its engine from the FACEREC_* settings, with its own index file (suffixed by its pid and
removed at shutdown), warms the models and the gallery before it reports ready, and checks the API key of
every request against the database. Errors are JSON `{"error": code, "message": ...}` with the
FacerecError's HTTP status; anything unexpected is a 500 `internal` without a traceback.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import anyio
import numpy as np
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import Request

from facerec.api import FaceRec, IdentifiedFace, KeyInfo, KeyRing, Settings, remove_index_files
from facerec.errors import AuthError, FacerecError, RateLimitError, http_status_map
from facerec.service.config import ServiceOptions
from facerec.service.security import BodyLimit, RateLimiter

log = logging.getLogger("facerec.service")
VERSION = "1"


@dataclass
class Service:
    """What the routes share in one worker: the engine, the options, the limits."""

    engine: FaceRec
    options: ServiceOptions
    created: float = field(default_factory=time.monotonic)
    startup_seconds: float | None = None
    capacity: anyio.CapacityLimiter | None = None
    limiter: RateLimiter | None = None  # requests per API key
    failures: RateLimiter | None = None  # refused keys per client address
    own_index: Path | None = None  # this worker's index file, removed at shutdown

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.options.rate_per_second, self.options.burst)
        self.failures = RateLimiter(self.options.failed_auth_per_minute / 60.0, self.options.failed_auth_burst)

    def warm(self) -> None:
        """Load the models and the gallery before the first request (lazy parts are not built twice by
        concurrent first requests, and the first caller does not pay for loading)."""
        engine = self.engine
        engine.gallery.sync()
        engine.detect(np.full((96, 96, 3), 128, dtype=np.uint8))  # builds the pipeline, runs the detector once
        engine.pipeline.model.embed(np.zeros((1, *_crop_shape(engine)), dtype=np.uint8))
        engine.liveness  # noqa: B018 - built now, not by the first request that asks for liveness
        engine.scorer  # noqa: B018
        self.startup_seconds = time.monotonic() - self.created

    async def run(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """Image work off the event loop, at most `concurrency` images at once in this worker."""
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self.capacity)

    @staticmethod
    async def query(fn: Callable, *args: Any) -> Any:
        """Database-only work (lists, renames, audit) off the event loop, not queued behind images."""
        return await anyio.to_thread.run_sync(partial(fn, *args))

    async def authorize(self, request: Request, scope: str, token: str | None = None) -> FaceRec:
        """The engine acting for the request's API key (audit events name the key), after the checks of key,
        scope, gallery and rate. The key comes from `x-api-key`, `Authorization: Bearer`, or `token`."""
        token = request.headers.get("x-api-key") or _bearer(request) or token
        client = request.client.host if request.client else "unknown"
        if self.failures.exhausted(client):  # guessing keys (which cannot lock ids that do not exist)
            raise RateLimitError(f"too many refused API keys from {client}: try again later")
        try:
            key: KeyInfo = await anyio.to_thread.run_sync(self.engine.keys.authenticate, token)
        except AuthError:
            self.failures.take(client)
            raise
        KeyRing.require(key, scope, self.options.gallery)
        self.limiter.take(key.id)
        return self.engine.acting_as({"api_key": key.id, "client": client})


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    return value[7:].strip() if value.lower().startswith("bearer ") else None


def _crop_shape(engine: FaceRec) -> tuple[int, int, int]:
    template = engine.card.template
    return template.height, template.width, 3


def service(request: Request) -> Service:
    return request.app.state.service


def face_answer(face: IdentifiedFace, threshold: float, source: str, model: dict) -> dict:
    """One identified face as every native route answers it: decision, score, threshold and its source,
    margin, candidates, model, liveness."""
    return face.to_dict() | {"threshold": threshold, "threshold_source": source, "model": model}


# --- errors ---------------------------------------------------------------------------------------------
def error_response(request: Request, code: str, message: str, status: int) -> JSONResponse:
    """`{"error", "message"}` everywhere; the drop-in routes add what their clients look for."""
    body: dict[str, Any] = {"error": code, "message": message}
    path = request.url.path
    if path.startswith(("/api/v1/recognition", "/api/v1/detection", "/api/v1/verification")):
        body["code"] = status  # CompreFace clients read `message` (and a numeric `code`)
    elif path.startswith("/v1/vision/"):
        body["success"] = False  # DeepStack clients test `success`
    return JSONResponse(body, status_code=status)


async def _facerec_error(request: Request, exc: FacerecError) -> JSONResponse:
    return error_response(request, exc.code, str(exc), exc.http_status)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return error_response(request, "usage", f"{where}: {first.get('msg', 'invalid request')}", 400)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(request, codes.get(exc.status_code, "http"), str(exc.detail), exc.status_code)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s %s", request.method, request.url.path)  # the traceback stays here
    return error_response(request, "internal", f"internal error ({type(exc).__name__})", 500)


# --- the application --------------------------------------------------------------------------------------
def create_app(engine: FaceRec, options: ServiceOptions | None = None) -> FastAPI:
    from facerec.service import compreface, deepstack, native

    options = options or ServiceOptions()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc: Service = app.state.service
        svc.capacity = anyio.CapacityLimiter(options.concurrency)
        await anyio.to_thread.run_sync(svc.warm)
        log.warning("worker %d ready in %.2f s (gallery %r, %d templates)", os.getpid(), svc.startup_seconds,
                    options.gallery, svc.engine.gallery.size)
        try:
            yield
        finally:
            svc.engine.close()
            if svc.own_index is not None:
                remove_index_files(svc.own_index)

    app = FastAPI(
        title="facerec", version=VERSION, lifespan=lifespan,
        description="Face verification and recognition over one shared gallery. Every face answer carries "
                    "decision (match | unknown), score, threshold and its source, margin over the runner-up, "
                    "candidates and the model; never a forced nearest match. Errors are JSON "
                    "{error, message}; error codes and their HTTP status: "
                    + ", ".join(f"{code} {status}" for code, status in http_status_map().items())
                    + ", internal 500.",
    )
    app.state.service = Service(engine, options)
    app.add_middleware(BodyLimit, limit=options.max_body_bytes)
    app.add_exception_handler(FacerecError, _facerec_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(native.router)
    app.include_router(compreface.router)
    app.include_router(deepstack.router)
    app.openapi = partial(_openapi_with_keys, app)
    return app


def _openapi_with_keys(app: FastAPI) -> dict:
    """FastAPI's schema, plus the API key every route but /health and /ready needs."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = {
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}}
        for path, operations in schema["paths"].items():
            if path not in ("/health", "/ready"):
                for operation in operations.values():
                    operation["security"] = [{"apiKey": []}]
        app.openapi_schema = schema
    return app.openapi_schema


def worker_index_path(path: Path) -> Path:
    """One index file per worker process: workers never write each other's file."""
    return path.with_name(f"{path.stem}.worker-{os.getpid()}{path.suffix}")


def remove_orphan_indexes(path: Path) -> None:
    """Index files of workers that died without shutting down hold embeddings (perhaps of people removed
    since): delete those whose process is gone."""
    for orphan in path.parent.glob(f"{path.stem}.worker-*{path.suffix}"):
        pid = orphan.name[len(path.stem) + len(".worker-"):-len(path.suffix) or None]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            remove_index_files(orphan)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def app_from_env() -> FastAPI:
    """The app factory uvicorn's worker processes call: settings from FACEREC_*, options from `facerec serve`."""
    settings = Settings.resolve()
    remove_orphan_indexes(settings.index_path)
    index = worker_index_path(settings.index_path)
    app = create_app(FaceRec(settings.with_(index_path=index)), ServiceOptions.from_env())
    app.state.service.own_index = index
    return app
