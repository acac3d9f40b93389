"""Shared fixtures: where the data is, fresh databases (SQLite and PostgreSQL), and the CLI as a subprocess.

In CI (CI=true) missing data or a missing PostgreSQL server is an error; elsewhere those tests skip with
the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Tests that are not about choosing a model run on one fixed model, the one their expected values (scores,
# thresholds, template dimensions) were written for; a new database would otherwise get the recommended
# commercial-use model. Subprocesses inherit it. The model-choice tests remove it (tests/test_model_choice.py).
TEST_MODEL = "mobilefacenet"
os.environ["FACEREC_MODEL"] = TEST_MODEL
DATA = Path(os.environ.get("FACEREC_DATA", REPO.parent / "shared" / "data"))
IN_CI = os.environ.get("CI") == "true"


def need(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (in CI) when a test's requirement is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    need((DATA / "README.md").is_file(), f"shared data not found at {DATA} (set FACEREC_DATA)")
    return DATA


@pytest.fixture(scope="session")
def lfw(data_dir: Path) -> Path:
    root = data_dir / "faces" / "lfw"
    need((root / "pairs.txt").is_file(), f"LFW not found at {root}")
    return root


def lfw_image(lfw: Path, name: str, number: int) -> Path:
    return lfw / name / f"{name}_{number:04d}.jpg"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'facerec.db'}"


@pytest.fixture
def pg_url() -> str:
    """A fresh, empty PostgreSQL database on the server named by FACEREC_TEST_PG_URL; dropped afterwards."""
    admin_url = os.environ.get("FACEREC_TEST_PG_URL")
    need(bool(admin_url), "no PostgreSQL server: set FACEREC_TEST_PG_URL (.ci/run starts one)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"facerec_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path: Path) -> str:
    """Both supported backends: the embedded default and a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'facerec.db'}"
    return request.getfixturevalue("pg_url")


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python cli.py ARGS` in a new process, as a user would."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO / "cli.py"), *args], capture_output=True, text=True, env=full_env,
        timeout=timeout, cwd=REPO,
    )
