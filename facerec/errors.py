"""Typed errors: each carries the process exit code and a one-line message for the CLI.

Exit codes (documented in the README):
  0  success / match
  1  no match (verify), or a decision that refused (e.g. spoof)
  2  bad input: path, image, face, name, database, index or model problem
  130 interrupted (Ctrl-C); nothing half-written
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_NO_MATCH = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class FacerecError(Exception):
    """Base of every error the user can cause; `str(err)` is a single line."""

    exit_code: int = EXIT_BAD_INPUT
    code: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class UsageError(FacerecError):
    """Arguments that do not fit together."""

    code = "usage"


class InputPathError(FacerecError):
    code = "bad_path"


class ImageError(FacerecError):
    code = "bad_image"


class FaceError(FacerecError):
    """No face, several faces where one is required, or a face that fails the quality gate."""

    code = "bad_face"


class NoFaceError(FaceError):
    code = "no_face"


class MultipleFacesError(FaceError):
    code = "multiple_faces"


class QualityError(FaceError):
    code = "low_quality"


class DuplicateIdentityError(FaceError):
    code = "duplicate_identity"


class InvalidNameError(FacerecError):
    code = "bad_name"


class UnknownPersonError(FacerecError):
    code = "unknown_person"


class DatabaseError(FacerecError):
    code = "database"


class ModelMismatchError(DatabaseError):
    code = "model_mismatch"


class ModelError(FacerecError):
    code = "model"


class SearchIndexError(FacerecError):
    code = "index"
