"""The PyTorch port of dlib's ResNet-29 reproduces dlib's own face descriptors on dlib's own chips."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np

from conftest import need
from facerec.models.base import WEIGHTS_ROOT

MODEL_DIR = WEIGHTS_ROOT / "dlib_resnet29"
N_IMAGES = 40
MIN_COSINE = 0.999


def require_peer():
    """dlib and its models: a test dependency that `make test` installs, so CI must have them."""
    reason = "the dlib reference peer is not installed (pip install '.[test]', see the Makefile)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # face_recognition_models imports the deprecated pkg_resources
            import dlib
            import face_recognition_models
    except ImportError:
        need(False, reason)
    return dlib, face_recognition_models


def test_shipped_weights_match_declared_sha256():
    from facerec.models.base import ModelCard

    card = ModelCard.load(MODEL_DIR)
    digest = hashlib.sha256((MODEL_DIR / card.weights_file).read_bytes()).hexdigest()
    assert digest == card.weights_sha256
    assert card.embedding_dim == 128 and (card.template.width, card.template.height) == (150, 150)


def test_port_matches_dlib_on_dlib_chips(lfw):
    dlib, frm = require_peer()
    from PIL import Image

    from facerec.models.dlib_resnet import DlibResNetEmbedder

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    encoder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    people = sorted(p for p in lfw.iterdir() if p.is_dir())
    chips, reference = [], []
    for person in people[: 2 * N_IMAGES]:
        if len(chips) == N_IMAGES:
            break
        img = np.asarray(Image.open(sorted(person.glob("*.jpg"))[0]).convert("RGB"))
        dets = detector(img, 1)
        if len(dets) == 0:
            continue
        shape = predictor(img, dets[0])
        chip = np.asarray(dlib.get_face_chip(img, shape, size=150, padding=0.25))
        chips.append(chip)
        reference.append(np.asarray(encoder.compute_face_descriptor(chip), dtype=np.float64))
    assert len(chips) == N_IMAGES, f"dlib found faces in only {len(chips)} LFW images"

    model = DlibResNetEmbedder(MODEL_DIR)
    model.ensure_loaded()
    raw = model._embed(np.stack(chips)).astype(np.float64)  # unnormalised, comparable with dlib's output
    ref = np.stack(reference)
    cosine = (raw * ref).sum(1) / np.linalg.norm(raw, axis=1) / np.linalg.norm(ref, axis=1)
    rel_err = np.linalg.norm(raw - ref, axis=1) / np.linalg.norm(ref, axis=1)
    assert cosine.min() >= MIN_COSINE, f"min cosine {cosine.min():.6f} (mean {cosine.mean():.6f})"
    assert rel_err.max() < 0.01, f"max relative L2 error {rel_err.max():.4f}"
    # the public path (L2-normalised) agrees too
    unit = model.embed(np.stack(chips))
    assert np.allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    assert ((unit * (ref / np.linalg.norm(ref, axis=1, keepdims=True))).sum(1)).min() >= MIN_COSINE
