"""facerec.train end to end on CPU: the crop cache, split and pairs, augmentation, a tiny training run that
learns (loss down, validation AUC up), exact resume, fine-tuning dlib's ResNet with frozen stages and exporting
it as a model folder the runtime loads, and the cache built from celeba_wild photos by the inference pipeline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from facerec.train.cli import main
from facerec.train.data import (
    AugmentConfig,
    Augmenter,
    CacheWriter,
    CropDataset,
    load_cache,
    split_identities,
    template_is_usable,
    verification_pairs,
)
from facerec.train.loop import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
DLIB_FOLDER = REPO / "facerec" / "weights" / "dlib_resnet29"


# -------------------------------------------------------------------------------------------- synthetic data
def synthetic_images(n_ids: int, per_id: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each identity is a coloured grating (orientation, frequency, colour); every photo of it has a random
    phase, amplitude, background ramp and noise, so raw pixels barely tell identities apart (validation AUC of
    an untrained net ~0.5) but the identity features generalise to unseen identities."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images, labels = [], []
    for ident in range(n_ids):
        theta, freq, colour = rng.uniform(0, np.pi), rng.uniform(2, 7), rng.uniform(0.2, 1.0, 3)
        for _ in range(per_id):
            t = theta + rng.normal(0, 0.08)
            wave = np.sin(2 * np.pi * freq * (xx * np.cos(t) + yy * np.sin(t)) + rng.uniform(0, 2 * np.pi))
            ramp = rng.uniform(0, 2 * np.pi)
            bg = rng.uniform(60, 190) + rng.uniform(-50, 50) * (xx * np.cos(ramp) + yy * np.sin(ramp))
            img = bg[..., None] + rng.uniform(40, 80) * wave[..., None] * colour + rng.normal(0, 20, (size, size, 3))
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(ident)
    return np.stack(images), np.asarray(labels)


def write_synthetic_cache(folder: Path, n_ids: int, per_id: int, size: int, template=None, **kw) -> dict:
    images, labels = synthetic_images(n_ids, per_id, size)
    template = template or {"width": size, "height": size,
                            "points": [[0.3 * size, 0.4 * size], [0.7 * size, 0.4 * size], [0.5 * size, 0.55 * size],
                                       [0.35 * size, 0.75 * size], [0.65 * size, 0.75 * size]]}
    writer = CacheWriter(folder, template, [f"id{i:02d}" for i in range(n_ids)],
                         meta={"source_name": "synthetic", "lfw_overlap": []}, **kw)
    for i, (img, label) in enumerate(zip(images, labels)):
        writer.add(img, int(label), f"id{label:02d}/{i}.png")
    return writer.close()


# ----------------------------------------------------------------------------------------------- the cache
@pytest.mark.parametrize("encoding", ["raw", "jpeg"])
def test_cache_roundtrip_and_shard_limit(tmp_path, encoding):
    images, labels = synthetic_images(5, 6, 40)
    shard_mib = 40 * 40 * 3 * 7 / 2**20 if encoding == "raw" else 0.01  # a few crops per shard
    meta = write_synthetic_cache(tmp_path, 5, 6, 40, encoding=encoding, shard_mib=shard_mib)
    assert len(meta["shards"]) > 2
    for shard in meta["shards"]:
        assert shard["bytes"] <= shard_mib * 2**20 + 256  # + the .npy header
    cache = load_cache(tmp_path)
    assert cache.images.shape == (30, 40, 40, 3) and cache.images.dtype == np.uint8
    assert cache.labels.tolist() == labels.tolist()
    assert cache.meta["images_per_identity"] == [6] * 5
    if encoding == "raw":
        assert np.array_equal(cache.images, images)
    else:  # quality-90 JPEG of noisy textures
        assert np.abs(cache.images.astype(int) - images).mean() < 20


def test_placeholder_template_is_refused():
    assert not template_is_usable({"width": 150, "height": 150, "points": [[0, 0]] * 5})
    assert template_is_usable(json.loads((DLIB_FOLDER / "model.json").read_text())["template"])


def test_split_is_identity_disjoint_and_pairs_complete():
    labels = np.repeat(np.arange(20), 5)
    labels[-4:] = 19  # identity 19 has 9 photos
    labels = np.r_[labels, 20]  # identity 20: a single photo, never a validation identity
    names = [f"p{i}" for i in range(21)]
    split = split_identities(labels, names, val_fraction=0.2, seed=3, exclude=["p0", "p7"])
    assert set(split.train_identities).isdisjoint(split.val_identities)
    assert {"p0", "p7"}.isdisjoint(split.train_identities + split.val_identities)
    assert len(split.val_identities) == round(0.2 * 19) and "p20" not in split.val_identities
    assert split_identities(labels, names, 0.2, seed=3, exclude=["p0", "p7"]).val_identities == split.val_identities
    assert sorted(np.unique(split.train_labels)) == list(range(split.n_classes))
    assert [names[labels[i]] for i in split.train_idx] == [split.train_identities[c] for c in split.train_labels]
    i, j, genuine = verification_pairs(split.val_labels, n_impostors=100, seed=0)
    n_gen = sum(c * (c - 1) // 2 for c in np.bincount(split.val_labels))
    assert genuine.sum() == n_gen and (~genuine).sum() == 100
    assert (split.val_labels[i[genuine]] == split.val_labels[j[genuine]]).all()
    assert (split.val_labels[i[~genuine]] != split.val_labels[j[~genuine]]).all()
    assert len(set(zip(i.tolist(), j.tolist()))) == len(i) and (i < j).all()


def test_augmenter_shapes_determinism_and_flip():
    images, _ = synthetic_images(2, 4, 32)
    x = torch.from_numpy(images)
    aug = Augmenter()
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == (8, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and 0 <= float(a.min()) and float(a.max()) <= 255
    assert not torch.equal(a, aug(x, torch.Generator().manual_seed(2)))
    only_flip = Augmenter(AugmentConfig(flip=1.0, jitter=0, grayscale=0, affine=0, blur=0, downscale=0))
    assert torch.equal(only_flip(x), x.permute(0, 3, 1, 2).float().flip(-1))
    every = Augmenter(AugmentConfig(flip=1, jitter=1, grayscale=1, affine=1, blur=1, downscale=1))
    assert torch.isfinite(every(x)).all()
    ds = CropDataset(images, np.zeros(8), mean=(127.5,) * 3, scale=128.0, augmenter=aug)
    img, label = ds[3]
    assert img.shape == (3, 32, 32) and label == 0 and float(img.abs().max()) <= 1.0


# --------------------------------------------------------------------------------------------- training
def tiny_config(cache: Path, out: Path, **kw) -> TrainConfig:
    base = dict(cache=str(cache), out=str(out), base_model=None, backbone="tiny", init="scratch", loss="both",
                epochs=10, p=6, k=4, lr=3e-3, val_fraction=0.25, arcface_s=16.0, arcface_m=0.3, warmup_epochs=1,
                progress=False, patience=0, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_tiny_training_lowers_loss_and_raises_auc(tmp_path):
    write_synthetic_cache(tmp_path / "cache", n_ids=16, per_id=8, size=48)
    result = train(tiny_config(tmp_path / "cache", tmp_path / "run"))
    h = result.history
    assert [e["epoch"] for e in h] == list(range(11))
    assert h[-1]["train_loss"] < 0.7 * h[1]["train_loss"]
    assert h[0]["val_auc"] < 0.65  # untrained: near chance on unseen identities
    assert result.best_metrics["val_auc"] > h[0]["val_auc"] + 0.2
    assert result.best_metrics["val_eer"] < h[0]["val_eer"] - 0.15
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 11
    assert {"train_loss", "val_auc", "val_eer", "val_tar@far=1e-2", "lr", "time_s"} <= set(json.loads(lines[-1]))
    for name in ("config.json", "split.json", "last.pt", "best.pt", "result.json"):
        assert (tmp_path / "run" / name).is_file()
    assert result.export_dir is None  # the tiny net has no runtime to export to


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    write_synthetic_cache(tmp_path / "cache", n_ids=10, per_id=6, size=32)
    kw = dict(epochs=3, p=4, k=3, val_fraction=0.3, loss="both", mining="semi_hard")
    full = train(tiny_config(tmp_path / "cache", tmp_path / "full", **kw))
    cut = train(tiny_config(tmp_path / "cache", tmp_path / "cut", time_limit_s=1e-9, **kw))  # stops after epoch 1
    assert cut.stop_reason == "time_limit"
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 2  # epochs 0 and 1
    resumed = train(tiny_config(tmp_path / "cache", tmp_path / "cut", resume="auto", **kw))

    def strip(history):
        return [{k: v for k, v in e.items() if "time" not in k} for e in history]

    assert strip(resumed.history) == strip(full.history)
    assert resumed.stop_reason == full.stop_reason == "completed"
    a = torch.load(tmp_path / "full" / "last.pt", map_location="cpu", weights_only=False)["model"]
    b = torch.load(tmp_path / "cut" / "last.pt", map_location="cpu", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_fit_runs(tmp_path, capsys):
    write_synthetic_cache(tmp_path / "cache", n_ids=8, per_id=4, size=32)
    code = main(["fit", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run"), "--base-model", "none",
                 "--backbone", "tiny", "--init", "scratch", "--loss", "triplet", "--epochs", "1", "--p", "4",
                 "--k", "2", "--val-fraction", "0.25", "--threads", "1", "--quiet", "--augment-option", "flip=0.0", "--no-augment"])
    assert code == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["loss"] == "triplet" and config["base_model"] is None and config["augment"] is False
    assert config["augment_options"] == {"flip": 0.0}
    assert json.loads(capsys.readouterr().out)["best_epoch"] in (0, 1)


# ------------------------------------------------------------------------------- dlib fine-tune and export
def test_dlib_finetune_freezes_stages_and_exports_a_loadable_model(tmp_path):
    from facerec.models.base import ModelCard
    from facerec.models.dlib_resnet import DlibResNet29, DlibResNetEmbedder, load_state_from_npz, preprocess
    from facerec.models.registry import RUNTIMES

    card = json.loads((DLIB_FOLDER / "model.json").read_text())
    write_synthetic_cache(tmp_path / "cache", n_ids=5, per_id=3, size=150, template=card["template"])
    result = train(TrainConfig(
        cache=str(tmp_path / "cache"), out=str(tmp_path / "run"), base_model="dlib_resnet29", init="pretrained",
        freeze_until="res128", loss="both", epochs=1, p=2, k=2, batches_per_epoch=2, val_fraction=0.4,
        lr=1e-2, progress=False, threads=1, export_id="dlib_test_ft", export_dtype="int12",
    ))
    base = load_state_from_npz(DlibResNet29(), DLIB_FOLDER / card["weights_file"]).state_dict()
    last = torch.load(result.last_checkpoint, map_location="cpu", weights_only=False)["model"]
    for name, value in last.items():
        frozen = name.startswith(("stem.", "blocks.res32", "blocks.res64", "blocks.res128"))
        assert torch.equal(value, base[name]) == frozen, name

    folder = result.export_dir
    assert folder == tmp_path / "run" / "export" / "dlib_test_ft"
    loaded = ModelCard.load(folder)
    assert loaded.id == "dlib_test_ft" and loaded.extra["runtime"] == "dlib_resnet" in RUNTIMES
    assert loaded.template == ModelCard.load(DLIB_FOLDER).template
    assert loaded.normalisation == card["normalisation"]
    assert loaded.extra["base_model"] == "dlib_resnet29" and loaded.extra["training_recipe"]["config"]["loss"] == "both"
    assert loaded.extra["training_recipe"]["init"]["path"] == "facerec/weights/dlib_resnet29/" + card["weights_file"]
    assert "non-commercial" in loaded.training_data_licence
    assert "validation split" in loaded.threshold_provenance and -1 <= loaded.default_threshold <= 1
    assert (folder / "LICENSE").is_file()
    crops = load_cache(tmp_path / "cache").images[:4]
    module = DlibResNet29()
    module.load_state_dict(torch.load(result.best_checkpoint, map_location="cpu", weights_only=False)["model"])
    with torch.no_grad():
        want = torch.nn.functional.normalize(module(preprocess(crops)), dim=1).numpy()
    got = DlibResNetEmbedder(folder).embed(crops)
    assert (np.sum(want * got, axis=1) > 0.9999).all()  # int12 storage


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchvision.io's decoders (still there)
def test_jpeg_decoders_agree(tmp_path):
    from facerec.train.data import decode_jpegs

    write_synthetic_cache(tmp_path, 2, 3, 48)
    data = np.load(tmp_path / "shard-00000.npy")
    offsets = np.load(tmp_path / "shard-00000.offsets.npy")
    ref = decode_jpegs(data, offsets, "cv2").astype(int)
    for backend in ("torchvision", "pil"):
        assert np.abs(decode_jpegs(data, offsets, backend).astype(int) - ref).max() <= 2, backend


# ---------------------------------------------------------------------------------- the real crop cache
def test_crop_cache_from_celeba_wild_matches_the_inference_pipeline(data_dir, tmp_path):
    from facerec.face.pipeline import FacePipeline
    from facerec.models.dlib_resnet import DlibResNetEmbedder
    from facerec.train.data import build_crop_cache

    source = data_dir / "faces" / "celeba_wild"
    meta = build_crop_cache(source, tmp_path / "crops", limit_identities=2, max_per_identity=3, encoding="raw",
                            progress=False)
    cache = load_cache(tmp_path / "crops")
    assert meta["identities"] == sorted(p.name for p in source.iterdir() if p.is_dir())[:2]
    assert len(cache) + meta["n_failures"] == 6 and len(cache) >= 5
    assert cache.images.shape[1:] == (150, 150, 3)
    assert meta["template"] == json.loads((DLIB_FOLDER / "model.json").read_text())["template"]
    # the cached crop is what inference aligns (same detector settings, same template, same aligner)
    pipeline = FacePipeline(DlibResNetEmbedder(DLIB_FOLDER), min_size=20)
    faces = pipeline.faces(source / cache.files[0])
    assert np.array_equal(faces[0].crop, cache.images[0])
    shutil.rmtree(tmp_path / "crops")
