"""Batched MTCNN (facerec.face.mtcnn_batch) against facenet-pytorch's own MTCNN run one photo at a time.

Real photos of mixed sizes (LFW 176 px, CelebA 160 px, NUAA 640x480 webcam frames, crops and rescales of them
that share a size bucket with photos of another size, and mosaics holding several faces), detected together in
one call: every face found one at a time is found in the batch (IoU >= 0.95, same count per photo), with the same
score and landmarks up to float rounding, and the pipeline's embeddings of the batch equal those of faces
detected one at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facerec.face.align import align_face
from facerec.face.detect import detect_faces, detect_faces_many
from facerec.face.mtcnn_batch import _bucket_key
from facerec.face.pipeline import FacePipeline, shared_detector
from facerec.models.registry import get_model

MIN_FACE = 20


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def photos(data_dir: Path) -> list[np.ndarray]:
    lfw = sorted((data_dir / "faces" / "lfw").glob("*/*.jpg"))[::700][:14]
    celeba = sorted((data_dir / "faces" / "celeba_wild").glob("*/*.jpg"))[::600][:6]
    nuaa = sorted((data_dir / "liveness" / "nuaa" / "ClientRaw").glob("*/*.jpg"))[::150][:3]
    assert len(lfw) == 14 and len(celeba) == 6 and len(nuaa) == 3
    images = [_rgb(p) for p in lfw + celeba + nuaa]
    extra = [
        images[0][3:173, 5:171],  # 170x166: the 176-px photos' bucket, another size (padding must not leak)
        images[1][:165, :172],
        _resize(images[2], 190, 180),
        _resize(images[14], 150, 140),
        _resize(images[3], 96, 96),  # small faces
        _resize(images[20], 1000, 750),  # a larger frame: a deeper pyramid than its bucket neighbours
        np.concatenate([np.concatenate(images[4:6], 1), np.concatenate(images[6:8], 1)], 0),  # 4 faces
        np.concatenate(images[8:11], 1),  # 3 faces side by side, 528x176
        images[11][70:, 30:150],  # a close-up cut by the border (the padded re-detection path)
        np.full((15, 40, 3), 128, np.uint8),  # smaller than the minimum face: no pyramid at all
    ]
    return images + extra


def _reference(rgb: np.ndarray):
    """facenet-pytorch's MTCNN.detect on one photo (the original implementation), as float arrays."""
    from facenet_pytorch import MTCNN

    net = _reference.__dict__.setdefault("net", MTCNN(keep_all=True, post_process=False, device="cpu",
                                                      min_face_size=MIN_FACE))
    if min(rgb.shape[:2]) < MIN_FACE:
        return np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, 5, 2))
    boxes, probs, points = net.detect(rgb, landmarks=True)
    if boxes is None:
        return np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, 5, 2))
    return (np.asarray(boxes.tolist(), float).reshape(-1, 4), np.asarray(probs.tolist(), float).reshape(-1),
            np.asarray(points.tolist(), float).reshape(-1, 5, 2))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_batch_equals_one_photo_at_a_time(photos):
    shapes = {}
    for rgb in photos:
        shapes.setdefault(_bucket_key(*rgb.shape[:2]), set()).add(rgb.shape[:2])
    assert any(len(s) > 1 for s in shapes.values()), "no bucket mixes photo sizes: padding is untested"
    detector = shared_detector(MIN_FACE)
    batched = detector.detect_many(photos)
    total = 0
    for k, (rgb, (boxes, scores, points)) in enumerate(zip(photos, batched)):
        ref_boxes, ref_scores, ref_points = _reference(rgb)
        assert len(boxes) == len(ref_boxes), f"photo {k} {rgb.shape}: {len(boxes)} faces, one at a time {len(ref_boxes)}"
        for rb, rs, rp in zip(ref_boxes, ref_scores, ref_points):
            j = max(range(len(boxes)), key=lambda i: _iou(rb, boxes[i]))
            assert _iou(rb, boxes[j]) >= 0.95
            assert abs(scores[j] - rs) < 1e-4
            assert np.abs(points[j] - rp).max() < 0.05 and np.abs(boxes[j] - rb).max() < 0.05
        total += len(ref_boxes)
    assert total >= 30  # the mosaics hold several faces each


class _OneAtATime:
    """facenet-pytorch's MTCNN behind the `detect(rgb)` interface: facerec's detection rule (score and size
    filters, the padded re-detection of close-ups) over the original implementation."""

    def detect(self, rgb: np.ndarray):
        return _reference(rgb)


def test_pipeline_batch_equals_one_at_a_time(photos):
    """analyse_many (one detection batch, one embedding batch) gives the faces and embeddings of detection with
    the original MTCNN photo by photo, the padded re-detection of a close-up cut by the border included."""
    pipeline = FacePipeline(get_model("mobilefacenet"), min_size=MIN_FACE)
    many = pipeline.analyse_many(photos)
    for k, (rgb, analysed) in enumerate(zip(photos, many)):
        single = detect_faces(_OneAtATime(), rgb, pipeline.min_score, pipeline.min_size)
        assert len(analysed.faces) == len(single), f"photo {k} {rgb.shape}"
        for face, det in zip(analysed.faces, single):
            assert _iou(face.detection.box, det.box) >= 0.95
            crop = align_face(rgb, det.landmarks, pipeline.model.template)
            ref = pipeline.model.embed(crop[None], flip_fusion=pipeline.flip_fusion)[0]
            assert float(np.dot(face.embedding, ref)) > 0.9999
    edge = photos[-2]  # the close-up: its first detection runs past the border
    boxes = _reference(edge)[0]
    assert len(boxes) and (boxes[:, :2].min() < 0 or boxes[:, 2].max() > edge.shape[1]
                           or boxes[:, 3].max() > edge.shape[0])
    assert detect_faces_many(pipeline.detector, [edge])[0][0].box.round(2).tolist() == \
        detect_faces(_OneAtATime(), edge)[0].box.round(2).tolist()
