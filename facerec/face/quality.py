"""The enrollment quality gate: in one-shot enrollment a single photo decides everything.

Measures (all cheap): detection score, face size, sharpness (variance of the Laplacian of the aligned
crop), and pose from the landmarks (yaw and pitch ratios in the eye-levelled frame). Limits live in
`facerec/data/quality.json` with their provenance.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from facerec.face.align import align_face
from facerec.face.detect import Detection
from facerec.models.base import AlignmentTemplate

POLICY_FILE = Path(__file__).resolve().parent.parent / "data" / "quality.json"


@dataclass(frozen=True)
class QualityPolicy:
    """Limits, and the crop geometry they were measured on (sharpness depends on crop scale, so the gate
    aligns its own crop instead of reusing the embedding model's, whose size differs between models)."""

    crop_template: AlignmentTemplate
    min_detection_score: float
    min_face_size: float
    min_sharpness: float
    max_abs_yaw: float
    pitch_range: tuple[float, float]
    provenance: str

    @classmethod
    def load(cls, path: Path = POLICY_FILE) -> "QualityPolicy":
        raw = json.loads(path.read_text())
        tpl = raw["crop_template"]
        return cls(
            crop_template=AlignmentTemplate(int(tpl["width"]), int(tpl["height"]),
                                            tuple((float(x), float(y)) for x, y in tpl["points"])),
            min_detection_score=float(raw["min_detection_score"]),
            min_face_size=float(raw["min_face_size"]),
            min_sharpness=float(raw["min_sharpness"]),
            max_abs_yaw=float(raw["max_abs_yaw"]),
            pitch_range=(float(raw["pitch_range"][0]), float(raw["pitch_range"][1])),
            provenance=str(raw["provenance"]),
        )


@dataclass(frozen=True)
class QualityReport:
    detection_score: float
    face_size: float
    sharpness: float
    yaw: float
    pitch: float
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        d = asdict(self)
        d["problems"] = list(self.problems)
        d["passed"] = self.passed
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop: low for blurred or upsampled faces."""
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def pose_ratios(landmarks: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) proxies from five landmarks.

    yaw: horizontal offset of the nose from the eye midpoint, in inter-ocular distances (0 = frontal).
    pitch: nose height between the eye line (0) and the mouth line (1); about 0.5 when frontal.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    left_eye, right_eye, nose = pts[0], pts[1], pts[2]
    mouth = (pts[3] + pts[4]) / 2
    eye_mid = (left_eye + right_eye) / 2
    eye_vec = right_eye - left_eye
    iod = float(np.hypot(*eye_vec))
    if iod < 1e-6:
        return float("inf"), float("inf")
    ex = eye_vec / iod
    ey = np.array([-ex[1], ex[0]])
    yaw = float((nose - eye_mid) @ ex / iod)
    mouth_depth = float((mouth - eye_mid) @ ey)
    pitch = float((nose - eye_mid) @ ey / mouth_depth) if abs(mouth_depth) > 1e-6 else float("inf")
    return yaw, pitch


def assess(detection: Detection, rgb: np.ndarray, policy: QualityPolicy) -> QualityReport:
    """Judge one detected face in its full image."""
    yaw, pitch = pose_ratios(detection.landmarks)
    sharp = sharpness(align_face(rgb, detection.landmarks, policy.crop_template))
    problems = []
    if detection.score < policy.min_detection_score:
        problems.append(
            f"weak detection (score {detection.score:.3f} < {policy.min_detection_score})"
        )
    if detection.size < policy.min_face_size:
        problems.append(f"face too small ({detection.size:.0f} px < {policy.min_face_size:.0f} px)")
    if sharp < policy.min_sharpness:
        problems.append(f"too blurred (sharpness {sharp:.0f} < {policy.min_sharpness:.0f})")
    if abs(yaw) > policy.max_abs_yaw:
        problems.append(f"face turned too far from frontal (yaw ratio {yaw:+.2f}, limit ±{policy.max_abs_yaw})")
    low, high = policy.pitch_range
    if not low <= pitch <= high:
        problems.append(f"face tilted up/down too far (pitch ratio {pitch:.2f} outside {low}..{high})")
    return QualityReport(
        detection_score=detection.score, face_size=detection.size, sharpness=sharp,
        yaw=yaw, pitch=pitch, problems=tuple(problems),
    )
