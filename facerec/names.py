"""Person names: what the database accepts, checked before anything is written."""

from __future__ import annotations

import unicodedata

from facerec.errors import InvalidNameError
from facerec.store.schema import MAX_NAME_LENGTH


def validate_name(raw: str) -> str:
    """Return the NFC-normalised, stripped name, or raise with the reason it is refused."""
    name = unicodedata.normalize("NFC", raw or "").strip()
    if not name:
        raise InvalidNameError("empty name")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidNameError(f"name too long ({len(name)} characters > {MAX_NAME_LENGTH})")
    bad = [c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    if bad:
        raise InvalidNameError(f"name contains control characters ({', '.join(repr(c) for c in bad[:3])})")
    if "/" in name or "\\" in name or name in (".", "..") or name.startswith("~"):
        raise InvalidNameError(f"name {name!r} looks like a path (no '/', '\\', '.', '..' or leading '~')")
    return name
