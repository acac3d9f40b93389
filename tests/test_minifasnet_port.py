"""The MiniFASNet port reproduces the original Silent-Face-Anti-Spoofing implementation.

REFERENCE was computed once with the authors' own code at commit b6d5f04 (their RetinaFace box, their
`CropImage`, their `MiniFASNet.py`, the original .pth files) by `scripts/minifasnet_reference.py` on real NUAA
frames. Here the shipped weights (facerec/weights/minifasnet_*), facerec's crop and facerec's network must give
the same softmax from the same box: measured max abs difference 1.2e-6 (V2) and 1.2e-7 (V1SE).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from conftest import need
from facerec.errors import ModelError
from facerec.io import load_image
from facerec.models.base import WEIGHTS_ROOT
from facerec.models.liveness import adapt_box, get_liveness_model, liveness_models
from facerec.models.minifasnet import crop_box

# (frame, the original detector's [left, top, width, height], [V2 softmax, V1SE softmax])
REFERENCE = [
    ('ClientRaw/0001/0001_00_00_01_0.jpg', [249, 152, 183, 183], [[0.0648653507, 0.610716522, 0.324418098], [0.00783277862, 0.978938699, 0.01322849]]),
    ('ClientRaw/0012/0012_01_07_03_105.jpg', [241, 170, 137, 138], [[5.1544398e-06, 0.99796921, 0.00202568923], [2.0230932e-06, 0.998878896, 0.00111905125]]),
    ('ImposterRaw/0003/0003_01_08_03_81.jpg', [144, 64, 202, 203], [[0.999991894, 3.06190691e-06, 5.02370858e-06], [0.999999166, 2.84863006e-07, 6.31580463e-07]]),
    ('ImposterRaw/0005/0005_00_00_01_122.jpg', [261, 211, 153, 162], [[0.999997973, 4.14485157e-08, 2.08230085e-06], [0.999999642, 9.35793381e-08, 1.89183524e-07]]),
]
MEMBERS = ("minifasnet-v2", "minifasnet-v1se")


@pytest.fixture(scope="module")
def nuaa(data_dir):
    root = data_dir / "liveness" / "nuaa"
    need((root / REFERENCE[0][0]).is_file(), f"NUAA frames not found under {root}")
    return root


def test_port_reproduces_the_original_softmax(nuaa):
    import torch

    frames = [load_image(nuaa / rel) for rel, _, _ in REFERENCE]
    for j, model_id in enumerate(MEMBERS):
        model = get_liveness_model(model_id)
        bgr = [np.ascontiguousarray(f[..., ::-1]) for f in frames]
        from facerec.models.minifasnet import minifasnet_crop

        crops = np.stack([minifasnet_crop(b, box, model.scale) for b, (_, box, _) in zip(bgr, REFERENCE)])
        net = model._ensure()
        with torch.inference_mode():
            from facerec.models.minifasnet import to_input

            softmax = torch.softmax(net(to_input(crops)), dim=1).numpy()
        expected = np.array([probs[j] for _, _, probs in REFERENCE])
        assert np.abs(softmax - expected).max() <= 1e-5, (model_id, np.abs(softmax - expected).max())
        # the public score is class 1 of that softmax
        np.testing.assert_allclose(model.score_crops(crops), expected[:, 1], atol=1e-5)


def test_original_crop_box_arithmetic():
    # centred, inside the frame: a 100x100 box x2 around its centre
    assert crop_box(640, 480, (270, 190, 100, 100), 2.0) == (220, 140, 420, 340)
    # too wide to fit at 4.0: the scale drops to (w - 1) / box_w, then the box is shifted inside
    x1, y1, x2, y2 = crop_box(640, 480, (0, 0, 200, 100), 4.0)
    assert (x1, x2) == (0, 639) and y1 == 0 and y2 <= 479
    # near the right edge: shifted left, keeping its size
    assert crop_box(640, 480, (600, 200, 40, 40), 2.0) == (559, 180, 639, 260)


def test_cards_declare_weights_licence_and_provenance():
    for folder in ("minifasnet_v2", "minifasnet_v1se"):
        card = json.loads((WEIGHTS_ROOT / folder / "model.json").read_text())
        weights = WEIGHTS_ROOT / folder / card["weights_file"]
        assert hashlib.sha256(weights.read_bytes()).hexdigest() == card["weights_sha256"]
        assert card["kind"] == "liveness" and card["input"]["colour"] == "BGR" and card["input"]["size"] == [80, 80]
        assert card["weights_licence"].startswith("Apache-2.0")
        assert "Apache License" in (WEIGHTS_ROOT / folder / "LICENSE").read_text()
        assert "b6d5f04ad78778917853b25c778acef6d5626d15" in card["provenance"]
        assert "undisclosed" in card["training_data"]
        assert 0.0 < card["threshold"] < 1.0 and "session 03 not used" in card["threshold_provenance"]
        assert set(card["input"]["box_adapter"]) >= {"kind", "provenance"}
        assert card["input"]["colour_normalise"] in ("none", "grey_world") and card["input"]["colour_normalise_provenance"]


def test_models_by_id_and_the_default():
    known = liveness_models()
    assert {"texture-v2", "minifasnet-v2", "minifasnet-v1se", "minifasnet-fusion"} <= set(known)
    assert get_liveness_model("texture-v2").card.id == "texture-v2"
    assert get_liveness_model().card.id in ("minifasnet-v2", "minifasnet-fusion")
    with pytest.raises(ModelError, match="unknown liveness model"):
        get_liveness_model("no-such-model")


def test_box_adapter_maps_an_mtcnn_box():
    adapter = {"centre_x": 0.1, "centre_y": -0.2, "width": 1.5, "height": 1.2}
    # box 100 x 200 centred at (150, 200): centre -> (160, 160), size -> 150 x 240
    assert adapt_box((100, 100, 200, 300), adapter) == [85, 40, 150, 240]
    assert adapt_box((100, 100, 200, 300), None) == [100, 100, 100, 200]


def test_default_model_on_real_frames(nuaa):
    """Session 03 frames (never used for the box adapter or threshold): a live face is live, a print is not."""
    from facerec.face.detect import detect_faces
    from facerec.face.pipeline import shared_detector

    model = get_liveness_model()
    detector = shared_detector(20)
    for rel, live in (("ClientRaw/0012/0012_01_07_03_105.jpg", True), ("ImposterRaw/0003/0003_01_08_03_81.jpg", False)):
        rgb = load_image(nuaa / rel)
        face = detect_faces(detector, rgb, 0.9, 20)[0]
        decision = model.decide(rgb, face)
        assert decision.is_live is live, (rel, decision)
        assert set(decision.to_dict()) == {"is_live", "score", "threshold", "reason"}


def test_grey_world_crop_ignores_a_warm_light(nuaa):
    """The declared colour normalisation divides out a white-balance change of the whole frame (the stress test's
    weakest point without it): the normalised crops of a frame and of its warm-lit copy nearly agree."""
    from facerec.evaluation.perturb import PERTURBATIONS
    from facerec.models.liveness import MiniFASNetModel

    model = MiniFASNetModel(WEIGHTS_ROOT / "minifasnet_v2")
    need(model.card.input["colour_normalise"] == "grey_world", "card does not declare grey_world")
    rgb = load_image(nuaa / REFERENCE[1][0])
    warm = PERTURBATIONS["white balance warm (R x1.2, B x0.8)"](rgb)
    box = (241, 170, 241 + 137, 170 + 138)
    normalised = [model.crop(x, box).astype(float) for x in (rgb, warm)]
    from facerec.models.minifasnet import minifasnet_crop

    bgr = [np.ascontiguousarray(x[..., ::-1]) for x in (rgb, warm)]
    unnormalised = [minifasnet_crop(b, adapt_box(box, model.card.input["box_adapter"]), model.scale).astype(float) for b in bgr]

    def cast(crop):  # channel means relative to their mean
        m = crop.reshape(-1, 3).mean(axis=0)
        return m / m.mean()

    before = np.abs(cast(unnormalised[0]) - cast(unnormalised[1])).max()
    after = np.abs(cast(normalised[0]) - cast(normalised[1])).max()
    assert before > 0.1 and after < 0.02, (before, after)  # measured 0.175 and 0.003
