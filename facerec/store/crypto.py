"""Templates sealed at rest with AES-256-GCM: a stolen database file holds no usable embedding without the key.

A key file holds 32 random bytes as 64 hex characters (`facerec keys generate` writes one, mode 0600). Its key
id (the first 16 hex characters of SHA-256 over the key) is stored beside each sealed template, so a database
says which key it needs and `facerec keys rotate` can re-seal every template under a new key in one
transaction. Each template is sealed with a fresh 96-bit nonce and authenticated together with its owner,
model and photo hash (associated data): a sealed template copied onto another person's row fails to open.

`cryptography` is imported only when a key is in use (an optional extra: `pip install facerec[crypto]`).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from facerec.errors import TemplateKeyError

KEY_BYTES = 32
NONCE_BYTES = 12


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


def write_key_file(path: str | os.PathLike) -> str:
    """Create a new random key file readable by its owner only; refuses to overwrite. Returns its key id."""
    path = Path(path)
    key = secrets.token_bytes(KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise TemplateKeyError(f"{path}: already exists (a key file is never overwritten)") from None
    except OSError as exc:
        raise TemplateKeyError(f"{path}: cannot create key file ({exc.strerror})") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    return key_id(key)


class TemplateCipher:
    """Seals and opens template bytes with one current key (and, while rotating, the previous one)."""

    def __init__(self, key: bytes, previous: "TemplateCipher | None" = None) -> None:
        if len(key) != KEY_BYTES:
            raise TemplateKeyError(f"a template key is {KEY_BYTES} bytes, not {len(key)}")
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:
            raise TemplateKeyError("template encryption needs the 'cryptography' package "
                                   "(pip install 'facerec[crypto]')") from None
        self.key_id = key_id(key)
        self._aead = AESGCM(key)
        self._keys = {self.key_id: self._aead}
        if previous is not None:
            self._keys.update(previous._keys)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "TemplateCipher":
        return cls(read_key_file(path))

    def seal(self, plain: bytes, context: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plain, context)

    def open(self, sealed: bytes, sealed_with: str, context: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        aead = self._keys.get(sealed_with)
        if aead is None:
            raise TemplateKeyError(f"templates are sealed with key {sealed_with}, but the key file given is "
                                   f"{self.key_id}: set FACEREC_KEY_FILE to the key they were sealed with")
        try:
            return aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context)
        except InvalidTag:
            raise TemplateKeyError("a sealed template failed authentication (altered, or moved to another "
                                   "person's row)") from None


def read_key_file(path: str | os.PathLike) -> bytes:
    path = Path(path)
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise TemplateKeyError(f"{path}: cannot read key file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise TemplateKeyError(f"{path}: not a facerec key file (expected 64 hex characters)") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise TemplateKeyError(f"{path}: not a facerec key file (expected 64 hex characters)") from None
    if len(key) != KEY_BYTES:
        raise TemplateKeyError(f"{path}: a key file holds {KEY_BYTES * 2} hex characters, not {len(text)}")
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise TemplateKeyError(f"{path}: key file is readable by group or others (chmod 600 {path})")
    return key


def template_context(person: str, model_id: str, source_sha256: str) -> bytes:
    """The associated data a sealed template is bound to."""
    return "\x1f".join((person, model_id, source_sha256)).encode()
