"""The HTTP service against real `facerec serve` processes (uvicorn) on a real PostgreSQL database, with httpx
and LFW photos: every route, the bad inputs, keys and their scopes, and two server processes on one
database seeing each other's enrollments and removals at their next request."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, lfw_image, need

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

pytestmark = pytest.mark.postgres
ROUTES_HIT: set[tuple[str, str]] = set()  # (method, path template) this module calls; checked against OpenAPI


@pytest.fixture(scope="module")
def pg_module_url():
    """A fresh PostgreSQL database for this module's servers (dropped afterwards)."""
    admin_url = os.environ.get("FACEREC_TEST_PG_URL")
    need(bool(admin_url), "no PostgreSQL server: set FACEREC_TEST_PG_URL (.ci/run starts one)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"facerec_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `python cli.py serve` process (its own uvicorn, engine and index) on the shared database."""

    def __init__(self, db: str, home: Path, *options: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / f"server-{self.port}.log"
        env = {**os.environ, "FACEREC_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "cli.py"), "--db", db, "serve", "--port", str(self.port), *options],
            cwd=REPO, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 150) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            assert self.process.poll() is None, f"server exited: {self.log.read_text()[-2000:]}"
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"server not ready after {timeout} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def keys(pg_module_url):
    from facerec.api import FaceRec, Settings, upgrade_database

    settings = Settings.resolve(db=pg_module_url)
    upgrade_database(settings)
    with FaceRec(settings) as fr:
        ring = fr.keys
        made = {
            "admin": ring.create("tests admin", ["recognize", "enroll", "admin"])[1],
            "recognize": ring.create("kiosk", ["recognize"])[1],
            "enroll": ring.create("reception", ["enroll"])[1],
            "other_gallery": ring.create("lobby app", ["recognize"], ["lobby"])[1],
            "expired": ring.create("old", ["recognize"], expires_in=timedelta(seconds=-1))[1],
            "revoked": ring.create("lost laptop", ["recognize"])[1],
            "lockout": ring.create("guessed", ["recognize"])[1],
            "rate": ring.create("busy", ["recognize"])[1],
            "rotate": ring.create("rotated", ["recognize"])[1],
        }
        ring.revoke(made["revoked"].split("_")[1])
    return made


@pytest.fixture(scope="module")
def servers(pg_module_url, keys, tmp_path_factory):
    """Two server processes on one database: A (body limit 2 MB) and B (rate limit 2/s, burst 30 — room for the
    functional tests' calls, however fast the machine; 3 refused keys per client address)."""
    home = tmp_path_factory.mktemp("serve")
    a = Server(pg_module_url, home, "--gallery", "office", "--max-body-mb", "2")
    b = Server(pg_module_url, home, "--gallery", "office", "--rate", "2", "--burst", "30", "--auth-failures", "3")
    try:
        a.wait_ready()
        b.wait_ready()
        yield a, b
    finally:
        a.stop()
        b.stop()
    assert not list((home / "index").glob("*.worker-*")), "worker index files left behind"


def call(server: Server, method: str, route: str, key: str | None = None, path: str | None = None, **kw):
    """One request; `route` is the path template (recorded for the every-route check), `path` the real one."""
    ROUTES_HIT.add((method.lower(), route))
    headers = kw.pop("headers", {}) | ({"x-api-key": key} if key else {})
    return httpx.request(method, server.url + (path or route), headers=headers, timeout=120, **kw)


def photo(lfw: Path, name: str, number: int) -> bytes:
    return lfw_image(lfw, name, number).read_bytes()


def blank_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((160, 160, 3), 120, dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def test_health_ready_and_startup(servers):
    a, _ = servers
    health = call(a, "GET", "/health").json()
    assert health["status"] == "ok" and health["model"]["id"] and health["model"]["version"]
    assert health["startup_seconds"] > 0
    assert call(a, "GET", "/ready").json()["ready"] is True


def test_enroll_on_one_server_identify_on_the_other(servers, keys, lfw):
    a, b = servers
    admin = keys["admin"]
    r = call(a, "POST", "/v1/subjects/{name}/faces", admin, "/v1/subjects/Colin Powell/faces",
             files=[("images", ("cp1.jpg", photo(lfw, "Colin_Powell", 1))),
                    ("images", ("cp2.jpg", photo(lfw, "Colin_Powell", 2)))])
    assert r.status_code == 201, r.text
    assert r.json()["added"] == 2 and all(isinstance(i, int) for i in r.json()["template_ids"])
    # base64 JSON input on the other server: enrolled there, seen here at the next request
    r = call(b, "POST", "/v1/subjects/{name}/faces", admin, "/v1/subjects/Tony Blair/faces",
             json={"images": [base64.b64encode(photo(lfw, "Tony_Blair", 1)).decode()]})
    assert r.status_code == 201, r.text

    r = call(b, "POST", "/v1/identify", keys["recognize"], files={"image": photo(lfw, "Colin_Powell", 3)},
             data={"top_k": "2"})
    assert r.status_code == 200, r.text
    face = r.json()["faces"][0]
    assert face["decision"] == "match" and face["name"] == "Colin Powell"
    assert face["score"] >= face["threshold"] and face["threshold_source"]
    assert face["margin"] > 0 and [c["name"] for c in face["candidates"]] == ["Colin Powell", "Tony Blair"]
    assert face["model"]["id"] == r.json()["model"]["id"] and face["liveness"] is None

    r = call(a, "POST", "/v1/identify", keys["recognize"],
             json={"image": base64.b64encode(photo(lfw, "Tony_Blair", 2)).decode()})
    assert r.json()["faces"][0]["name"] == "Tony Blair"
    # someone never enrolled is unknown (with their nearest candidate's score, not a forced match)
    r = call(a, "POST", "/v1/identify", keys["recognize"], files={"image": photo(lfw, "Aaron_Eckhart", 1)})
    face = r.json()["faces"][0]
    assert face["decision"] == "unknown" and face["name"] == "unknown" and face["reason"] == "below_threshold"
    assert face["score"] < face["threshold"]


def test_verify_compare_detect_calibration(servers, keys, lfw):
    a, _ = servers
    key = keys["recognize"]
    r = call(a, "POST", "/v1/verify", key, files={"image": photo(lfw, "Colin_Powell", 4)},
             data={"subject": "Colin Powell"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["decision"] == "match" and body["match"] and body["margin"] > 0
    assert body["candidates"][0]["name"] == "Tony Blair" and body["model"]["id"]
    r = call(a, "POST", "/v1/verify", key, files={"image": photo(lfw, "Tony_Blair", 3)},
             data={"subject": "Colin Powell"})
    assert r.json()["decision"] == "unknown" and r.json()["reason"] == "below_threshold"
    assert r.json()["margin"] < 0  # Tony Blair is enrolled and scores higher than the claim

    r = call(a, "POST", "/v1/compare", key, files={"image_a": photo(lfw, "George_W_Bush", 1),
                                                  "image_b": photo(lfw, "George_W_Bush", 2)})
    assert r.json()["decision"] == "match" and r.json()["threshold_source"]
    r = call(a, "POST", "/v1/detect", key, files={"image": photo(lfw, "George_W_Bush", 1)})
    assert len(r.json()["faces"]) >= 1 and len(r.json()["faces"][0]["landmarks"]) == 5

    # liveness when asked: the presentation-attack detector's verdict on every face (a spoof would be unknown)
    r = call(a, "POST", "/v1/identify", key, files={"image": photo(lfw, "Colin_Powell", 4)}, data={"liveness": "true"})
    face = r.json()["faces"][0]
    assert {"is_live", "score", "threshold"} <= set(face["liveness"])
    assert face["decision"] == ("match" if face["liveness"]["is_live"] else "unknown")

    cal = call(a, "GET", "/v1/calibration", key).json()
    assert cal["verification"]["threshold"] > 0 and cal["verification"]["source"]
    assert cal["calibrated"] == {"verification": False, "identification": False}
    assert "Colin Powell" in [s["name"] for s in call(a, "GET", "/v1/subjects", key).json()["subjects"]]


def test_rename_and_delete_reach_the_other_server(servers, keys, lfw):
    a, b = servers
    admin = keys["admin"]
    call(a, "POST", "/v1/subjects/{name}/faces", admin, "/v1/subjects/Gerhard Schroeder/faces",
         files={"images": photo(lfw, "Gerhard_Schroeder", 1)}).raise_for_status()
    r = call(a, "PATCH", "/v1/subjects/{name}", admin, "/v1/subjects/Gerhard Schroeder", json={"name": "G. Schroeder"})
    assert r.status_code == 200 and r.json()["templates"] == 1
    r = call(b, "POST", "/v1/identify", admin, files={"image": photo(lfw, "Gerhard_Schroeder", 2)})
    assert r.json()["faces"][0]["name"] == "G. Schroeder"
    assert call(b, "DELETE", "/v1/subjects/{name}", admin, "/v1/subjects/G. Schroeder").json()["removed_templates"] == 1
    r = call(a, "POST", "/v1/identify", admin, files={"image": photo(lfw, "Gerhard_Schroeder", 2)})
    assert r.json()["faces"][0]["decision"] == "unknown"
    events = call(a, "GET", "/v1/audit", admin, params={"person": "G. Schroeder", "limit": 5}).json()["events"]
    assert [e["action"] for e in events][:2] == ["remove", "rename"]
    assert events[0]["details"]["actor"]["api_key"] == admin.split("_")[1]


def test_compreface_client(servers, keys, lfw):
    """What the CompreFace SDK sends: x-api-key, `file` uploads, subject as a query parameter."""
    a, b = servers
    admin = keys["admin"]
    r = call(a, "POST", "/api/v1/recognition/faces", admin, params={"subject": "Jennifer Aniston"},
             files={"file": ("ja.jpg", photo(lfw, "Jennifer_Aniston", 1), "image/jpeg")})
    assert r.status_code == 201, r.text
    image_id = r.json()["image_id"]
    assert r.json()["subject"] == "Jennifer Aniston" and image_id.isdigit()
    r = call(b, "POST", "/api/v1/recognition/recognize", admin, params={"prediction_count": 2},
             json={"file": base64.b64encode(photo(lfw, "Jennifer_Aniston", 2)).decode()})
    result = r.json()["result"][0]
    assert result["subjects"][0]["subject"] == "Jennifer Aniston" and {"x_min", "y_max"} <= set(result["box"])
    assert result["facerec"]["decision"] == "match"
    r = call(b, "POST", "/api/v1/recognition/recognize", admin, files={"file": photo(lfw, "Aaron_Eckhart", 1)})
    assert r.json()["result"][0]["subjects"] == []  # nobody above the threshold: no forced nearest subject
    listed = call(a, "GET", "/api/v1/recognition/faces", admin, params={"subject": "Jennifer Aniston"}).json()
    assert listed["faces"] == [{"image_id": image_id, "subject": "Jennifer Aniston"}] and listed["total_elements"] == 1
    assert "Jennifer Aniston" in call(a, "GET", "/api/v1/recognition/subjects", admin).json()["subjects"]
    r = call(a, "PUT", "/api/v1/recognition/subjects/{subject}", admin, "/api/v1/recognition/subjects/Jennifer Aniston",
             json={"subject": "J. Aniston"})
    assert r.json() == {"updated": True}
    r = call(a, "POST", "/api/v1/detection/detect", admin, files={"file": photo(lfw, "Jennifer_Aniston", 3)})
    assert r.json()["result"][0]["box"]["probability"] > 0.9
    r = call(a, "POST", "/api/v1/verification/verify", admin,
             files={"source_image": photo(lfw, "Jennifer_Aniston", 3), "target_image": photo(lfw, "Jennifer_Aniston", 4)})
    assert r.json()["result"][0]["face_matches"][0]["similarity"] > 0.4
    r = call(a, "POST", "/api/v1/recognition/faces", admin, params={"subject": "J. Aniston"},
             files={"file": photo(lfw, "Jennifer_Aniston", 5)})
    second = r.json()["image_id"]
    r = call(b, "DELETE", "/api/v1/recognition/faces/{image_id}", admin, f"/api/v1/recognition/faces/{image_id}")
    assert r.json() == {"image_id": image_id, "subject": "J. Aniston"}
    assert call(a, "DELETE", "/api/v1/recognition/faces", admin, params={"subject": "J. Aniston"}).json() == {"deleted": 1}
    call(a, "POST", "/api/v1/recognition/faces", admin, params={"subject": "J. Aniston"},
         files={"file": photo(lfw, "Jennifer_Aniston", 5)}).raise_for_status()
    r = call(a, "DELETE", "/api/v1/recognition/subjects/{subject}", admin, "/api/v1/recognition/subjects/J. Aniston")
    assert r.json() == {"subject": "J. Aniston"} and second
    r = call(a, "POST", "/api/v1/recognition/recognize", admin, files={"file": blank_jpeg()})
    assert r.status_code == 422 and r.json()["code"] == 422 and r.json()["message"]  # CompreFace's error shape


def test_deepstack_client(servers, keys, lfw):
    """What Double Take / Home Assistant send: form fields, the key as `api_key`, userid 'unknown' for nobody."""
    a, b = servers
    admin = keys["admin"]
    r = call(a, "POST", "/v1/vision/face/register", data={"userid": "Hugo Chavez", "api_key": admin},
             files={"image1": photo(lfw, "Hugo_Chavez", 1), "image2": photo(lfw, "Hugo_Chavez", 2)})
    assert r.json()["success"] is True and r.json()["added"] == 2, r.text
    r = call(b, "POST", "/v1/vision/face/recognize", data={"api_key": admin}, files={"image": photo(lfw, "Hugo_Chavez", 3)})
    prediction = r.json()["predictions"][0]
    assert prediction["userid"] == "Hugo Chavez" and prediction["confidence"] > 0.4 and "x_max" in prediction
    r = call(b, "POST", "/v1/vision/face/recognize", data={"api_key": admin, "min_confidence": "0.99"},
             files={"image": photo(lfw, "Hugo_Chavez", 3)})
    assert r.json()["predictions"][0]["userid"] == "unknown"  # min_confidence can only make it stricter
    r = call(b, "POST", "/v1/vision/face/recognize", data={"api_key": admin}, files={"image": photo(lfw, "Aaron_Eckhart", 1)})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0] == r.json()["predictions"][0] | {"userid": "unknown", "confidence": 0.0}
    assert "Hugo Chavez" in call(a, "POST", "/v1/vision/face/list", admin).json()["faces"]
    r = call(a, "POST", "/v1/vision/face", admin, files={"image": photo(lfw, "Hugo_Chavez", 3)})
    assert r.json()["predictions"][0]["confidence"] > 0.9
    r = call(a, "POST", "/v1/vision/face/match", admin, files={"image1": photo(lfw, "Hugo_Chavez", 3),
                                                              "image2": photo(lfw, "Hugo_Chavez", 4)})
    assert r.json()["success"] and r.json()["facerec"]["decision"] == "match"
    r = call(a, "POST", "/v1/vision/face/register", admin, data={"userid": "unknown"},
             files={"image1": photo(lfw, "Hugo_Chavez", 5)})
    assert r.status_code == 400 and r.json()["success"] is False and r.json()["error"] == "bad_name"
    assert call(a, "POST", "/v1/vision/face/delete", admin, data={"userid": "Hugo Chavez"}).json() == {"success": True}
    r = call(b, "POST", "/v1/vision/face/recognize", admin, files={"image": photo(lfw, "Hugo_Chavez", 3)})
    assert r.json()["predictions"][0]["userid"] == "unknown"


@pytest.mark.parametrize("which, status, code", [
    (None, 401, "unauthorized"), ("frk_000000000000_" + "x" * 43, 401, "unauthorized"),
    ("enroll", 403, "forbidden"), ("other_gallery", 403, "forbidden"), ("expired", 401, "unauthorized"),
    ("revoked", 401, "unauthorized"),
])
def test_keys_refused(servers, keys, which, status, code):
    a, _ = servers
    r = call(a, "GET", "/v1/subjects", keys.get(which, which))
    assert (r.status_code, r.json()["error"]) == (status, code), r.text
    assert "Traceback" not in r.text


def test_scope_of_recognize_key_stops_enroll_and_admin(servers, keys, lfw):
    a, _ = servers
    r = call(a, "POST", "/v1/subjects/{name}/faces", keys["recognize"], "/v1/subjects/X/faces",
             files={"images": photo(lfw, "Colin_Powell", 5)})
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")
    r = call(a, "GET", "/v1/audit", keys["enroll"])
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")


def test_wrong_secrets_lock_the_key(servers, keys):
    a, b = servers
    key_id = keys["lockout"].split("_")[1]
    for _ in range(5):
        assert call(a, "GET", "/v1/subjects", f"frk_{key_id}_{'w' * 43}").status_code == 401
    r = call(b, "GET", "/v1/subjects", keys["lockout"])  # the right secret, on the other server: still locked
    assert (r.status_code, r.json()["error"]) == (423, "key_locked")


def test_rotation_ends_the_old_token(servers, keys, pg_module_url):
    from facerec.api import FaceRec, Settings

    a, _ = servers
    with FaceRec(Settings.resolve(db=pg_module_url)) as fr:
        _, token = fr.keys.rotate(keys["rotate"].split("_")[1])
    assert call(a, "GET", "/v1/subjects", keys["rotate"]).status_code == 401
    assert call(a, "GET", "/v1/subjects", token).status_code == 200


def test_rate_limit(servers, keys):
    _, b = servers  # 2 requests/s, burst 30: the burst passes; 60 calls outrun the refill unless they took > 15 s
    start = time.monotonic()
    codes = [call(b, "GET", "/v1/subjects", keys["rate"]).status_code for _ in range(60)]
    allowed = 30 + 2 * (time.monotonic() - start) + 1
    assert codes[:30] == [200] * 30 and set(codes) <= {200, 429}
    assert (429 in codes) or (60 <= allowed), codes
    r = call(b, "GET", "/v1/subjects", keys["rate"])
    assert r.status_code != 429 or r.json()["error"] == "rate_limited"


def test_bad_inputs(servers, keys, lfw):
    a, _ = servers
    key = keys["admin"]
    jpeg = photo(lfw, "Colin_Powell", 6)
    cases = [
        (dict(files={"image": jpeg[: len(jpeg) // 2]}), 422, "bad_image"),  # truncated JPEG
        (dict(files={"image": b"GIF89a not really"}), 422, "bad_image"),
        (dict(files={"image": blank_jpeg()}), 200, None),  # identify: no face is an empty answer, not an error
        (dict(json={"image": "@@not base64@@"}), 422, "bad_image"),
        (dict(json=["not", "an", "object"]), 400, "usage"),
        (dict(content=b"{", headers={"content-type": "application/json"}), 400, "usage"),
        (dict(json={"top_k": 2}), 400, "usage"),  # no image
        (dict(files={"image": jpeg}, data={"top_k": "999"}), 400, "usage"),
        (dict(files={"image": b"\0" * (3 * 1024 * 1024)}), 413, "too_large"),  # over the 2 MB limit
        (dict(content=(b"\0" * 65536 for _ in range(40)),  # streamed without a length: counted as it comes
              headers={"content-type": "application/octet-stream"}), 413, "too_large"),
    ]
    for kwargs, status, code in cases:
        r = call(a, "POST", "/v1/identify", key, **kwargs)
        assert r.status_code == status, (kwargs.keys(), r.text)
        if code:
            assert r.json()["error"] == code and r.json()["message"] and "Traceback" not in r.text
    assert call(a, "POST", "/v1/identify", key, files={"image": blank_jpeg()}).json()["faces"] == []
    r = call(a, "POST", "/v1/verify", key, files={"image": blank_jpeg()}, data={"subject": "Colin Powell"})
    assert (r.status_code, r.json()["error"]) == (422, "no_face")
    r = call(a, "POST", "/v1/subjects/{name}/faces", key, "/v1/subjects/Nobody/faces", files={"images": blank_jpeg()})
    assert (r.status_code, r.json()["error"]) == (422, "no_face")
    r = call(a, "POST", "/v1/verify", key, files={"image": jpeg}, data={"subject": "Never Enrolled"})
    assert (r.status_code, r.json()["error"]) == (404, "unknown_person")
    r = call(a, "POST", "/v1/subjects/{name}/faces", key, "/v1/subjects/Impostor/faces",
             files={"images": photo(lfw, "Colin_Powell", 7)})
    assert (r.status_code, r.json()["error"]) == (409, "duplicate_identity")
    r = call(a, "DELETE", "/v1/subjects/{name}", key, "/v1/subjects/Never Enrolled")
    assert (r.status_code, r.json()["error"]) == (404, "unknown_person")
    assert call(a, "GET", "/no/such/route").json()["error"] == "not_found"


def test_guessing_keys_blocks_the_address(servers, keys):
    """Runs after every other use of server B: keys guessed from one address (unknown ids cannot be locked)."""
    _, b = servers
    guesses = [call(b, "GET", "/v1/subjects", f"frk_{uuid.uuid4().hex[:12]}_{'g' * 43}").status_code for _ in range(5)]
    assert guesses[0] == 401 and guesses[-1] == 429 and set(guesses) == {401, 429}  # after at most 3 refusals
    r = call(b, "GET", "/v1/subjects", keys["admin"])  # even a right key, from that address, for a while
    assert (r.status_code, r.json()["error"]) == (429, "rate_limited")


def test_every_route_called_and_openapi_committed(servers):
    """Runs last: every route of the served schema was exercised above, and openapi.json is current."""
    a, _ = servers
    served = httpx.get(f"{a.url}/openapi.json").json()
    routes = {(m, p) for p, ops in served["paths"].items() for m in ops}
    assert routes - ROUTES_HIT == set()
    committed = json.loads((REPO / "openapi.json").read_text())
    assert committed == served, "openapi.json is stale: python cli.py serve openapi > openapi.json"
