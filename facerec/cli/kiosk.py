"""`facerec kiosk SOURCE`: the door-access loop on a camera, stream, video or folder of frames.

Parsing, printing and signal handling only; the loop and its safety rules are `facerec.kiosk`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer


def kiosk(
    source: Annotated[str, typer.Argument(help="Camera index (0), rtsp:// or http:// stream, video file, or folder of frames (sub-folders = visits).")],
    camera: Annotated[Optional[str], typer.Option("--camera", help="Camera name for MQTT topics, audit and diagnostics (default: from SOURCE).")] = None,
    detector: Annotated[str, typer.Option("--detector", help="mtcnn, yunet, yunet-half (YuNet on the half-size frame), +onet (landmarks by MTCNN's O-Net); see BENCHMARKS.md.")] = "yunet-half+onet",
    min_face: Annotated[Optional[float], typer.Option("--min-face", min=12, help="Smallest face in pixels to detect (MTCNN gets faster when larger; 80 suits a door).")] = None,
    require_liveness: Annotated[bool, typer.Option("--require-liveness", help="Refuse to start (and so never grant) without a working liveness model.")] = False,
    no_liveness: Annotated[bool, typer.Option("--no-liveness", help="Do not check liveness (attended doors only).")] = False,
    allow_uncalibrated: Annotated[bool, typer.Option("--allow-uncalibrated", help="Run on the 1:1 / default threshold when no `calibrate-identification` is stored (not for real doors).")] = False,
    policy_file: Annotated[Optional[Path], typer.Option("--policy", help="Visit policy JSON (default: facerec/data/kiosk.json).")] = None,
    on_decision: Annotated[Optional[str], typer.Option("--on-decision", help="Command run for every decision with the decision JSON on stdin (no shell).")] = None,
    post_url: Annotated[Optional[str], typer.Option("--post-url", help="POST every decision as JSON to this URL.")] = None,
    mqtt: Annotated[Optional[str], typer.Option("--mqtt", help="Publish every decision to mqtt://host[:port] on <prefix>/<camera>/decision.")] = None,
    mqtt_prefix: Annotated[str, typer.Option("--mqtt-prefix", help="MQTT topic prefix.")] = "facerec",
    action_timeout: Annotated[float, typer.Option("--action-timeout", min=0.1, help="Seconds an action may take before it is abandoned (the loop never waits).")] = 3.0,
    save_evidence: Annotated[Optional[Path], typer.Option("--save-evidence", help="Save the deciding frame of every visit here (no images are kept otherwise).")] = None,
    fps: Annotated[Optional[float], typer.Option("--fps", min=0.1, help="Replay speed for folders and video files (default: as fast as possible).")] = None,
    as_camera: Annotated[bool, typer.Option("--as-camera", help="Play a folder at --fps like a live camera (newest frame only).")] = False,
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", min=1, help="Stop after this many frames.")] = None,
    preview: Annotated[bool, typer.Option("--preview", help="Show a window with boxes, names and decisions (needs a display).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Stream decisions as JSON lines on stdout, diagnostics last.")] = False,
) -> None:
    """Door-access loop: decide per visit (k of n good frames agree, margin, liveness), act, audit.

    [b]Examples[/b]: facerec kiosk 0 --mqtt mqtt://localhost --require-liveness  |
    facerec kiosk visits/ --json --allow-uncalibrated
    """
    from facerec.cli.main import _command, _settings

    with _command(as_json):
        from facerec.api import AuditPolicy, FaceRec
        from facerec.errors import UsageError
        from facerec.kiosk.actions import CommandAction, Dispatcher, HttpAction, MqttAction
        from facerec.kiosk.decide import VisitPolicy
        from facerec.kiosk.loop import Kiosk
        from facerec.kiosk.sources import open_source

        if require_liveness and no_liveness:
            raise UsageError("--require-liveness and --no-liveness contradict each other")
        if preview and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise UsageError("--preview needs a display (DISPLAY / WAYLAND_DISPLAY is not set)")
        name = camera or _camera_name(source)
        settings = _settings()
        if min_face is not None:
            settings = settings.with_(min_face_size=min_face)
        try:
            policy = VisitPolicy.load(policy_file) if policy_file else VisitPolicy.load()
            actions = ([CommandAction(on_decision, action_timeout)] if on_decision else []) + \
                      ([HttpAction(post_url, action_timeout)] if post_url else []) + \
                      ([MqttAction(mqtt, name, action_timeout, mqtt_prefix)] if mqtt else [])
        except (ValueError, OSError, KeyError) as exc:
            raise UsageError(str(exc)) from None
        engine = FaceRec(settings, audit=AuditPolicy.PER_JOB)
        frames = open_source(source, fps=fps, as_camera=as_camera)
        show = _Preview() if preview else None
        loop = Kiosk(engine, frames, name, policy, detector=detector, liveness=not no_liveness,
                     require_liveness=require_liveness, allow_uncalibrated=allow_uncalibrated,
                     dispatcher=Dispatcher(actions) if actions else None,
                     on_decision=lambda d: _print_decision(d, as_json), evidence_dir=save_evidence,
                     on_frame=show.draw if show else None)
        stop = threading.Event()

        def _stop(signum, _frame) -> None:
            stop.set()
            frames.interrupt()

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        summary = loop.run(max_frames=max_frames, stop=stop)
        engine.close()
        if as_json:
            print(json.dumps({"event": "diagnostics", **summary}), flush=True)
        else:
            print(f"{summary['frames']} frames, {summary['visits']} visits "
                  f"({summary['visits_with_usable_face']} with a usable face), decisions {summary['decisions']}; "
                  f"face sizes {summary['face_size_histogram']}", file=sys.stderr)


def _camera_name(source: str) -> str:
    """A topic-safe name: camera0, the folder or file stem, or the stream's host."""
    if source.isdigit():
        return f"camera{source}"
    base = source.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1] if "://" in source else Path(source).stem
    return re.sub(r"[^A-Za-z0-9_-]+", "_", base).strip("_") or "camera"


def _print_decision(decision: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(decision), flush=True)
    elif decision["event"] == "lockout":
        print(f"lockout: {decision['denials']} denials in a row, ignoring faces for {decision['seconds']:.0f} s",
              flush=True)
    else:
        who = decision["name"] if decision["unlock"] else decision["reason"]
        print(f"visit {decision['visit']}: {decision['decision']} {who} (score {decision['score']}, margin "
              f"{decision['margin']}, {decision['latency_ms']} ms)", flush=True)


class _Preview:
    """A window with the tracked faces, their current best candidate and the last decision."""

    def __init__(self) -> None:
        import cv2

        from facerec.errors import UsageError

        if re.search(r"GUI:\s+NONE", cv2.getBuildInformation()):
            raise UsageError("--preview: this OpenCV build has no GUI (opencv-python-headless); install opencv-python")
        self.cv2 = cv2

    def draw(self, frame, tracks: list[dict]) -> None:
        cv2 = self.cv2
        bgr = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR)
        for t in tracks:
            x1, y1, x2, y2 = (int(v) for v in t["box"])
            colour = (0, 200, 0) if t.get("decision") == "grant" else (0, 0, 230) if t.get("decision") else (200, 200, 0)
            cv2.rectangle(bgr, (x1, y1), (x2, y2), colour, 2)
            cv2.putText(bgr, f"{t['label']}", (x1, max(12, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)
        cv2.imshow("facerec kiosk", bgr)
        cv2.waitKey(1)
