#!/usr/bin/env python3
"""Derive the 5-point MTCNN alignment template of dlib's face chips, and check it.

dlib makes its 150x150 chips from its own 5-point shape predictor (`get_face_chip(img, shape, size=150,
padding=0.25)`); facerec detects faces with facenet-pytorch's MTCNN, whose five landmarks (eye centres, nose
tip, mouth corners) are different points. So the template is measured: for the first image of each of the first
N LFW people (sorted by name) in which dlib's HOG detector finds a face, make dlib's chip, run MTCNN on the chip
and average the landmark positions (a 10% trimmed mean per coordinate). The template is printed and written into
`facerec/weights/dlib_resnet29/model.json`.

MTCNN misplaces landmarks when the face fills the image (its box runs past the edge), and a dlib chip is such a
close-up, so the chip is padded with a black border (`--pad`, default 50 px) before detection and the landmarks
are shifted back.

`--check` then measures what the template buys: for held-out people (the next `--check-n` people after the
first N), MTCNN landmarks on the original LFW image -> least-squares similarity transform (Umeyama, no
reflection) onto the template -> cv2.warpAffine to 150x150 (bilinear) -> the PyTorch port; compared by cosine
with dlib's own descriptor of dlib's own chip of the same image.

Reproduce (needs the test extras: dlib-bin, face-recognition-models, face_recognition; a few minutes on 2 cores):
    .venv/bin/python scripts/derive_dlib_template.py --n 300 --check --check-n 100
Data: LFW at $FACEREC_DATA/faces/lfw (default ../shared/data/faces/lfw beside the checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL_DIR = REPO / "facerec" / "weights" / "dlib_resnet29"
CHIP_SIZE = 150
CHIP_PADDING = 0.25


def default_data() -> Path:
    return Path(os.environ.get("FACEREC_DATA", REPO.parent / "shared" / "data"))


def lfw_first_images(lfw: Path) -> list[Path]:
    """The first image (sorted) of every person, people sorted by name."""
    out = []
    for person in sorted(p for p in lfw.iterdir() if p.is_dir()):
        images = sorted(person.glob("*.jpg"))
        if images:
            out.append(images[0])
    return out


class DlibChipper:
    """dlib's own pipeline: HOG detector, 5-point shape predictor, get_face_chip, face descriptor."""

    def __init__(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # face_recognition_models imports pkg_resources
            import dlib
            import face_recognition_models as frm
        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.encoder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def chip(self, img: np.ndarray) -> np.ndarray | None:
        """dlib's 150x150 chip of the detected face nearest the image centre (upsampling once), or None."""
        dets = self.detector(img, 1)
        if len(dets) == 0:
            return None
        cx, cy = img.shape[1] / 2, img.shape[0] / 2
        d = min(dets, key=lambda r: np.hypot((r.left() + r.right()) / 2 - cx, (r.top() + r.bottom()) / 2 - cy))
        shape = self.predictor(img, d)
        return np.asarray(self.dlib.get_face_chip(img, shape, size=CHIP_SIZE, padding=CHIP_PADDING))

    def descriptor(self, chip: np.ndarray) -> np.ndarray:
        return np.asarray(self.encoder.compute_face_descriptor(np.ascontiguousarray(chip)), dtype=np.float64)


class Landmarker:
    """facenet-pytorch MTCNN; the five landmarks of the detection nearest the image centre."""

    def __init__(self, pad: int) -> None:
        from facenet_pytorch import MTCNN

        self.mtcnn = MTCNN(keep_all=True, device="cpu")
        self.pad = pad

    def __call__(self, img: np.ndarray) -> np.ndarray | None:
        from PIL import Image

        p = self.pad
        padded = np.pad(img, ((p, p), (p, p), (0, 0)), mode="constant") if p else img
        boxes, probs, points = self.mtcnn.detect(Image.fromarray(padded), landmarks=True)
        if boxes is None or len(boxes) == 0:
            return None
        # facenet-pytorch 2.6 with numpy 2 returns object arrays
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        points = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        i = int(np.argmin(np.linalg.norm(centres - np.array(padded.shape[1::-1]) / 2, axis=1)))
        return points[i] - p


def trimmed_mean(a: np.ndarray, trim: float = 0.1) -> np.ndarray:
    a = np.sort(a, axis=0)
    k = int(len(a) * trim)
    return a[k : len(a) - k].mean(axis=0)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation; no reflection): 2x3 matrix."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    cov = dc.T @ sc / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    r = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / (sc**2).sum(1).mean()
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def align(img: np.ndarray, landmarks: np.ndarray, template: np.ndarray) -> np.ndarray:
    import cv2

    m = umeyama(landmarks, template)
    return cv2.warpAffine(img, m, (CHIP_SIZE, CHIP_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=default_data(), help="folder holding faces/lfw")
    ap.add_argument("--n", type=int, default=300, help="number of chips to average over")
    ap.add_argument("--pad", type=int, default=50, help="black border added before MTCNN (px)")
    ap.add_argument("--model-json", type=Path, default=MODEL_DIR / "model.json")
    ap.add_argument("--no-write", action="store_true", help="print the template only")
    ap.add_argument("--check", action="store_true", help="measure port-on-our-chip vs dlib-on-dlib-chip")
    ap.add_argument("--check-n", type=int, default=100, help="held-out people for --check")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    lfw = args.data / "faces" / "lfw"
    if not lfw.is_dir():
        ap.error(f"LFW not found at {lfw}")
    images = lfw_first_images(lfw)
    dlib_chipper = DlibChipper()
    landmarker = Landmarker(args.pad)

    points, used, cursor = [], 0, 0
    while used < args.n and cursor < len(images):
        img = load_rgb(images[cursor])
        cursor += 1
        chip = dlib_chipper.chip(img)
        if chip is None:
            continue
        lm = landmarker(chip)
        if lm is None:
            continue
        points.append(lm)
        used += 1
    pts = np.stack(points)
    template = trimmed_mean(pts)
    print(f"chips: {len(pts)} (from the first {cursor} LFW people; dlib or MTCNN found no face in {cursor - len(pts)})")
    print("template (10% trimmed mean, px):", json.dumps(np.round(template, 2).tolist()))
    print("median:                         ", json.dumps(np.round(np.median(pts, 0), 2).tolist()))
    print("std:                            ", json.dumps(np.round(pts.std(0), 2).tolist()))

    if not args.no_write:
        card = json.loads(args.model_json.read_text())
        card["template"] = {
            "width": CHIP_SIZE,
            "height": CHIP_SIZE,
            "points": np.round(template, 2).tolist(),
        }
        text = json.dumps(card, indent=2, ensure_ascii=False)
        text = re.sub(r"\[\s+(-?[\d.]+),\s+(-?[\d.]+)\s+\]", r"[\1, \2]", text)  # one point a line
        args.model_json.write_text(text + "\n")
        print(f"written into {args.model_json}")

    if args.check:
        from facerec.models.dlib_resnet import DlibResNetEmbedder

        model = DlibResNetEmbedder(args.model_json.parent)
        template_used = model.template.as_array() if not args.no_write else np.round(template, 2)
        ours, theirs, skipped = [], [], 0
        for path in images[cursor : cursor + args.check_n]:
            img = load_rgb(path)
            chip = dlib_chipper.chip(img)
            lm = landmarker(img)
            if chip is None or lm is None:
                skipped += 1
                continue
            ours.append(align(img, lm, template_used))
            theirs.append(dlib_chipper.descriptor(chip))
        emb = model.embed(np.stack(ours))
        ref = np.stack(theirs)
        ref /= np.linalg.norm(ref, axis=1, keepdims=True)
        cos = (emb * ref).sum(1)
        print(
            f"check on {len(cos)} held-out images ({skipped} without a face): port on our MTCNN-aligned chip vs "
            f"dlib on dlib's chip: cosine mean {cos.mean():.4f}, median {np.median(cos):.4f}, "
            f"min {cos.min():.4f}, 5th percentile {np.percentile(cos, 5):.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
