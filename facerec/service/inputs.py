"""Request bodies: multipart uploads or JSON with base64 images, read the same way for every route.

Images stay encoded bytes here; decoding (format, size, pixel limit, truncation) is facerec.io's job, so an
upload is checked exactly like a file.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field

from starlette.datastructures import UploadFile
from starlette.requests import Request

from facerec.errors import ImageError, UsageError


@dataclass
class Payload:
    fields: dict[str, object] = field(default_factory=dict)
    images: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)

    def image(self, *names: str) -> tuple[str, bytes]:
        """The one image sent under the first of `names` present (a route's name and its aliases)."""
        for name in names:
            if self.images.get(name):
                return self.images[name][0]
        raise UsageError(f"no image given (send it as {' or '.join(repr(n) for n in names)})")

    def all_images(self, *names: str) -> list[tuple[str, bytes]]:
        return [item for name in names for item in self.images.get(name, [])]

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.fields.get(name, default)
        return None if value is None else str(value)

    def number(self, name: str, default: float, kind: type = float, low: float | None = None,
               high: float | None = None) -> float:
        raw = self.fields.get(name)
        if raw in (None, ""):
            return default
        try:
            value = kind(raw)
        except (TypeError, ValueError):
            raise UsageError(f"{name}={raw!r} is not {'an integer' if kind is int else 'a number'}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise UsageError(f"{name}={raw!r} is outside [{low}, {high}]")
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        raw = self.fields.get(name)
        if raw in (None, ""):
            return default
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{name}={raw!r} is not true or false")


async def read_payload(request: Request, image_fields: tuple[str, ...], max_images: int = 10) -> Payload:
    """Query parameters, then form fields or JSON keys (which win); `image_fields` name the images."""
    payload = Payload(fields=dict(request.query_params))
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form(max_files=max_images, max_fields=100)
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                payload.images.setdefault(key, []).append((value.filename or key, await value.read()))
            elif key in image_fields:  # a base64 string sent as a plain form field
                payload.images.setdefault(key, []).append((key, _b64(key, value)))
            else:
                payload.fields[key] = value
    elif kind == "application/json":
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise UsageError("request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise UsageError("JSON body must be an object")
        for key, value in body.items():
            if key in image_fields:
                values = value if isinstance(value, list) else [value]
                payload.images.setdefault(key, []).extend(
                    (f"{key}[{i}]" if len(values) > 1 else key, _b64(key, v)) for i, v in enumerate(values))
            else:
                payload.fields[key] = value
    elif kind and await request.body():
        raise UsageError(f"unsupported content type {kind!r}: send multipart/form-data or application/json")
    if sum(len(v) for v in payload.images.values()) > max_images:
        raise UsageError(f"too many images in one request (at most {max_images})")
    return payload


def _b64(name: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise UsageError(f"{name}: expected a base64 string")
    text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(f"{name}: not valid base64") from None


def openapi_body(image_fields: dict[str, str], fields: dict[str, dict]) -> dict:
    """The OpenAPI request body of a route that reads its payload itself: multipart and JSON variants."""
    multipart = {name: {"type": "string", "format": "binary", "description": text}
                 for name, text in image_fields.items()}
    as_json = {name: {"type": "string", "format": "byte", "description": text + " (base64)"}
               for name, text in image_fields.items()}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {**multipart, **fields}}},
        "application/json": {"schema": {"type": "object", "properties": {**as_json, **fields}}},
    }}}
