"""One engine for long-lived front ends, proven with real processes; and a wheel that installs anywhere.

- A long-lived identifier process (as a kiosk, a batch runner or an HTTP worker is) answers correctly right
  after another process enrolls a person and right after it removes one, with no restart, on SQLite and on
  PostgreSQL.
- The wheel, installed into a fresh virtual environment outside the checkout, creates its own database
  (migrations inside the package) and enrolls / verifies from there, writing nothing into the package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from conftest import REPO, lfw_image, run_cli

# The long-lived identifier: one engine, one line of JSON per photo read from stdin.
IDENTIFIER = """
import json, sys
from facerec.api import FaceRec
fr = FaceRec(db=sys.argv[1], index=sys.argv[2])
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    faces = fr.identify(line.strip()).faces
    print(json.dumps({"name": faces[0].name, "score": faces[0].score, "reason": faces[0].reason}), flush=True)
"""


class Identifier:
    def __init__(self, db_url: str, index: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", IDENTIFIER, db_url, str(index)], cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert json.loads(self.proc.stdout.readline())["ready"]

    def identify(self, path: Path) -> dict:
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the identifier process died"
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


def test_long_lived_identifier_sees_other_processes_enroll_and_remove(db_url, tmp_path, lfw):
    """The issue's report, as a test: a kiosk process said 'unknown' after an admin enrolled Tony Blair."""
    admin_index, kiosk_index = tmp_path / "admin.faiss", tmp_path / "kiosk.faiss"  # an index per process
    admin = lambda *args: run_cli("--db", db_url, "--index", str(admin_index), *args)  # noqa: E731
    assert admin("db", "upgrade").returncode == 0
    for person in ("Colin_Powell", "Hugo_Chavez"):
        assert admin("enroll", person.replace("_", " "), str(lfw_image(lfw, person, 1))).returncode == 0
    kiosk = Identifier(db_url, kiosk_index)
    try:
        probe = lfw_image(lfw, "Tony_Blair", 2)
        assert kiosk.identify(probe)["name"] == "unknown"
        assert kiosk.identify(lfw_image(lfw, "Colin_Powell", 2))["name"] == "Colin Powell"

        enrolled = admin("enroll", "Tony Blair", str(lfw_image(lfw, "Tony_Blair", 1)))
        assert enrolled.returncode == 0, enrolled.stderr
        answer = kiosk.identify(probe)
        assert answer["name"] == "Tony Blair", answer  # the next decision, no restart

        assert admin("remove", "Tony Blair").returncode == 0
        answer = kiosk.identify(probe)
        assert answer["name"] == "unknown" and answer["reason"] == "below_threshold", answer
        assert kiosk.identify(lfw_image(lfw, "Hugo_Chavez", 2))["name"] == "Hugo Chavez"
    finally:
        kiosk.close()


def _copy_source(dest: Path) -> Path:
    """The checkout without its virtual environment, caches and git data (the wheel is built from this)."""
    ignore = shutil.ignore_patterns(".venv", ".git", "pack", "build", "*.egg-info", "__pycache__", ".pytest_cache",
                                    ".import_linter_cache", "*.db", "*.faiss", "out")
    return Path(shutil.copytree(REPO, dest, symlinks=True, ignore=ignore))


def test_wheel_installs_outside_the_checkout_and_creates_its_database(tmp_path, lfw):
    source = _copy_source(tmp_path / "src")
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            str(source), "-w", str(wheels)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next(wheels.glob("facerec-*.whl"))

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)  # its own pip: the console script runs its own python
    python = env_dir / "bin" / "python"
    site = Path(subprocess.check_output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    # facerec's dependencies come from the test environment (a .pth path: its editable facerec is not loaded)
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "torch").is_dir())
    (site / "deps.pth").write_text(f"{deps}\n")
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    package = site / "facerec"
    assert (package / "migrations" / "env.py").is_file() and (package / "cli" / "__init__.py").is_file()
    assert not (site / "cli.py").exists()  # no top-level module named `cli`
    before = sorted(str(p.relative_to(package)) for p in package.rglob("*") if "__pycache__" not in p.parts)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEREC_")}
    env.update(FACEREC_HOME=str(work / "home"), PYTHONNOUSERSITE="1")
    facerec = [str(env_dir / "bin" / "facerec")]
    where = subprocess.run([str(python), "-c", "import facerec; print(facerec.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True)
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(facerec + list(args), cwd=work, env=env, capture_output=True, text=True, timeout=300)

    enrolled = run("enroll", "Colin Powell", str(lfw_image(lfw, "Colin_Powell", 1)), "--json")
    assert enrolled.returncode == 0, enrolled.stderr
    assert (work / "home" / "facerec.db").is_file()
    verified = run("verify", "Colin Powell", str(lfw_image(lfw, "Colin_Powell", 2)), "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["match"] is True, verified.stderr
    after = sorted(str(p.relative_to(package)) for p in package.rglob("*") if "__pycache__" not in p.parts)
    assert after == before  # nothing written into the installed package


@pytest.mark.parametrize("module", ["facerec.cli", "facerec.api"])
def test_no_model_or_torch_at_import(module):
    """Importing the engine or the CLI loads no model and no torch (a `facerec list` never needs them)."""
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
