"""The door-access kiosk on replays of real frames (LFW photos of one person as a visit, NUAA webcam frames).

One gallery (13 LFW people enrolled from one photo each, one NUAA subject enrolled from a live session-01
frame) with a real `calibrate-identification` on photos of other LFW people; one replay of five visits
through the kiosk with its MQTT (a real mosquitto broker) and command actions; a real second process removes
a person during the run. The NUAA visits are session 03 (never seen by the liveness model's training).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import REPO, need, run_cli
from facerec.api import AuditPolicy, FaceRec, Settings
from facerec.kiosk.actions import CommandAction, Dispatcher, HttpAction, MqttAction
from facerec.kiosk.decide import Visit, VisitPolicy, Vote, judge
from facerec.kiosk.loop import Kiosk, KioskError
from facerec.kiosk.sources import FolderSource

NUAA_SUBJECT = "0004"  # the first subject with live and printed-photo frames in session 03 (held out)
MIN_PHOTOS = 5


def _people(lfw: Path) -> list[str]:
    """LFW people with at least MIN_PHOTOS photos, in name order (a fixed, unselected list)."""
    return sorted(p.name for p in lfw.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= MIN_PHOTOS)


def _visit(folder: Path, frames: list[Path]) -> Path:
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        os.symlink(frame, folder / f"{i:03d}{frame.suffix}")
    return folder


def _nuaa(nuaa: Path, kind: str, session: str) -> dict[str, list[Path]]:
    """One subject's frames of one session by recording (NUAA's `pos` field), each in recording order.

    A recording's frames are about a second apart; different recordings are different takes (a new visit).
    """
    recordings: dict[str, list[Path]] = {}
    for p in sorted((nuaa / kind / NUAA_SUBJECT).glob("*.jpg"), key=lambda p: int(p.stem.split("_")[4])):
        _, _, pos, sess, _ = p.stem.split("_")
        if sess == session:
            recordings.setdefault(pos, []).append(p)
    return dict(sorted(recordings.items()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def broker():
    """A real mosquitto: the one .ci/run starts (FACEREC_TEST_MQTT_URL), else our own on a free loopback port."""
    url = os.environ.get("FACEREC_TEST_MQTT_URL")
    if url:
        yield int(url.rsplit(":", 1)[1])
        return
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    need(binary is not None, "mosquitto not installed (apt-get install mosquitto; .ci/run does)")
    port = _free_port()
    proc = subprocess.Popen([binary, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def door_controller():
    """A real HTTP server on loopback that records the JSON bodies POSTed to it."""
    bodies: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/door", bodies
    server.shutdown()


@pytest.fixture(scope="module")
def site(tmp_path_factory, data_dir: Path):
    """The gallery, its identification calibration, and the visit folders."""
    lfw, nuaa = data_dir / "faces" / "lfw", data_dir / "liveness" / "nuaa"
    need((lfw / "pairs.txt").is_file() and (nuaa / "ClientRaw").is_dir(), "LFW and NUAA needed")
    root = tmp_path_factory.mktemp("kiosk")
    people = _people(lfw)
    enrolled, stranger = people[:13], people[13]
    db = f"sqlite:///{root / 'door.db'}"
    engine = FaceRec(Settings.resolve(db=db), audit=AuditPolicy.PER_JOB)
    for name in enrolled:
        engine.enroll(name, [lfw / name / f"{name}_0001.jpg"])
    engine.enroll("nuaa_" + NUAA_SUBJECT, [next(iter(_nuaa(nuaa, "ClientRaw", "01").values()))[0]])
    unknowns = root / "unknowns"
    others = [p for p in sorted(d.name for d in lfw.iterdir() if d.is_dir()) if p not in people][:50]
    _visit(unknowns, [lfw / p / f"{p}_0001.jpg" for p in others])
    calibration = engine.calibrate_identification(unknowns, fpir=0.05)
    photos = lambda p, nums: [lfw / p / f"{p}_{n:04d}.jpg" for n in nums]  # noqa: E731
    visits = root / "visits"
    _visit(visits / "1_enrolled", photos(enrolled[0], range(2, 6)))
    _visit(visits / "2_removed", photos(enrolled[0], range(2, 6)))
    _visit(visits / "3_stranger", photos(stranger, range(1, 5)))
    camera = root / "nuaa"  # session 03: the live recording, then every printed-photo recording, one visit each
    for pos, frames in _nuaa(nuaa, "ClientRaw", "03").items():
        _visit(camera / f"1_live_{pos}", frames)
    for pos, frames in _nuaa(nuaa, "ImposterRaw", "03").items():
        _visit(camera / f"2_print_{pos}", frames)
    engine.close()
    return {"db": db, "root": root, "visits": visits, "nuaa": camera, "enrolled": enrolled, "stranger": stranger,
            "calibration": calibration}


@pytest.fixture(scope="module")
def replay(site, broker, door_controller):
    """One kiosk run over the five visits, with MQTT and command actions; removes the first person (in a
    second process) as soon as they are granted."""
    import paho.mqtt.client as mqtt

    received: list[dict] = []
    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="kiosk-test")
    sub.on_connect = lambda c, *_: c.subscribe("facerec/door1/decision", qos=1)
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.on_message = lambda _c, _u, msg: received.append(json.loads(msg.payload))
    sub.connect("127.0.0.1", broker)
    sub.loop_start()
    assert subscribed.wait(10)
    out_file = site["root"] / "command_out.jsonl"
    script = f"import sys; open({str(out_file)!r}, 'a').write(sys.stdin.read().strip() + '\\n')"
    url, posted = door_controller
    actions = [MqttAction(f"mqtt://127.0.0.1:{broker}", "door1", timeout_s=5),
               CommandAction(f"{sys.executable} -c \"{script}\"", timeout_s=30), HttpAction(url, timeout_s=5)]
    decisions: list[dict] = []
    removal: list[subprocess.CompletedProcess] = []

    def on_decision(d: dict) -> None:
        decisions.append(d)
        if d.get("unlock") and d["name"] == site["enrolled"][0] and not removal:
            removal.append(run_cli("--db", site["db"], "remove", site["enrolled"][0]))

    engine = FaceRec(Settings.resolve(db=site["db"]), audit=AuditPolicy.PER_JOB)
    # LFW photos are press photos, not camera frames: liveness is tested on the NUAA webcam frames below
    kiosk = Kiosk(engine, FolderSource(site["visits"]), "door1", dispatcher=Dispatcher(actions),
                  on_decision=on_decision, liveness=False)
    summary = kiosk.run()
    deadline = time.time() + 10
    while len(received) < len(decisions) and time.time() < deadline:
        time.sleep(0.1)
    sub.loop_stop()
    sub.disconnect()
    audit = engine.audit_events(limit=50)
    engine.close()
    commands = [json.loads(line) for line in out_file.read_text().splitlines()] if out_file.exists() else []
    return {"decisions": decisions, "summary": summary, "mqtt": received, "commands": commands,
            "posted": list(posted), "removal": removal, "audit": audit}


@pytest.fixture(scope="module")
def nuaa_replay(site):
    """The NUAA subject at the door: live, then holding up printed photos of themselves (liveness on; the
    lockout is set high so that every printed-photo recording gets its own decision)."""
    decisions: list[dict] = []
    engine = FaceRec(Settings.resolve(db=site["db"]), audit=AuditPolicy.PER_JOB)
    Kiosk(engine, FolderSource(site["nuaa"]), "door-nuaa", VisitPolicy.load(lockout_after=100),
          on_decision=decisions.append, require_liveness=True).run()
    audit = engine.audit_events(limit=50)
    engine.close()
    return {"decisions": decisions, "audit": audit}


def _by_visit(replay) -> list[dict]:
    return [d for d in replay["decisions"] if d["event"] == "decision"]


def test_enrolled_person_is_granted(site, replay):
    first = _by_visit(replay)[0]
    assert (first["decision"], first["unlock"], first["name"]) == ("grant", True, site["enrolled"][0])
    assert first["score"] >= first["threshold"] == pytest.approx(site["calibration"].threshold, abs=1e-4)
    assert first["margin"] >= first["min_margin"] and len(first["frames"]) >= first["k"]
    assert first["threshold_source"].startswith("calibration #") and "identification" in first["threshold_source"]


def test_person_removed_by_another_process_is_denied_from_next_visit(site, replay):
    assert replay["removal"] and replay["removal"][0].returncode == 0, replay["removal"]
    second = _by_visit(replay)[1]
    assert (second["decision"], second["unlock"], second["reason"]) == ("deny", False, "unknown")
    assert second["candidate"] != site["enrolled"][0]


def test_stranger_is_denied_as_unknown(replay):
    third = _by_visit(replay)[2]
    assert (third["decision"], third["reason"], third["name"]) == ("deny", "unknown", "unknown")


def _nuaa_decisions(nuaa_replay) -> tuple[list[dict], list[dict]]:
    """Decisions about the subject (a background face may make a visit of its own: never granted)."""
    subject = [d for d in _by_visit(nuaa_replay) if d["candidate"] == "nuaa_" + NUAA_SUBJECT]
    live = [d for d in subject if d["first_frame"] < 15]  # the live recording is the first 15 frames
    return live, [d for d in subject if d["first_frame"] >= 15]


def test_live_nuaa_subject_is_granted(nuaa_replay):
    live, _ = _nuaa_decisions(nuaa_replay)
    assert [(d["decision"], d["name"]) for d in live] == [("grant", "nuaa_" + NUAA_SUBJECT)], live
    assert live[0]["liveness"]["score"] >= live[0]["liveness"]["threshold"]


def test_printed_photo_of_enrolled_subject_is_denied_as_spoof(nuaa_replay):
    _, prints = _nuaa_decisions(nuaa_replay)
    assert prints, "no decision about the printed photos"
    assert all(d["reason"] == "spoof" for d in prints), [(d["decision"], d["reason"], d["liveness"]) for d in prints]
    assert not any(d["unlock"] for d in _by_visit(nuaa_replay) if d["first_frame"] >= 15)


def test_actions_and_audit_hold_every_decision(replay, nuaa_replay):
    decisions = _by_visit(replay)
    assert len(decisions) == 3 and replay["summary"]["visits"] == 3
    by_id = lambda items: sorted(items, key=lambda d: d["visit"])  # noqa: E731 (actions run concurrently)
    assert by_id(replay["mqtt"]) == by_id(decisions)  # the broker delivered each decision's exact JSON
    assert by_id(replay["commands"]) == by_id(decisions)  # the command got each decision on stdin
    assert by_id(replay["posted"]) == by_id(decisions)  # and the HTTP door controller each as a POST body
    events = [e for e in nuaa_replay["audit"] if e["action"] == "kiosk"]  # the later run's audit has both
    every = decisions + _by_visit(nuaa_replay)
    assert len(events) == len(every)  # one audit event per visit decision, not per frame
    by_visit = {(e["details"]["camera"], e["details"]["visit"]): e for e in events}
    for d in every:
        e = by_visit[(d["camera"], d["visit"])]
        assert e["outcome"] == ("grant" if d["unlock"] else d["reason"])
        assert e["details"]["frames"] == d["frames"] and e["details"]["model_version"] == d["model_version"]
        assert e["details"]["margin"] == d["margin"] and e["details"]["latency_ms"] == d["latency_ms"]
        assert e["person"] == (d["name"] if d["unlock"] else None)
    assert any(e["action"] == "kiosk_session" for e in replay["audit"])


def test_lockout_after_repeated_denials(site):
    """A policy locking after one denial for a minute: the stranger's second visit is not even looked at."""
    visits = site["root"] / "lockout"
    stranger = site["visits"] / "3_stranger"  # 4 frames; decided (unknown) after n = 3
    for i in (1, 2):
        shutil.copytree(stranger, visits / f"{i}", symlinks=True)
    policy = VisitPolicy.load(lockout_after=1, lockout_base_s=60.0)
    engine = FaceRec(Settings.resolve(db=site["db"]), audit=AuditPolicy.PER_JOB)
    events: list[dict] = []
    summary = Kiosk(engine, FolderSource(visits), "door2", policy, liveness=False,
                    on_decision=events.append).run()
    engine.close()
    assert [e["event"] for e in events] == ["decision", "lockout"]
    # skipped: the first visit's frames after its decision and all 4 of the second visit
    assert summary["frames_skipped_locked"] == 8 - (events[0]["decided_at_frame"] + 1) >= 4
    assert summary["decisions"] == {"unknown": 1}


def test_cooldown_and_judge_rules():
    """The decision rule itself: k agreeing votes with margin grant; a failing active check is a spoof."""
    policy = VisitPolicy.load(k=2, n=3, margin=0.05)

    def visit(votes, active=None) -> Visit:
        v = Visit(1, 0.0, 0, active=active)
        v.votes.extend(votes)
        return v

    ok = [Vote(i, "ada", 0.8, 0.3, True, 0.9) for i in range(2)]
    assert judge(visit(ok), policy, 0.5, 1.0).decision == "grant"
    assert judge(visit(ok), policy, 0.95, 1.0).reason == "spoof"  # mean P(live) 0.9 under 0.95

    class Challenge:
        passed = None

        def update(self, landmarks, frame_id) -> None:
            pass

    waiting = Challenge()
    assert judge(visit(ok, waiting), policy, None, 1.0) is None  # waits for the active check
    waiting.passed = False
    assert judge(visit(ok, waiting), policy, None, 1.0).reason == "spoof"
    split = [Vote(0, "ada", 0.8, 0.3, True, None), Vote(1, "bob", 0.8, 0.3, True, None),
             Vote(2, "cy", 0.2, 0.0, False, None)]
    assert judge(visit(split), policy, None, 1.0).reason == "unknown"
    assert judge(visit(split[:1]), policy, None, policy.timeout_s).reason == "low_quality"


def test_require_liveness_refuses_a_broken_model(site, tmp_path):
    """Fail closed at start: a liveness model whose weights do not match its card is no liveness model."""
    from facerec.models.liveness import LIVENESS_FOLDER, LivenessModel

    broken = tmp_path / "liveness"
    shutil.copytree(LIVENESS_FOLDER, broken)
    weights = next(broken.glob("*.npz"))
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    engine = FaceRec(Settings.resolve(db=site["db"]), audit=AuditPolicy.PER_JOB, liveness=LivenessModel(broken))
    with pytest.raises(KioskError, match="require-liveness"):
        Kiosk(engine, FolderSource(site["visits"]), "door3", require_liveness=True)
    engine.close()


def test_cli_streams_json_and_stops_cleanly_on_sigterm(site):
    """`facerec kiosk --json` as a user runs it: a folder played like a 3 fps camera, stopped by SIGTERM."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "--db", site["db"], "kiosk",
                             str(site["nuaa"] / next(p.name for p in site["nuaa"].iterdir() if p.name.startswith("1_live"))),
                             "--json", "--as-camera", "--fps", "3",
                             "--camera", "front", "--no-liveness"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    first = proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in [first, *rest.splitlines()] if line.strip()]
    assert lines[-1]["event"] == "diagnostics" and lines[-1]["camera"] == "front"
    assert all(line["event"] in ("decision", "diagnostics") for line in lines)
    assert lines[-1]["frames"] < 15  # stopped before the end of the 15 frames


def test_live_source_keeps_newest_frame_and_reconnects(site, tmp_path, caplog):
    """A stream that ends (a camera dropping) is reopened with back-off and said so; a slow consumer gets the
    newest frame, the others are dropped. The "camera" is a real MJPG video of NUAA frames."""
    import cv2

    from facerec.kiosk.sources import LiveSource

    frames = sorted((site["nuaa"]).rglob("*.jpg"))[:10]
    video = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 15, (640, 480))
    for f in frames:
        writer.write(cv2.imread(str(f)))
    writer.release()
    source = LiveSource(str(video), "testcam", reconnect_max_s=1.0)
    got = []
    with caplog.at_level("WARNING", logger="facerec.kiosk"):
        for frame in source.frames():
            got.append(frame)
            time.sleep(0.05)  # a slow loop
            if source.reconnects >= 2 or len(got) > 200:
                break
        source.close()
    assert source.reconnects >= 2 and "stream dropped; reconnecting" in caplog.text and "reconnected" in caplog.text
    assert source.health()["frames_dropped"] > 0  # the grabber outran the loop: old frames were skipped
    assert all(b.id > a.id for a, b in zip(got, got[1:]))  # never an older frame after a newer one


def test_cooldown_evidence_and_diagnostics(site, tmp_path):
    """The same person twice within the cooldown: one unlock, the second visit "ignored" (no action); the
    deciding frames saved only because --save-evidence is given; diagnostics count both visits."""
    live = next(p for p in site["nuaa"].iterdir() if p.name.startswith("1_live"))
    visits = tmp_path / "twice"
    for i in (1, 2):
        shutil.copytree(live, visits / f"{i}", symlinks=True)
    engine = FaceRec(Settings.resolve(db=site["db"]), audit=AuditPolicy.PER_JOB)
    events: list[dict] = []
    summary = Kiosk(engine, FolderSource(visits), "door4", liveness=False, on_decision=events.append,
                    evidence_dir=tmp_path / "evidence").run()
    engine.close()
    subject = [e for e in events if e["candidate"] == "nuaa_" + NUAA_SUBJECT]
    assert [(e["decision"], e["unlock"], e["reason"]) for e in subject] == [("grant", True, ""),
                                                                          ("ignored", False, "cooldown")]
    saved = sorted((tmp_path / "evidence" / "door4").glob("*.jpg"))
    assert sorted(Path(e["evidence"]) for e in events) == saved  # one deciding frame per decision, no more
    assert summary["visits"] >= 2 and summary["usable_visit_share"] > 0
    assert sum(summary["face_size_histogram"].values()) >= 30  # every detected face is counted by size

    # `remove --erase` finds the frames through the audit trail (on a copy: the gallery is shared by the module)
    import facerec.kiosk.evidence  # noqa: F401 - registers the eraser, as `facerec remove --erase` does

    bystander = saved[0].with_name("notes.jpg")
    bystander.write_bytes(b"not the kiosk's")
    copy = tmp_path / "copy.db"
    shutil.copy(site["db"].removeprefix("sqlite:///"), copy)
    with FaceRec(Settings.resolve(db=f"sqlite:///{copy}")) as fr:
        traces = fr.erase("nuaa_" + NUAA_SUBJECT).traces
    theirs = [Path(e["evidence"]) for e in subject]
    assert f"{len(theirs)} kiosk evidence frame(s) deleted" in traces
    assert not any(p.exists() for p in theirs) and bystander.exists()
    assert all(p.exists() for p in saved if p not in theirs)


def test_refuses_a_threshold_not_calibrated_for_identification(site, tmp_path):
    """A fresh gallery has only the model's default (1:1) threshold: the kiosk will not run on it unless told,
    and then stops at --max-frames."""
    engine = FaceRec(Settings.resolve(db=f"sqlite:///{tmp_path / 'fresh.db'}"), audit=AuditPolicy.PER_JOB)
    engine.enroll("nuaa_" + NUAA_SUBJECT, [sorted(site["nuaa"].rglob("*.jpg"))[0]])
    with pytest.raises(KioskError, match="calibrate-identification"):
        Kiosk(engine, FolderSource(site["visits"]), "door5", liveness=False)
    summary = Kiosk(engine, FolderSource(site["visits"]), "door5", liveness=False, allow_uncalibrated=True).run(
        max_frames=2)
    engine.close()
    assert summary["frames"] == 2


def test_active_check_plugs_into_the_visit(site):
    """An active check (the head-turn challenge's interface) is fed the track's landmarks every frame; the
    visit is granted only once it has passed, even though identity agreed earlier."""

    class AfterFrames:  # passes after it has seen four frames of the face: enough to prove the plumbing
        def __init__(self) -> None:
            self.passed: bool | None = None
            self.seen: list[tuple[int, tuple]] = []

        def update(self, landmarks, frame_id: int) -> None:
            self.seen.append((frame_id, landmarks.shape))
            if len(self.seen) >= 4:
                self.passed = True

    checks: list[AfterFrames] = []

    def factory() -> AfterFrames:
        checks.append(AfterFrames())
        return checks[-1]

    live = next(p for p in site["nuaa"].iterdir() if p.name.startswith("1_live"))
    engine = FaceRec(Settings.resolve(db=site["db"]), audit=AuditPolicy.PER_JOB)
    events: list[dict] = []
    Kiosk(engine, FolderSource(live), "door6", liveness=False, active_check=factory, on_decision=events.append).run()
    engine.close()
    grant = next(e for e in events if e["unlock"])
    check = next(c for c in checks if c.passed)
    assert grant["active_check"] is True and grant["decided_at_frame"] == check.seen[3][0]
    assert all(shape == (5, 2) for _, shape in check.seen)
