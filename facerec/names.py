"""Person names: what the database accepts, checked before anything is written."""

from __future__ import annotations

import unicodedata

from facerec.errors import InvalidNameError
from facerec.store.schema import MAX_NAME_LENGTH

# Zero-width non-joiner / joiner: format characters real names need (ZWNJ inside Persian words, emoji ZWJ
# sequences); every other control or format character (bidi overrides, invisible separators) is refused.
JOINERS = frozenset({"\u200c", "\u200d"})


def validate_name(raw: str) -> str:
    """Return the NFC-normalised, stripped name, or raise with the reason it is refused."""
    name = unicodedata.normalize("NFC", raw or "").strip()
    if not name:
        raise InvalidNameError("empty name")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidNameError(f"name too long ({len(name)} characters > {MAX_NAME_LENGTH})")
    bad = [c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") and c not in JOINERS]
    if bad:
        raise InvalidNameError(f"name contains control characters ({', '.join(repr(c) for c in bad[:3])})")
    if name[0] in JOINERS or name[-1] in JOINERS or any(a in JOINERS and b in JOINERS for a, b in zip(name, name[1:])):
        raise InvalidNameError("name has a zero-width joiner at its start or end, or two in a row")
    if "/" in name or "\\" in name or name in (".", "..") or name.startswith("~"):
        raise InvalidNameError(f"name {name!r} looks like a path (no '/', '\\', '.', '..' or leading '~')")
    return name
