"""HTTP API keys, kept in the enrollment database so that every worker and replica sees the same keys.

A key is `frk_<id>_<secret>`. Only SHA-256(secret) is stored (a leaked database gives no usable key); the id
finds the row, so checking a key is one primary-key read and one constant-time comparison. Keys carry
scopes (actions: recognize, enroll, admin) and galleries (names, or "*"), may expire, are revoked or
rotated (a new secret for the same grants; the old one may live on for a grace period), and lock after
`LOCKOUT_FAILURES` wrong secrets in a row for `LOCKOUT_SECONDS` (the lock is in the database: all workers
honour it).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from facerec.errors import AuthError, ForbiddenError, KeyLockedError, UsageError
from facerec.store.repository import Store
from facerec.store.schema import ApiKey

SCOPES = ("recognize", "enroll", "admin")
PREFIX = "frk"
LOCKOUT_FAILURES = 5
LOCKOUT_SECONDS = 300
LAST_USED_EVERY = timedelta(seconds=60)  # last_used_at is this precise, not one write per request
_TOKEN = re.compile(rf"^{PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{20,128}})$")


@dataclass(frozen=True)
class KeyInfo:
    """A key as listed and as granted to a request (never its secret)."""

    id: str
    name: str
    scopes: tuple[str, ...]
    galleries: tuple[str, ...]
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    locked_until: str | None
    last_used_at: str | None

    def allows(self, scope: str, gallery: str) -> bool:
        return scope in self.scopes and ("*" in self.galleries or gallery in self.galleries)

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "scopes": list(self.scopes), "galleries": list(self.galleries),
                "created_at": self.created_at, "expires_at": self.expires_at, "revoked_at": self.revoked_at,
                "locked_until": self.locked_until, "last_used_at": self.last_used_at}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else _aware(value).isoformat(timespec="seconds")


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored here is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.id, row.name, tuple(row.scopes.split(",")), tuple(row.galleries.split(",")),
                   _iso(row.created_at), _iso(row.expires_at), _iso(row.revoked_at), _iso(row.locked_until),
                   _iso(row.last_used_at))


def _checked_scopes(scopes: list[str]) -> str:
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        raise UsageError(f"scopes must be among {', '.join(SCOPES)} (got {', '.join(scopes) or 'none'})")
    return ",".join(s for s in SCOPES if s in scopes)


def _checked_galleries(galleries: list[str]) -> str:
    if not galleries or any(not g or "," in g for g in galleries):
        raise UsageError("give one or more gallery names (no commas), or '*' for every gallery")
    return ",".join(galleries)


class KeyRing:
    """The API keys of one database."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, name: str, scopes: list[str], galleries: list[str] = ("*",),
               expires_in: timedelta | None = None) -> tuple[KeyInfo, str]:
        """A new key; returns its description and the token, which is shown once and never stored."""
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        row = ApiKey(id=key_id, name=name.strip()[:128] or key_id, secret_sha256=_digest(secret),
                     scopes=_checked_scopes(list(scopes)), galleries=_checked_galleries(list(galleries)),
                     created_at=_now(), expires_at=_now() + expires_in if expires_in else None, failures=0)
        with self.store.session() as s:
            s.add(row)
        return _info(row), f"{PREFIX}_{key_id}_{secret}"

    def list(self) -> list[KeyInfo]:
        with self.store.session() as s:
            return [_info(r) for r in s.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))]

    def revoke(self, key_id: str) -> KeyInfo:
        with self.store.session() as s:
            row = self._row(s, key_id)
            row.revoked_at = row.revoked_at or _now()
            return _info(row)

    def rotate(self, key_id: str, grace: timedelta = timedelta(0)) -> tuple[KeyInfo, str]:
        """A new key with the same name, scopes, galleries and expiry; the old one ends after `grace`."""
        with self.store.session() as s:
            old = self._row(s, key_id)
            if old.revoked_at is not None:
                raise UsageError(f"key {key_id} is revoked: create a new one")
            name, scopes, galleries, expires = old.name, old.scopes, old.galleries, old.expires_at
        remaining = _aware(expires) - _now() if expires else None
        info, token = self.create(name, scopes.split(","), galleries.split(","), remaining)
        with self.store.session() as s:
            old = self._row(s, key_id)
            old.rotated_to = info.id
            end = _now() + grace
            if grace <= timedelta(0):
                old.revoked_at = end
            elif old.expires_at is None or _aware(old.expires_at) > end:
                old.expires_at = end
        return info, token

    def authenticate(self, token: str | None) -> KeyInfo:
        """The key a request presents, or AuthError / KeyLockedError. A wrong secret counts towards the lock."""
        if not token:
            raise AuthError("missing API key (send it in the x-api-key header)")
        match = _TOKEN.match(token.strip())
        if match is None:
            raise AuthError("invalid API key")
        key_id, secret = match.groups()
        now = _now()
        with self.store.session() as s:
            row = s.get(ApiKey, key_id)
            if row is None:
                raise AuthError("invalid API key")
            if row.locked_until is not None and _aware(row.locked_until) > now:
                raise KeyLockedError(f"API key {key_id} is locked after repeated wrong secrets until "
                                     f"{_iso(row.locked_until)}")
            if not hmac.compare_digest(row.secret_sha256, _digest(secret)):
                wrong = True
            else:
                wrong = False
                if row.revoked_at is not None and _aware(row.revoked_at) <= now:
                    raise AuthError(f"API key {key_id} was revoked")
                if row.expires_at is not None and _aware(row.expires_at) <= now:
                    raise AuthError(f"API key {key_id} expired at {_iso(row.expires_at)}")
                # writes only when there is news: most requests cost one primary-key read
                if row.failures or row.last_used_at is None or now - _aware(row.last_used_at) > LAST_USED_EVERY:
                    row.failures, row.last_used_at = 0, now
                info = _info(row)
        if wrong:
            self._count_failure(key_id, now)
            raise AuthError("invalid API key")
        return info

    def _count_failure(self, key_id: str, now: datetime) -> None:
        with self.store.session() as s:
            row = s.get(ApiKey, key_id, with_for_update=True)
            row.failures = (row.failures or 0) + 1
            if row.failures >= LOCKOUT_FAILURES:
                row.locked_until, row.failures = now + timedelta(seconds=LOCKOUT_SECONDS), 0

    @staticmethod
    def require(key: KeyInfo, scope: str, gallery: str) -> None:
        if scope not in key.scopes:
            raise ForbiddenError(f"API key {key.id} lacks the {scope!r} scope (has: {', '.join(key.scopes)})")
        if not key.allows(scope, gallery):
            raise ForbiddenError(f"API key {key.id} is not valid for gallery {gallery!r}")

    @staticmethod
    def _row(s, key_id: str) -> ApiKey:
        row = s.get(ApiKey, key_id)
        if row is None:
            raise UsageError(f"no API key with id {key_id!r} (see `facerec serve keys list`)")
        return row
