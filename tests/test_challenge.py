"""Head-turn challenge: yaw from 5 landmarks and the "left then right within N frames" state machine, on
synthetic landmark tracks (a 3-D face model rotated and projected) and on real LFW photos (a turned face and
its mirror image, re-detected by MTCNN)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import lfw_image, need
from facerec.decisions.challenge import (
    CHALLENGE_REASON,
    HeadTurnChallenge,
    challenge_needed,
    combined_liveness,
    yaw_degrees,
)
from facerec.models.liveness import LivenessDecision

# A face in 3-D (x right in the image, y down, z toward the camera), eye distance 1, nose tip 0.4 in front.
FACE_3D = np.array([[-0.5, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.55, 0.4], [-0.4, 1.0, 0.0], [0.4, 1.0, 0.0]])


def landmarks(yaw_deg: float, roll_deg: float = 0.0, scale: float = 60.0, at=(320.0, 240.0)) -> np.ndarray:
    """Orthographic projection of FACE_3D turned by yaw (positive: the subject's left, nose toward the
    image's right) and rolled in the image plane."""
    a = math.radians(yaw_deg)
    rot_y = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    p = (FACE_3D @ rot_y.T)[:, :2]
    r = math.radians(roll_deg)
    p = p @ np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]]).T
    return p * scale + np.asarray(at)


@pytest.mark.parametrize("yaw", [-40.0, -20.0, 0.0, 15.0, 35.0])
@pytest.mark.parametrize("roll", [0.0, 25.0])
def test_yaw_of_a_projected_face_model(yaw, roll):
    assert yaw_degrees(landmarks(yaw, roll)) == pytest.approx(yaw, abs=1.0)
    assert yaw_degrees(landmarks(yaw, roll), mirrored=True) == pytest.approx(-yaw, abs=1.0)


def _run(track, **kw):
    challenge = HeadTurnChallenge(**kw)
    for lm in track:
        result = challenge.update(lm)
    return result


def test_left_then_right_passes_and_order_matters():
    frontal, left, right = landmarks(0), landmarks(30), landmarks(-30)
    result = _run([frontal] * 5 + [left] * 3 + [frontal] * 3 + [right] * 2, max_frames=30)
    assert result.passed and result.completed == 2 and result.frames == 12  # decided on the first right turn
    assert result.to_dict()["peak_yaw"]["left"] == pytest.approx(30, abs=1)
    # right first, then left only: the right turn came too early and does not count
    wrong_order = _run([right] * 3 + [left] * 3 + [frontal] * 3, max_frames=9)
    assert wrong_order.state == "failed" and wrong_order.completed == 1
    # a face that never turns far enough (a photo tilted a little) fails when the frames run out
    small = _run([landmarks(10), landmarks(-10)] * 10, max_frames=20)
    assert small.state == "failed" and small.completed == 0


def test_timeout_missing_faces_and_decided_state():
    challenge = HeadTurnChallenge(max_frames=4)
    assert challenge.update(landmarks(30)).expected == "right"
    assert challenge.update(None).state == "waiting"  # no face: time passes
    challenge.update(None)
    assert challenge.update(None).state == "failed"
    assert challenge.update(landmarks(-30)).state == "failed"  # decided: later frames change nothing
    with pytest.raises(ValueError):
        HeadTurnChallenge(sequence=("up",))


def test_fusion_with_the_passive_decision():
    live = LivenessDecision.from_score(0.9, 0.5)
    doubtful = LivenessDecision.from_score(0.55, 0.5)
    spoof = LivenessDecision.from_score(0.1, 0.5)
    passed = _run([landmarks(30), landmarks(-30)], max_frames=5)
    failed = _run([landmarks(0)] * 5, max_frames=5)
    assert combined_liveness(live, None).is_live
    assert not combined_liveness(live, None, require_challenge=True).is_live
    assert combined_liveness(live, passed, require_challenge=True).is_live
    r = combined_liveness(live, failed)
    assert not r.is_live and r.reason == CHALLENGE_REASON and r.to_dict()["challenge"]["state"] == "failed"
    assert combined_liveness(spoof, passed).reason == "spoof"
    assert challenge_needed(doubtful) and not challenge_needed(live)


# LFW photos, checked by eye: Alfred Ford turned to his left (nose toward the image's right), Angela Merkel
# turned a little to her right, Ahmed Chalabi frontal.
TURNED_LEFT = ("Alfred_Ford", 1)
TURNED_RIGHT = ("Angela_Merkel", 1)
FRONTAL = ("Ahmed_Chalabi", 1)


def test_real_photos_and_their_mirror_images(lfw):
    from facerec.face.detect import detect_faces
    from facerec.face.pipeline import shared_detector
    from facerec.io import load_image

    detector = shared_detector(20)

    def yaw_of(rgb):
        faces = detect_faces(detector, rgb, 0.9, 20)
        assert faces
        return yaw_degrees(faces[0].landmarks)

    paths = {k: lfw_image(lfw, *v) for k, v in
             {"left": TURNED_LEFT, "right": TURNED_RIGHT, "frontal": FRONTAL}.items()}
    need(all(p.is_file() for p in paths.values()), "LFW photos not found")
    rgb = {k: load_image(p) for k, p in paths.items()}
    mirrored = {k: np.ascontiguousarray(v[:, ::-1]) for k, v in rgb.items()}
    yaws = {k: yaw_of(v) for k, v in rgb.items()}
    mirror_yaws = {k: yaw_of(v) for k, v in mirrored.items()}
    assert yaws["left"] > 25 and yaws["right"] < -25 and abs(yaws["frontal"]) < 8, yaws
    for k in yaws:  # the mirror image turns the other way by about as much
        assert mirror_yaws[k] == pytest.approx(-yaws[k], abs=8), (k, yaws[k], mirror_yaws[k])

    # a kiosk track from real detections: frontal, turned left, frontal, turned right (the mirror image)
    track = [rgb["frontal"], rgb["left"], rgb["frontal"], mirrored["left"]]
    challenge = HeadTurnChallenge(max_frames=len(track))
    for frame in track:
        faces = detect_faces(detector, frame, 0.9, 20)
        result = challenge.update(faces[0].landmarks)
    assert result.passed
    # the same frames in the wrong order (right then left) do not pass
    wrong = HeadTurnChallenge(max_frames=3)
    for frame in (mirrored["left"], rgb["frontal"], rgb["frontal"]):
        result = wrong.update(detect_faces(detector, frame, 0.9, 20)[0].landmarks)
    assert result.state == "failed"
