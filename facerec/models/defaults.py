"""The two recommended embedders, read from `facerec/data/model_defaults.json` (a decision with its evidence).

Why two: the most accurate weights are non-commercial, so a user must choose knowingly between accuracy and
terms that allow commercial use; the file says which model is which, on what data it was measured and where
the raw results are, and which of the two a new database gets when nobody chose (`new_database`). Nothing
here loads a model.
"""

from __future__ import annotations

import json
from pathlib import Path

from facerec.errors import ModelError
from facerec.models.registry import available_models

DEFAULTS_FILE = Path(__file__).resolve().parent.parent / "data" / "model_defaults.json"
ROLES = ("most_accurate", "commercial_use")


def recommended_models(path: Path = DEFAULTS_FILE) -> dict[str, dict]:
    """{role: entry} for both roles; each entry names a shipped `model` and why it was chosen."""
    data = json.loads(Path(path).read_text())
    known = set(available_models())
    out = {}
    for role in ROLES:
        entry = data.get(role)
        if not isinstance(entry, dict) or entry.get("model") not in known:
            raise ModelError(f"{path.name}: {role!r} must name a shipped model (got {entry and entry.get('model')!r})")
        out[role] = entry
    return out


def roles_of(model_id: str, path: Path = DEFAULTS_FILE) -> list[str]:
    """The roles (`most_accurate`, `commercial_use`) a model holds; empty for the others."""
    return [role for role, entry in recommended_models(path).items() if entry["model"] == model_id]


def new_database_model(path: Path = DEFAULTS_FILE) -> str:
    """The model a new database gets when none is chosen: the recommended model of the file's
    `new_database.role` (an existing database keeps the model it was made for: facerec.api.resolve_model)."""
    role = (json.loads(Path(path).read_text()).get("new_database") or {}).get("role")
    if role not in ROLES:
        raise ModelError(f"{Path(path).name}: 'new_database.role' must be one of {', '.join(ROLES)} (got {role!r})")
    return recommended_models(path)[role]["model"]
