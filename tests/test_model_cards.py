"""One card format and one loader for every kind of model; every weights file checked against its sha256."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from facerec.errors import ModelError
from facerec.models.base import WEIGHTS_ROOT, read_card
from facerec.models.mobilefacenet import MobileFaceNetEmbedder
from facerec.models.mtcnn import verify_package_weights


@pytest.mark.parametrize("folder, file, kind", [
    ("mobilefacenet", "model.json", "embedding"), ("dlib_resnet29", "model.json", "embedding"),
    ("mtcnn", "model.json", "detector"), ("verifier_dlib_resnet29", "verifier.json", "verifier"),
    ("minifasnet_v2", "model.json", "liveness"), ("minifasnet_fusion", "model.json", "liveness"),
    ("liveness", "model.json", "liveness"),
])
def test_shipped_cards_read_with_one_loader(folder, file, kind):
    card = read_card(WEIGHTS_ROOT / folder / file, kind)
    assert card["id"] and card["provenance"] and card["weights_licence"]


def test_damaged_weights_are_a_model_error(tmp_path):
    folder = shutil.copytree(WEIGHTS_ROOT / "mobilefacenet", tmp_path / "mobilefacenet")
    card = json.loads((folder / "model.json").read_text())
    weights = folder / card["weights_file"]
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # one flipped bit
    weights.write_bytes(bytes(blob))
    with pytest.raises(ModelError, match="sha256"):
        MobileFaceNetEmbedder(folder).embed(np.zeros((1, 112, 112, 3), np.uint8))


def test_malformed_or_wrong_kind_cards_are_refused(tmp_path):
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        read_card(tmp_path / "model.json", "embedding")
    with pytest.raises(ModelError, match="expected 'embedding'"):
        read_card(WEIGHTS_ROOT / "mtcnn" / "model.json", "embedding")
    (tmp_path / "model.json").write_text(json.dumps({"id": "x", "version": "1"}))
    with pytest.raises(ModelError, match="lacks"):
        read_card(tmp_path / "model.json", "embedding")


def test_detector_weights_in_the_installed_package_match_the_card():
    verify_package_weights()
