"""Set the enrollment quality gate from data: percentiles of quality measures on LFW View 1 (DevTrain).

    python scripts/measure_quality.py --lfw ../shared/data/faces/lfw --write facerec/data/quality.json

Limits: sharpness >= its 2nd percentile, |yaw| <= its 98th percentile, pitch within its 1st..99th
percentiles, so a typical photo passes and the worst few percent of in-the-wild photos are refused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from facerec.evaluation.lfw_protocol import view1_pairs
from facerec.face.align import align_face
from facerec.face.pipeline import shared_detector
from facerec.face.detect import detect_faces
from facerec.face.quality import pose_ratios, sharpness
from facerec.io import load_image
from facerec.models.registry import model_card

MIN_DETECTION_SCORE = 0.95  # stricter than the 0.9 detection default: enrollment wants a clear face
MIN_FACE_SIZE = 40  # px: below this the 150-px model input is mostly upsampling


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lfw", type=Path, required=True)
    ap.add_argument("--model", default="dlib_resnet29")
    ap.add_argument("--limit", type=int, default=800)
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    card = model_card(args.model)
    template = card.template
    paths = sorted({p for pair in view1_pairs(args.lfw, "train") for p in (pair.path_a, pair.path_b)})[: args.limit]
    detector = shared_detector(20)
    sharp, yaw, pitch = [], [], []
    for path in paths:
        rgb = load_image(path)
        faces = detect_faces(detector, rgb, 0.9, 20)
        if not faces:
            continue
        face = min(faces, key=lambda f: np.hypot(*((f.box[:2] + f.box[2:]) / 2 - np.array(rgb.shape[1::-1]) / 2)))
        y, p = pose_ratios(face.landmarks)
        sharp.append(sharpness(align_face(rgb, face.landmarks, template)))
        yaw.append(abs(y))
        pitch.append(p)
    policy = {
        "crop_template": {"width": template.width, "height": template.height,
                          "points": [list(p) for p in template.points]},
        "min_detection_score": MIN_DETECTION_SCORE,
        "min_face_size": MIN_FACE_SIZE,
        "min_sharpness": round(float(np.percentile(sharp, 2)), 1),
        "max_abs_yaw": round(float(np.percentile(yaw, 98)), 3),
        "pitch_range": [round(float(np.percentile(pitch, 1)), 3), round(float(np.percentile(pitch, 99)), 3)],
        "provenance": (
            f"scripts/measure_quality.py on {len(sharp)} faces of LFW View 1 DevTrain images "
            f"(model {args.model} template): sharpness p2, |yaw| p98, pitch p1..p99; "
            f"detection score and face size are fixed policy"
        ),
    }
    print(json.dumps(policy, indent=2))
    if args.write:
        args.write.write_text(json.dumps(policy, indent=2) + "\n")


if __name__ == "__main__":
    main()
