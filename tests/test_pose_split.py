"""The frontal-vs-profile split: yaw from landmarks, the pairs file the evaluator reads, and its photos' poses."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from conftest import REPO, need
from facerec.evaluation.lfw_protocol import read_pairs
from facerec.evaluation.pose import PoseImage, build_pairs, link_root, number_images, pairs_text, yaw_index

SPLIT = REPO / "benchmarks" / "pose_split"
FRONTAL_MAX, PROFILE_MIN = 0.15, 0.6  # scripts/build_pose_split.py defaults, used for the committed file

EYES = [[40.0, 50.0], [72.0, 50.0]]
MOUTH = [[44.0, 90.0], [68.0, 90.0]]


def landmarks(nose_x: float) -> np.ndarray:
    return np.array(EYES[:2] + [[nose_x, 70.0]] + MOUTH)


def test_yaw_index_is_nose_offset_in_half_eye_distances():
    assert yaw_index(landmarks(56.0)) == pytest.approx(0.0)
    assert yaw_index(landmarks(72.0)) == pytest.approx(1.0)  # nose under the right eye
    assert yaw_index(landmarks(48.0)) == pytest.approx(-0.5)


def synthetic_images(people: int = 12) -> list[PoseImage]:
    rng = np.random.default_rng(1)
    out = []
    for p in range(people):
        for k, yaw in enumerate(rng.choice([0.0, 0.05, 0.1, 0.7, -0.9, 0.3], size=6)):
            out.append(PoseImage(f"id{p:02d}", f"{k:06d}.jpg", float(yaw), 0.99))
    return out


def test_pairs_are_frontal_vs_profile_balanced_and_identity_disjoint(tmp_path):
    images = synthetic_images()
    folds = build_pairs(images, FRONTAL_MAX, PROFILE_MIN, folds=3)
    seen: list[set[str]] = []
    for fold in folds:
        assert sum(same for *_, same in fold) == len(fold) // 2 > 0
        for a, b, same in fold:
            assert abs(a.yaw_index) <= FRONTAL_MAX and abs(b.yaw_index) >= PROFILE_MIN
            assert (a.identity == b.identity) == same
        seen.append({m.identity for a, b, _ in fold for m in (a, b)})
    assert all(not (seen[i] & seen[j]) for i in range(3) for j in range(i + 1, 3))
    # the evaluator reads the file back through the link folder, pair for pair
    numbers = number_images(images)
    (tmp_path / "pairs.txt").write_text(pairs_text(folds, numbers))
    source = tmp_path / "src"
    for m in images:
        (source / m.identity).mkdir(parents=True, exist_ok=True)
        (source / m.identity / m.file).write_bytes(b"x")
    root = link_root(source, numbers, tmp_path / "root")
    pairs = read_pairs(tmp_path / "pairs.txt", root)
    flat = [t for fold in folds for t in fold]
    assert len(pairs) == len(flat)
    for pair, (a, b, same) in zip(pairs, flat):
        assert pair.same == same
        assert pair.path_a.resolve() == (source / a.identity / a.file).resolve()
        assert pair.path_b.resolve() == (source / b.identity / b.file).resolve()


def test_committed_split_matches_its_photos(data_dir, tmp_path):
    """The committed pairs file reads, every photo exists, no LFW-overlap identity is in it, and MTCNN on a few
    of its photos gives the yaw recorded in yaw.csv (so 'frontal' and 'profile' mean what they say)."""
    from facerec.evaluation.pairs import RELAXED_SCORE
    from facerec.face.selection import select_subject
    from facerec.face.detect import detect_faces
    from facerec.face.pipeline import shared_detector
    from facerec.io import load_image

    source = data_dir / "faces" / "celeba_wild"
    need(source.is_dir(), f"celeba_wild not found at {source}")
    with open(SPLIT / "yaw.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    numbers = {(r["identity"], r["file"]): int(r["number"]) for r in rows}
    root = link_root(source, numbers, tmp_path / "root")
    pairs = read_pairs(SPLIT / "pairs_frontal_profile.txt", root)
    assert all(p.path_a.exists() and p.path_b.exists() for p in pairs)
    with open(source / "lfw_overlap.csv", newline="") as fh:
        overlap = {r["celeba_id"] for r in csv.DictReader(fh)}
    assert not overlap & ({p.path_a.parent.name for p in pairs} | {p.path_b.parent.name for p in pairs})
    by_link = {(r["identity"], int(r["number"])): r for r in rows}
    detector = shared_detector(40)
    for pair in pairs[:2] + pairs[-2:]:
        for path, frontal in ((pair.path_a, True), (pair.path_b, False)):
            identity, number = path.parent.name, int(path.stem.rsplit("_", 1)[1])
            recorded = float(by_link[(identity, number)]["yaw_index"])
            rgb = load_image(path)
            face = select_subject(detect_faces(detector, rgb, RELAXED_SCORE, 40), rgb.shape).subject
            assert yaw_index(face.landmarks) == pytest.approx(recorded, abs=1e-3)
            assert (abs(recorded) <= FRONTAL_MAX) if frontal else (abs(recorded) >= PROFILE_MIN)
