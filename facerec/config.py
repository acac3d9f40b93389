"""Settings from flags and `FACEREC_*` environment variables, resolved in one place.

FACEREC_HOME    folder for the default database and index files (default: ~/.local/share/facerec)
FACEREC_DB      SQLAlchemy URL of the enrollment database (default: sqlite:///$FACEREC_HOME/facerec.db)
FACEREC_INDEX   path of the FAISS index file (default: beside a SQLite file, else under $FACEREC_HOME)
FACEREC_MODEL   embedding model id (default: an existing database's own model; a new database gets the
                recommended commercial-use model of facerec/data/model_defaults.json: facerec.api.resolve_model)
FACEREC_INDEX_KIND  flat (default, exact) | auto (by gallery size and hardware) | hnsw | ivf | ivfsq8 | ivfpq | pcahnsw | pcaivfsq8 | torch | torchivf
FACEREC_SCORER  cosine | learned | chi2: how two templates are compared (default: cosine)
FACEREC_MIN_FACE_SCORE / FACEREC_MIN_FACE_SIZE  detector filters (default 0.9 / 20 px)
FACEREC_MAX_PIXELS  largest image accepted (default 16,000,000 pixels: facerec/io/images.py says why)
FACEREC_TORCH_THREADS  CPU threads for torch (default 1: see facerec/models/runtime.py for why)
FACEREC_KEY_FILE  key file sealing templates at rest (AES-256-GCM; `facerec keys generate`); unset: in the clear

These variables are read here and nowhere else: every engine holds its own `Settings`, so two engines in one
process (a test, a server with two galleries) never share configuration through the environment.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from facerec.errors import DatabaseError, FacerecError
from facerec.io.images import FACE_MAX_PIXELS

DEFAULT_MIN_FACE_SCORE = 0.9
DEFAULT_MIN_FACE_SIZE = 20


def _env_number(name: str, default: float, kind: type = float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise FacerecError(f"{name}={raw!r} is not {'an integer' if kind is int else 'a number'}") from None
    if value <= 0 and kind is int:
        raise FacerecError(f"{name}={raw!r} must be at least 1")
    return value


def default_home() -> Path:
    if os.environ.get("FACEREC_HOME"):
        return Path(os.environ["FACEREC_HOME"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "facerec"


@dataclass(frozen=True)
class Settings:
    db_url: str
    index_path: Path
    model_id: str | None = None  # None: not chosen; the engine resolves it (facerec.api.resolve_model)
    index_kind: str = "flat"
    scorer: str = "cosine"
    min_face_score: float = DEFAULT_MIN_FACE_SCORE
    min_face_size: float = DEFAULT_MIN_FACE_SIZE
    max_pixels: int = FACE_MAX_PIXELS
    torch_threads: int = 1
    home: Path = field(default_factory=default_home)
    key_file: Path | None = None

    @classmethod
    def resolve(
        cls,
        db: str | None = None,
        index: str | os.PathLike | None = None,
        model: str | None = None,
        index_kind: str | None = None,
        scorer: str | None = None,
        min_face_score: float | None = None,
        min_face_size: float | None = None,
        key_file: str | os.PathLike | None = None,
    ) -> "Settings":
        """Flags win over `FACEREC_*` variables, which win over defaults."""
        home = default_home()
        db_url = db or os.environ.get("FACEREC_DB") or f"sqlite:///{home / 'facerec.db'}"
        db_url = normalise_db_url(db_url)
        index_path = index or os.environ.get("FACEREC_INDEX")
        resolved_index = Path(index_path) if index_path else default_index_path(db_url, home)
        return cls(
            db_url=db_url,
            index_path=resolved_index,
            model_id=model or os.environ.get("FACEREC_MODEL") or None,
            index_kind=index_kind or os.environ.get("FACEREC_INDEX_KIND") or "flat",
            scorer=scorer or os.environ.get("FACEREC_SCORER") or "cosine",
            min_face_score=min_face_score
            if min_face_score is not None
            else _env_number("FACEREC_MIN_FACE_SCORE", DEFAULT_MIN_FACE_SCORE),
            min_face_size=min_face_size
            if min_face_size is not None
            else _env_number("FACEREC_MIN_FACE_SIZE", DEFAULT_MIN_FACE_SIZE),
            max_pixels=int(_env_number("FACEREC_MAX_PIXELS", FACE_MAX_PIXELS, int)),
            torch_threads=int(_env_number("FACEREC_TORCH_THREADS", 1, int)),
            home=home,
            key_file=Path(key).expanduser() if (key := key_file or os.environ.get("FACEREC_KEY_FILE")) else None,
        )

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)


def normalise_db_url(url: str) -> str:
    """Accept a bare file path as shorthand for a SQLite database; refuse a URL with its slashes missing
    (`sqlite:/x.db` must not silently become a folder named 'sqlite:')."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:(?!//)", url):
        raise DatabaseError(f"malformed database URL {url!r}: expected SCHEME://..., e.g. sqlite:///relative.db "
                            f"or sqlite:////absolute/path.db (a plain file path also works)")
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    return url


def sqlite_path(db_url: str) -> Path | None:
    prefix = "sqlite:///"
    if db_url.startswith(prefix) and db_url[len(prefix):] not in ("", ":memory:"):
        return Path(db_url[len(prefix):])
    return None


def default_index_path(db_url: str, home: Path) -> Path:
    """Beside a SQLite file; for server databases, one file per URL under FACEREC_HOME/index."""
    path = sqlite_path(db_url)
    if path is not None:
        return path.with_name(path.name + ".faiss")
    digest = hashlib.sha256(db_url.encode()).hexdigest()[:16]
    return home / "index" / f"{digest}.faiss"
