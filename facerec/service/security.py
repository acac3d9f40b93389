"""Who may call and how much: API keys (checked against the database on every request, so a revocation is
seen by every worker at once), a token bucket per key and worker, and a request body limit."""

from __future__ import annotations

import json
import threading
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facerec.errors import PayloadTooLargeError, RateLimitError


class RateLimiter:
    """Token bucket per API key: `rate` requests a second on average, `burst` at once (this process only)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def exhausted(self, key_id: str) -> bool:
        """Whether `key_id` has no request left now (without using one)."""
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(key_id, (float(self.burst), now))
            return min(float(self.burst), tokens + (now - then) * self.rate) < 1.0

    def take(self, key_id: str) -> None:
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(key_id, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            if tokens < 1.0:
                self._buckets[key_id] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
                raise RateLimitError(f"rate limit of {self.rate:g} requests/s (burst {self.burst}) exceeded for "
                                     f"API key {key_id}: retry in {wait:.1f} s")
            self._buckets[key_id] = (tokens - 1.0, now)


class BodyLimit:
    """Refuse bodies over `limit` bytes: at once when Content-Length says so, else when the stream passes it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            body = json.dumps({"error": PayloadTooLargeError.code,
                               "message": f"request body of {int(declared):,} bytes exceeds the limit of "
                                          f"{self.limit:,} bytes"}).encode()
            await send({"type": "http.response.start", "status": PayloadTooLargeError.http_status,
                        "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise PayloadTooLargeError(f"request body exceeds the limit of {self.limit:,} bytes")
            return message

        await self.app(scope, limited, send)
