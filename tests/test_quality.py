"""The enrollment quality gate on real faces, and the alignment maths against scikit-image."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageFilter

from conftest import lfw_image, run_cli
from facerec.face.align import similarity_transform
from facerec.face.detect import Detection
from facerec.face.quality import QualityPolicy, assess, pose_ratios


def test_similarity_transform_matches_skimage():
    from skimage.transform import SimilarityTransform

    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, size=(5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = scale * src @ rot.T + shift + rng.normal(0, 0.5, size=(5, 2))
    reference = SimilarityTransform.from_estimate(src, dst) if hasattr(SimilarityTransform, "from_estimate") else None
    if reference is None:
        reference = SimilarityTransform()
        reference.estimate(src, dst)
    np.testing.assert_allclose(similarity_transform(src, dst), reference.params[:2], atol=1e-8)


def test_pose_ratios_of_frontal_and_turned_faces():
    frontal = np.array([[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]], float)
    yaw, pitch = pose_ratios(frontal)
    assert yaw == pytest.approx(0) and pitch == pytest.approx(0.5)
    turned = frontal.copy()
    turned[2, 0] = 78  # nose near the right eye: head turned
    assert pose_ratios(turned)[0] == pytest.approx(0.45)
    rotated = frontal @ np.array([[0, -1], [1, 0]]).T  # in-plane rotation changes nothing
    assert pose_ratios(rotated) == pytest.approx((0, 0.5))


def test_gate_names_each_problem():
    policy = QualityPolicy.load()
    landmarks = np.array([[40, 50], [80, 50], [78, 70], [45, 90], [75, 90]], float)
    weak_small_turned = Detection(np.array([0, 0, 30, 30.0]), 0.91, landmarks)
    flat_image = np.full((150, 150, 3), 128, np.uint8)
    report = assess(weak_small_turned, flat_image, policy)
    text = "; ".join(report.problems)
    for words in ("weak detection", "too small", "too blurred", "turned too far"):
        assert words in text
    assert not report.passed


@pytest.mark.parametrize("damage,reason", [("blur", "too blurred"), ("shrink", "too small")])
def test_enroll_refuses_poor_photos_unless_forced(tmp_path, lfw, damage, reason):
    photo = Image.open(lfw_image(lfw, "Colin_Powell", 1))
    if damage == "blur":
        photo = photo.filter(ImageFilter.GaussianBlur(4))
    else:
        photo = photo.resize((60, 60), Image.Resampling.BILINEAR)
    path = tmp_path / f"{damage}.png"
    photo.save(path)
    db = str(tmp_path / "f.db")
    refused = run_cli("--db", db, "enroll", "Colin Powell", str(path))
    assert refused.returncode == 2 and reason in refused.stderr and "--force" in refused.stderr
    forced = run_cli("--db", db, "enroll", "Colin Powell", str(path), "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    from facerec.store import Store
    from sqlalchemy import select
    from facerec.store.schema import Template

    with Store.open(f"sqlite:///{db}").session() as s:
        template = s.scalars(select(Template)).one()
        assert template.forced is True and template.quality["passed"] is False
        assert any(reason in p for p in template.quality["problems"])
    assert json.loads(forced.stdout)["added"] == 1
