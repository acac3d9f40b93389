"""Typed errors: each carries the process exit code and a one-line message for the CLI.

Exit codes (documented in the README):
  0  success / match
  1  no match (verify), or a decision that refused (e.g. spoof)
  2  bad input: path, image, face, name, database, index or model problem
  3  partial success of a bulk command (some items refused, the rest done)
  70 internal error (a bug or an unexpected system failure; nothing half-written)
  75 temporary failure: the database connection was lost or stayed locked; the transaction rolled back, so
     running the same command again is safe (sysexits EX_TEMPFAIL)
  130 interrupted (Ctrl-C); nothing half-written

HTTP status of each error (`http_status`, used by the HTTP service; `HTTP_STATUS` lists them all):
  400 usage / bad path / bad name; 404 unknown person; 409 duplicate identity; 422 bad image / face / quality;
  500 model or index problem; 503 database problem.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_NO_MATCH = 1
EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3
EXIT_INTERNAL = 70
EXIT_TEMPORARY = 75
EXIT_INTERRUPTED = 130


class FacerecError(Exception):
    """Base of every error the user can cause; `str(err)` is a single line."""

    exit_code: int = EXIT_BAD_INPUT
    code: str = "error"
    http_status: int = 400

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class UsageError(FacerecError):
    """Arguments that do not fit together."""

    code = "usage"


class InputPathError(FacerecError):
    code = "bad_path"


class ImageError(FacerecError):
    code = "bad_image"
    http_status = 422


class FaceError(FacerecError):
    """No face, several faces where one is required, or a face that fails the quality gate."""

    code = "bad_face"
    http_status = 422


class NoFaceError(FaceError):
    code = "no_face"


class MultipleFacesError(FaceError):
    code = "multiple_faces"


class QualityError(FaceError):
    code = "low_quality"


class DuplicateIdentityError(FaceError):
    code = "duplicate_identity"
    http_status = 409


class InvalidNameError(FacerecError):
    code = "bad_name"


class UnknownPersonError(FacerecError):
    code = "unknown_person"
    http_status = 404


class DatabaseError(FacerecError):
    code = "database"
    http_status = 503


class DatabaseUnavailableError(DatabaseError):
    """The connection was lost (server restarted, backend killed) or the database stayed locked: retryable."""

    code = "database_unavailable"
    exit_code = EXIT_TEMPORARY


class TemplateKeyError(FacerecError):
    """Template encryption: a missing, unreadable or wrong key file, or templates sealed with another key."""

    code = "template_key"
    http_status = 500


class ModelMismatchError(DatabaseError):
    code = "model_mismatch"


class ModelError(FacerecError):
    code = "model"
    http_status = 500


class SearchIndexError(FacerecError):
    code = "index"
    http_status = 500


def http_status_map() -> dict[str, int]:
    """Every error code with its HTTP status (documented for integrators)."""
    found: dict[str, int] = {}
    pending = [FacerecError]
    while pending:
        cls = pending.pop()
        found[cls.code] = cls.http_status
        pending.extend(cls.__subclasses__())
    return dict(sorted(found.items()))


# --- HTTP service (facerec serve): who may call, and how much -----------------------------------------
class AuthError(FacerecError):
    """No API key, an unknown or wrong one, or one that expired or was revoked."""

    code = "unauthorized"
    http_status = 401


class ForbiddenError(FacerecError):
    """A valid key without the scope (action or gallery) the request needs."""

    code = "forbidden"
    http_status = 403


class KeyLockedError(AuthError):
    """Too many wrong secrets for one key id: locked for a while, whoever asks."""

    code = "key_locked"
    http_status = 423


class RateLimitError(FacerecError):
    code = "rate_limited"
    http_status = 429


class PayloadTooLargeError(FacerecError):
    code = "too_large"
    http_status = 413


class EmbeddingsFileError(InputPathError):
    """A precomputed-embeddings file for bulk enrollment that cannot be used as it is (same code as a bad path)."""
