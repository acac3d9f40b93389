"""The kiosk loop: frames -> faces -> tracks -> votes of good frames -> one decision per visit -> audit, actions.

Safety rules kept here:
- fail closed: an error while processing a frame denies every open visit (reason "error"); a decision whose
  audit event cannot be written never unlocks; an action's failure never becomes an unlock;
- thresholds are the 1:K ones of `calibrate-identification` (FPIR at this gallery's size); the kiosk refuses
  to start on a 1:1 or default threshold unless told `allow_uncalibrated`;
- `require_liveness`: refuse to start without a working liveness model;
- a cooldown per person (a granted person standing at the door does not re-trigger it), and a lockout with
  growing delay after repeated denials on this camera (a stranger cannot probe the gallery for ever);
- one audit event per visit decision (never per frame), no images unless `evidence_dir` is given.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from facerec.api import UNKNOWN, AuditPolicy, FaceRec
from facerec.errors import FacerecError
from facerec.kiosk.actions import Dispatcher
from facerec.kiosk.decide import DENY, GRANT, ActiveCheck, Verdict, Visit, VisitPolicy, Vote, judge
from facerec.kiosk.diagnostics import CameraDiagnostics
from facerec.kiosk.sources import Frame, FrameSource
from facerec.kiosk.tracking import Tracker

log = logging.getLogger("facerec.kiosk")

# Denials that count towards the lockout: someone was looked at and refused (not "left" or "low_quality").
PROBING_REASONS = {"unknown", "spoof", "no_consensus", "active_check"}
# How often the threshold in force is re-read from the store (one query) while faces are being identified.
POINT_REFRESH_S = 1.0


class KioskError(FacerecError):
    """The kiosk cannot start safely (uncalibrated threshold, liveness required but unavailable, ...)."""

    code = "kiosk_unsafe"


def calibrated_for_identification(source: str) -> bool:
    """Whether a threshold's source is a stored `calibrate-identification` record (not 1:1, not a default)."""
    return source.startswith("calibration #") and "(identification," in source


class Kiosk:
    def __init__(
        self,
        engine: FaceRec,
        source: FrameSource,
        camera: str,
        policy: VisitPolicy | None = None,
        detector: str = "yunet-half+onet",
        liveness: bool = True,
        require_liveness: bool = False,
        allow_uncalibrated: bool = False,
        dispatcher: Dispatcher | None = None,
        on_decision: Callable[[dict], None] | None = None,
        evidence_dir: Path | None = None,
        active_check: Callable[[], ActiveCheck] | None = None,
        collect_timings: bool = False,
        on_frame: Callable[[Frame, list[dict]], None] | None = None,
    ) -> None:
        if engine.audit_policy is not AuditPolicy.PER_JOB:
            raise KioskError("the kiosk audits one event per visit: give it an engine with AuditPolicy.PER_JOB")
        self.engine, self.source, self.camera = engine, source, camera
        self.policy = policy or VisitPolicy.load()
        self.detector = detector
        self.dispatcher = dispatcher
        self.on_decision = on_decision
        self.evidence_dir = Path(evidence_dir) if evidence_dir else None
        self.active_check = active_check
        self.on_frame = on_frame  # a preview: gets each processed frame and its tracks (box, label, decision)
        self.tracker = Tracker(self.policy.track_min_iou, self.policy.track_max_age_s)
        self.visits: dict[int, Visit] = {}
        self.decided: set[int] = set()
        self.last_grant: dict[str, float] = {}
        self.denials = 0
        self.locked_until = -np.inf
        self.diagnostics = CameraDiagnostics(camera)
        self.timings: list[dict[str, float]] | None = [] if collect_timings else None
        self._evidence: dict[int, np.ndarray] = {}
        self.point = engine.operating_point("identification")
        self._point_read = -np.inf
        if not calibrated_for_identification(self.point.source):
            if not allow_uncalibrated:
                raise KioskError(
                    f"no identification calibration for this gallery (threshold in force: {self.point.source}); "
                    "run `facerec calibrate-identification UNKNOWNS_DIR --fpir 0.01` first")
            log.warning("kiosk runs on an uncalibrated 1:K threshold %.3f (%s)", self.point.threshold,
                        self.point.source)
        self.live_threshold = self._load_liveness() if liveness or require_liveness else None
        if require_liveness and self.live_threshold is None:
            raise KioskError("--require-liveness: no liveness model could be loaded")

    def _load_liveness(self) -> float | None:
        """Load and exercise the liveness model once, so a broken model fails at start, not at the door."""
        try:
            model = self.engine.liveness
            probe = np.zeros((64, 64, 3), np.uint8)
            model.decide(probe, np.array([16.0, 16.0, 48.0, 48.0]))
            return float(model.threshold)
        except Exception as exc:
            log.warning("no liveness model: %s", exc)
            return None

    # --- the loop ---------------------------------------------------------------------------------
    def run(self, max_frames: int | None = None, stop: threading.Event | None = None) -> dict:
        """Process frames until the source ends, `max_frames`, or `stop`; returns the diagnostics."""
        stop = stop or threading.Event()
        last: Frame | None = None
        try:
            for frame in self.source.frames():
                last = frame
                self.step(frame)
                if stop.is_set() or (max_frames is not None and self.diagnostics.frames >= max_frames):
                    break
        finally:
            self.source.close()
            if last is not None:
                for track in self.tracker.end_all():
                    self._end_visit(track.id, "stopped" if stop.is_set() else "left", last, time.perf_counter())
            if self.dispatcher is not None:
                self.dispatcher.close()
            summary = self.diagnostics.to_dict() | self.source.health()
            try:
                self.engine.record("kiosk_session", "ended", details={"diagnostics": summary})
            except Exception as exc:
                log.error("could not write the session's audit event: %s", exc)
        return summary

    def step(self, frame: Frame) -> list[dict]:
        """One frame; returns the decisions it produced. Never raises: an error denies the open visits."""
        started = time.perf_counter()
        self.diagnostics.frames += 1
        if frame.t < self.locked_until:
            self.diagnostics.frames_skipped_locked += 1
            return []
        try:
            out = self._step(frame, started)
            if self.on_frame is not None:
                self.on_frame(frame, self._track_view(out))
            return out
        except Exception:
            log.exception("frame %s failed; denying the open visits (fail closed)", frame.label)
            self.diagnostics.errors += 1
            out = []
            for tid, visit in list(self.visits.items()):
                if tid not in self.decided:
                    verdict = Verdict(DENY, "error", UNKNOWN, UNKNOWN, None, None, None,
                                      [v.frame_id for v in visit.votes])
                    out.append(self._decide(visit, verdict, frame, started))
            return out

    def _step(self, frame: Frame, started: float) -> list[dict]:
        timing: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timing[stage] = timing.get(stage, 0.0) + 1000 * (now - clock)
            clock = now

        detections = self.engine.detect_frame(frame.rgb, self.detector)
        lap("detect")
        if detections:
            self.diagnostics.frames_with_face += 1
        for det in detections:
            self.diagnostics.face(det.size)
        ids, ended = self.tracker.update(detections, frame.t)
        out = [d for t in ended if (d := self._end_visit(t.id, "left", frame, started)) is not None]
        candidates = []
        for det, tid in zip(detections, ids):
            visit = self.visits.get(tid)
            if visit is None:
                visit = self.visits[tid] = Visit(tid, frame.t, frame.id, deque(maxlen=self.policy.n),
                                                 active=self.active_check() if self.active_check else None)
            visit.frames_seen += 1
            if tid in self.decided:
                continue  # decided: the person standing on does not vote again until they leave
            if visit.active is not None:
                visit.active.update(det.landmarks, frame.id)
            problems = self.policy.gate.precheck(det.score, det.size, self.detector)
            if problems:
                self.diagnostics.rejections.update(problems)
            else:
                candidates.append((visit, det))
        lap("track")
        faces = self.engine.faces_in_frame(frame.rgb, [d for _, d in candidates]) if candidates else []
        lap("embed")
        good = []
        for (visit, _), face in zip(candidates, faces):
            problems = self.policy.gate.problems(face.quality, self.detector)
            if problems:
                self.diagnostics.rejections.update(problems)
            else:
                good.append((visit, face))
        if good:
            if frame.t - self._point_read >= POINT_REFRESH_S:  # a new calibration applies within a second
                self.point, self._point_read = self.engine.operating_point("identification"), frame.t
            identified = self.engine.identify_faces([f for _, f in good], top_k=2, point=self.point)
            lap("identify")
            for (visit, face), found in zip(good, identified):
                live = self.engine.liveness.decide(frame.rgb, face.detection) if self.live_threshold is not None \
                    else None
                best = found.candidates[0].name if found.candidates else UNKNOWN
                visit.votes.append(Vote(frame.id, best, found.score, found.margin,
                                        found.name != UNKNOWN and found.margin >= self.policy.margin,
                                        live.score if live else None))
                visit.frames_good += 1
                if self.evidence_dir is not None:
                    self._evidence[visit.track_id] = frame.rgb
            lap("liveness")
        for tid, visit in list(self.visits.items()):
            if tid in self.visits and tid not in self.decided:  # a lockout may have dropped it meanwhile
                verdict = judge(visit, self.policy, self.live_threshold, frame.t)
                if verdict is not None:
                    out.append(self._decide(visit, verdict, frame, started))
        lap("decide")
        if self.timings is not None:
            self.timings.append(timing | {"total": 1000 * (time.perf_counter() - started),
                                          "faces": float(len(detections))})
        return out

    def _track_view(self, decisions: list[dict]) -> list[dict]:
        decided = {d["visit"]: d for d in decisions if d.get("event") == "decision"}
        view = []
        for tid, track in self.tracker.tracks.items():
            visit = self.visits.get(tid)
            vote = visit.votes[-1] if visit is not None and visit.votes else None
            label = decided[tid]["name"] if tid in decided else (f"{vote.name}? {vote.score:.2f}" if vote else "...")
            view.append({"box": [float(v) for v in track.box], "label": label,
                         "decision": decided[tid]["decision"] if tid in decided else None})
        return view

    # --- decisions --------------------------------------------------------------------------------
    def _end_visit(self, track_id: int, reason: str, frame: Frame, started: float) -> dict | None:
        """A track ended: count the visit; one that left undecided after good frames is a recorded denial."""
        visit = self.visits.pop(track_id, None)
        if visit is None:
            return None
        self.diagnostics.visit_ended(visit.frames_good)
        decided = track_id in self.decided
        self.decided.discard(track_id)
        if decided or visit.frames_good == 0:
            self._evidence.pop(track_id, None)
            return None
        verdict = Verdict(DENY, reason, UNKNOWN, UNKNOWN, None, None, None, [v.frame_id for v in visit.votes])
        return self._decide(visit, verdict, frame, started)

    def _decide(self, visit: Visit, verdict: Verdict, frame: Frame, started: float) -> dict:
        self.decided.add(visit.track_id)
        now = frame.t
        unlock = verdict.decision == GRANT
        outcome = GRANT if unlock else verdict.reason
        if unlock and now - self.last_grant.get(verdict.name, -np.inf) < self.policy.cooldown_s:
            unlock, outcome = False, "cooldown"
        payload = self._payload(visit, verdict, frame, started, unlock, outcome)
        if self.evidence_dir is not None and visit.track_id in self._evidence:
            payload["evidence"] = self._save_evidence(visit, outcome)
        try:
            self.engine.record_decision("kiosk", outcome, verdict.name if unlock else None, verdict.score,
                                        self.point.threshold, payload)
        except Exception as exc:  # no audit trail, no unlock
            log.error("visit %s: audit event not written (%s); not unlocking", visit.track_id, exc)
            payload.update(unlock=False, decision=DENY, reason="audit_failed")
            unlock, outcome = False, "audit_failed"
        self.diagnostics.decisions[outcome] += 1
        if outcome != "cooldown" and self.dispatcher is not None:
            self.dispatcher.dispatch(payload)
        if self.on_decision is not None:
            self.on_decision(payload)
        log.info("visit %s: %s %s", visit.track_id, outcome, verdict.name if unlock else "")
        if unlock:
            self.last_grant[verdict.name] = now
            self.denials = 0
        elif verdict.decision == DENY and verdict.reason in PROBING_REASONS:
            self.denials += 1
            if self.denials >= self.policy.lockout_after:
                self._lock_out(now)
        return payload

    def _payload(self, visit: Visit, verdict: Verdict, frame: Frame, started: float, unlock: bool,
                 outcome: str) -> dict:
        processing = time.perf_counter() - started
        live_model = self.engine.liveness.card if self.live_threshold is not None else None
        return {
            "event": "decision", "camera": self.camera, "visit": visit.track_id,
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "decision": GRANT if unlock else ("ignored" if outcome == "cooldown" else DENY),
            "unlock": unlock, "name": verdict.name if unlock else UNKNOWN, "candidate": verdict.candidate,
            "reason": "" if unlock else outcome,
            "score": _r(verdict.score), "margin": _r(verdict.margin), "threshold": _r(self.point.threshold),
            "threshold_source": self.point.source,
            "liveness": None if self.live_threshold is None else {
                "score": _r(verdict.live_score), "threshold": _r(self.live_threshold),
                "model": live_model.id, "model_version": live_model.version},
            "active_check": None if visit.active is None else visit.active.passed,
            "k": self.policy.k, "n": self.policy.n, "min_margin": self.policy.margin,
            "frames": verdict.frame_ids, "first_frame": visit.first_frame, "decided_at_frame": frame.id,
            "frames_seen": visit.frames_seen, "good_frames": visit.frames_good,
            "latency_ms": round(1000 * (frame.t - visit.started + processing), 1),
            "processing_ms": round(1000 * processing, 1),
            "detector": self.detector, "model": self.engine.card.id, "model_version": self.engine.card.version,
        }

    def _lock_out(self, now: float) -> None:
        delay = min(self.policy.lockout_base_s * 2 ** (self.denials - self.policy.lockout_after),
                    self.policy.lockout_max_s)
        self.locked_until = now + delay
        log.warning("camera %s: %d denials in a row; ignoring faces for %.0f s", self.camera, self.denials, delay)
        for track in self.tracker.end_all():  # open visits are dropped, not decided: nobody is looked at
            visit = self.visits.pop(track.id, None)
            if visit is not None:
                self.diagnostics.visit_ended(visit.frames_good)
        self.decided.clear()
        event = {"event": "lockout", "camera": self.camera, "denials": self.denials, "seconds": delay}
        try:
            self.engine.record("kiosk_lockout", "locked", details=event)
        except Exception as exc:
            log.error("could not write the lockout's audit event: %s", exc)
        if self.on_decision is not None:
            self.on_decision(event)

    def _save_evidence(self, visit: Visit, outcome: str) -> str:
        folder = self.evidence_dir / self.camera
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        path = folder / f"{stamp}_visit{visit.track_id}_{outcome}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(self._evidence.pop(visit.track_id), cv2.COLOR_RGB2BGR))
        return str(path)


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
