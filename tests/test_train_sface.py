"""The trainer drives the SFace backbone chosen by model id (its card's runtime `onnx` -> the chain port of its
graph): the port equals ONNX Runtime on real aligned crops, a few fine-tuning steps on real CelebA crops
lower the loss with the frozen stages untouched, and the exported folder runs in facerec's ONNX runtime with
the trained weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")

from facerec.models.onnx_embedder import OnnxEmbedder  # noqa: E402
from facerec.train.backbones import backbone_stages, resolve_backbone  # noqa: E402
from facerec.train.data import build_crop_cache, load_cache, pairs_identities, parse_folds  # noqa: E402
from facerec.train.loop import TrainConfig, train  # noqa: E402
from facerec.train.onnx_port import OnnxChainNet  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SFACE = REPO / "facerec" / "weights" / "sface_2021dec"
POSE_PAIRS = REPO / "benchmarks" / "pose_split" / "pairs_frontal_profile.txt"


@pytest.fixture(scope="module")
def sface_cache(data_dir, tmp_path_factory):
    """16 real CelebA photos (4 identities x 4), detected and aligned onto SFace's template by the pipeline."""
    folder = tmp_path_factory.mktemp("sface_crops")
    build_crop_cache(data_dir / "faces" / "celeba_wild", folder, model_id="sface_2021dec", limit_identities=4,
                     max_per_identity=4, encoding="raw", progress=False)
    return folder


def test_port_equals_onnx_runtime_on_real_crops(sface_cache):
    torch.set_num_threads(1)
    crops = load_cache(sface_cache).images
    runtime = OnnxEmbedder(SFACE)
    runtime.ensure_loaded()
    net = OnnxChainNet.from_folder(SFACE).eval()
    with torch.no_grad():
        ours = net(torch.from_numpy(runtime.preprocess(crops))).numpy()
    reference = runtime._embed(crops)
    assert ours.shape == reference.shape == (len(crops), 128)
    assert np.abs(ours - reference).max() < 1e-4 * np.abs(reference).max()
    assert net.stages()[:3] == ["conv_1", "conv_2_dw", "conv_2"] and net.stages()[-3:] == ["bn1", "pre_fc1", "fc1"]


def test_finetune_by_model_id_lowers_loss_and_exports_a_runnable_folder(sface_cache, tmp_path):
    card = json.loads((SFACE / "model.json").read_text())
    assert resolve_backbone("auto", card) == "onnx"
    result = train(TrainConfig(
        cache=str(sface_cache), out=str(tmp_path / "run"), base_model="sface_2021dec", init="pretrained",
        freeze_until="conv_13", loss="both", arcface_weight=1.0, epochs=3, p=2, k=2, batches_per_epoch=2,
        val_fraction=0.25, lr=3e-3, warmup_epochs=0, augment=False, progress=False, threads=1,
        export_id="sface_test_ft", val_impostors=100, patience=0,
    ))
    h = result.history
    assert h[0]["val_auc"] > 0.7  # the pretrained base, epoch 0
    assert h[-1]["train_loss"] < 0.9 * h[1]["train_loss"]  # the same 8 training photos each epoch: it learns them
    net = OnnxChainNet.from_folder(SFACE)
    base = {k: v.clone() for k, v in net.state_dict().items()}
    last = torch.load(result.last_checkpoint, map_location="cpu", weights_only=False)["model"]
    stages = backbone_stages(net)
    frozen = set(stages[: stages.index("conv_13") + 1])
    changed = {net.stage_of(k) for k in last if not torch.equal(last[k], base[k])}
    assert changed and not changed & frozen and "fc1" in changed

    folder = result.export_dir
    exported = json.loads((folder / "model.json").read_text())
    assert exported["id"] == "sface_test_ft" and exported["extra"]["runtime"] == "onnx"
    assert exported["template"] == card["template"] and "exactness_vs_original" not in exported["extra"]
    assert "non-commercial" in exported["training_data_licence"] and exported["extra"]["commercial_use"].startswith("no")
    crops = load_cache(sface_cache).images[:6]
    net.load_state_dict(torch.load(result.best_checkpoint, map_location="cpu", weights_only=False)["model"])
    with torch.no_grad():
        want = torch.nn.functional.normalize(net.eval()(torch.from_numpy(crops).permute(0, 3, 1, 2).float()), dim=1)
    got = OnnxEmbedder(folder).embed(crops)
    assert (np.sum(want.numpy() * got, axis=1) > 0.9999).all()  # float16 / int8 storage of the trained weights


def test_holdout_folds_are_identity_disjoint(sface_cache, tmp_path):
    assert parse_folds("6-10") == [5, 6, 7, 8, 9] and parse_folds("1,3") == [0, 2]
    test_ids = pairs_identities(POSE_PAIRS, "6-10")
    assert len(test_ids) == 100 and set(test_ids).isdisjoint(pairs_identities(POSE_PAIRS, "1-5"))
    cache = load_cache(sface_cache)
    result = train(TrainConfig(
        cache=str(sface_cache), out=str(tmp_path / "run"), base_model="sface_2021dec", freeze_until="all",
        loss="arcface", epochs=0, p=2, k=2, val_fraction=0.0, holdout_pairs=str(POSE_PAIRS), holdout_folds="6-10",
        progress=False, threads=1, export=False,
    ))
    split = json.loads((result.run_dir / "split.json").read_text())
    held = set(split["held_out"]["identities"]) & set(cache.identities)
    assert held and held.isdisjoint(split["train"] + split["val"])
    assert set(cache.identities) - held == set(split["train"])
