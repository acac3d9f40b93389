#!/usr/bin/env python3
"""Build the frontal-vs-profile pairs split from CelebA in-the-wild photos (identities that are LFW people left out).

    python scripts/build_pose_split.py --source ../shared/data/faces/celeba_wild        # survey + pairs + links
    python scripts/build_pose_split.py --source ../shared/data/faces/celeba_wild --links-only   # just the links

Steps: (1) every photo through MTCNN at relaxed settings (score >= 0.5, side >= 40 px; the central face),
its yaw index from the 5 landmarks (facerec.evaluation.pose) written to `benchmarks/pose_split/yaw.csv`;
(2) frontal = |p| <= --frontal-max, profile = |p| >= --profile-min; pairs (frontal, profile) in 10
identity-disjoint folds, LFW pairs format, `benchmarks/pose_split/pairs_frontal_profile.txt`; (3) the
`--root` folder of links (`.cache/pose_root`). Evaluate with

    python cli.py --model ID evaluate pairs --pairs benchmarks/pose_split/pairs_frontal_profile.txt \
        --root .cache/pose_root --crop-cache .cache/eval_crops --json

CelebA is for non-commercial research only; the split holds names (CelebA identity numbers) and numbers, no images.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facerec.face.selection import select_subject  # noqa: E402
from facerec.evaluation.pairs import RELAXED_SCORE  # noqa: E402
from facerec.evaluation.pose import PoseImage, build_pairs, link_root, pairs_text, yaw_index  # noqa: E402

OUT = REPO / "benchmarks" / "pose_split"
# the photos are face-centred 160 px crops whose face box is about 89 px: a 40 px floor finds every face
# and keeps MTCNN's image pyramid short (the survey takes minutes, not an hour, on 2 shared cores)
SURVEY_MIN_SIZE = 40


def survey(source: Path, leave_out: set[str]) -> list[dict]:
    from facerec.face.detect import detect_faces
    from facerec.face.pipeline import shared_detector
    from facerec.io import load_image

    detector = shared_detector(SURVEY_MIN_SIZE)
    rows = []
    identities = sorted(p.name for p in source.iterdir() if p.is_dir() and p.name not in leave_out)
    for n, identity in enumerate(identities):
        for number, path in enumerate(sorted((source / identity).glob("*.jpg")), 1):
            rgb = load_image(path)
            faces = detect_faces(detector, rgb, RELAXED_SCORE, SURVEY_MIN_SIZE)
            row = {"identity": identity, "file": path.name, "number": number, "score": "", "yaw_index": ""}
            if faces:
                face = select_subject(faces, rgb.shape).subject
                row.update(score=f"{face.score:.4f}", yaw_index=f"{yaw_index(face.landmarks):.4f}")
            rows.append(row)
        print(f"\r{n + 1}/{len(identities)} identities", end="", file=sys.stderr)
    print(file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, required=True, help="celeba_wild folder (one folder per identity)")
    ap.add_argument("--frontal-max", type=float, default=0.15, help="|yaw index| of a frontal photo (about 9 deg)")
    ap.add_argument("--profile-min", type=float, default=0.6, help="|yaw index| of a profile photo (about 37 deg)")
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--links", type=Path, default=REPO / ".cache" / "pose_root")
    ap.add_argument("--links-only", action="store_true", help="rebuild the --root links from the committed yaw.csv")
    args = ap.parse_args(argv)

    table = OUT / "yaw.csv"
    if not args.links_only:
        with open(args.source / "lfw_overlap.csv", newline="") as fh:
            leave_out = {row["celeba_id"] for row in csv.DictReader(fh)}
        rows = survey(args.source, leave_out)
        OUT.mkdir(parents=True, exist_ok=True)
        with open(table, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    numbers = {(r["identity"], r["file"]): int(r["number"]) for r in rows}
    link_root(args.source, numbers, args.links)
    if args.links_only:
        return 0
    images = [PoseImage(r["identity"], r["file"], float(r["yaw_index"]), float(r["score"])) for r in rows if r["yaw_index"]]
    folds = build_pairs(images, args.frontal_max, args.profile_min, args.folds)
    (OUT / "pairs_frontal_profile.txt").write_text(pairs_text(folds, numbers))
    yaws = np.abs([m.yaw_index for m in images])
    in_pairs = {(m.identity, m.file) for fold in folds for a, b, _ in fold for m in (a, b)}
    print(f"{len(rows)} photos, {len(images)} with a face; frontal {np.sum(yaws <= args.frontal_max)}, "
          f"profile {np.sum(yaws >= args.profile_min)}; {args.folds} folds x {len(folds[0]) // 2} pairs per class; "
          f"{len(in_pairs)} photos used")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
