"""The training loop: `train(TrainConfig) -> TrainResult`.

Imports only torch, numpy and facerec modules that need nothing else (no OpenCV, no facenet-pytorch), so it
runs on the GPU machine from a crop cache built elsewhere (see `facerec.train.data`).

What a run writes in `config.out` (the run folder):
    config.json      the resolved configuration
    split.json       train / validation identities (identity-disjoint), excluded and held-out identities
    metrics.jsonl    one line per epoch (epoch 0 = the initial weights, before any step)
    last.pt          full checkpoint (model, head, optimiser, scheduler, scaler, epoch, RNG) for --resume
    best.pt          the best epoch's model + head, by the early-stopping metric
    result.json      the summary returned as TrainResult
    export/<id>/     the best weights as a model folder (model.json + weights.npz + LICENSE) for
                     facerec/weights/ (any backbone built from a base model: dlib, ONNX port)
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerec.decisions.metrics import eer as eer_of
from facerec.decisions.metrics import roc_curve, tar_at_far, threshold_at_far
from facerec.train.backbones import (
    DEFAULT_EXPORT_DTYPE,
    apply_freeze,
    backbone_stages,
    build_backbone,
    embedding_dim_of,
    export_model_folder,
    frozen_stages,
    init_from_scratch,
    load_backbone_weights,
    resolve_backbone,
    set_train_mode,
)
from facerec.train.data import (
    AugmentConfig,
    Augmenter,
    _progress,
    load_cache,
    normalise,
    pairs_identities,
    split_identities,
    template_to_dict,
    verification_pairs,
)
from facerec.train.losses import ArcFaceHead, CombinedLoss, TripletLoss
from facerec.train.sampler import PKSampler

REPO = Path(__file__).resolve().parents[2]
WEIGHTS_ROOT = REPO / "facerec" / "weights"


@dataclass
class TrainConfig:
    """Every knob of a run; the CLI (`python -m facerec.train fit`) mirrors these fields."""

    cache: str  # crop cache folder (python -m facerec.train cache ...)
    out: str = "out/train"  # run folder
    # model
    base_model: str | None = "dlib_resnet29"  # card: template, normalisation, pretrained weights, export
    base_model_folder: str | None = None  # a model folder elsewhere (default facerec/weights/<base_model>)
    backbone: str = "auto"  # auto (the base model's runtime: dlib_resnet29 or onnx) | dlib_resnet29 | onnx | tiny
    embedding_dim: int | None = None  # tiny only (the others: the base model's)
    init: str = "pretrained"  # pretrained (base model's weights) | scratch | path to .npz / .pt
    freeze_until: str | None = None  # stage name: it and every earlier stage stay fixed; "all" = head only
    pretrained_lr_mult: float = 0.1  # LR multiplier of the (unfrozen) pretrained backbone vs the head
    relative_lr: bool = True  # AdamW + pretrained: each backbone tensor's LR x its initial RMS (see below)
    head_warmup_epochs: int = 0  # first epochs train the ArcFace head only
    # loss
    loss: str = "both"  # triplet | arcface | both
    triplet_weight: float = 1.0
    arcface_weight: float = 1.0
    margin: float = 0.2  # triplet margin (chord distance on unit vectors)
    mining: str = "batch_hard"  # batch_hard | semi_hard | all
    distance: str = "euclidean"  # euclidean (chord) | cosine
    arcface_s: float = 32.0
    arcface_m: float = 0.5
    easy_margin: bool = False
    # optimisation
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 5e-4  # not applied to 1-d parameters (affine/BN scales, biases)
    momentum: float = 0.9  # sgd
    epochs: int = 30
    warmup_epochs: float = 1.0  # linear warmup, then cosine to min_lr_ratio * lr
    min_lr_ratio: float = 0.01
    grad_clip: float | None = 5.0
    p: int = 32  # identities per batch
    k: int = 4  # images per identity
    batches_per_epoch: int | None = None  # default: ceil(eligible train images / (P*K))
    # data
    val_fraction: float = 0.1  # of identities, held out (identity-disjoint)
    val_impostors: int = 50_000
    exclude_lfw_overlap: bool = True  # leave out the cache's lfw_overlap identities (train and val)
    holdout_pairs: str | None = None  # an LFW-format pairs file whose `holdout_folds` identities are left out
    holdout_folds: str | None = None  # e.g. "6-10": those folds stay an identity-disjoint test set
    limit_identities: int | None = None  # use only the cache's first N identities (smoke runs)
    augment: bool = True
    augment_options: dict[str, Any] = field(default_factory=dict)  # AugmentConfig overrides
    # run
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 on CUDA, none on CPU) | bf16 | fp16 | none
    seed: int = 0
    deterministic: bool = False
    threads: int | None = None  # torch CPU threads
    early_stop: str = "eer"  # eer | auc
    patience: int = 5  # epochs without improvement > min_delta before stopping (0: never stop early)
    min_delta: float = 0.0
    time_limit_s: float | None = None  # stop (and export) after the epoch that passes this
    resume: str | None = None  # path to last.pt, or "auto" (the run folder's last.pt if present)
    eval_batch_size: int = 256
    progress: bool = True
    # export (dlib backbone)
    export: bool = True
    export_id: str | None = None  # default <base_model>_ft_<cache source name>
    export_version: str = "1"
    export_dtype: str | None = None  # dlib: int12 (default) | int10 | int8 | float16 | float32; onnx: int8 (default) | float16
    export_threshold: bool = True  # default_threshold from the validation split (base's FAR, else EER)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**raw)


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]]
    stopped_early: bool
    stop_reason: str  # completed | patience | time_limit
    last_checkpoint: Path
    best_checkpoint: Path
    export_dir: Path | None

    @property
    def baseline(self) -> dict[str, Any] | None:
        return next((h for h in self.history if h["epoch"] == 0), None)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("run_dir", "last_checkpoint", "best_checkpoint", "export_dir"):
            d[k] = None if d[k] is None else str(d[k])
        return d


# ------------------------------------------------------------------------------------------------ helpers
def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def lr_lambda(total_steps: int, warmup_steps: int, min_ratio: float):
    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        t = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))

    return f


def _rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _better(metric: str, value: float, best: float | None, min_delta: float) -> bool:
    if best is None or not math.isfinite(best):
        return math.isfinite(value)
    if metric == "eer":
        return value < best - min_delta
    return value > best + min_delta


@torch.no_grad()
def embed_images(
    backbone: nn.Module, images: torch.Tensor, mean, scale: float, batch_size: int, amp: torch.dtype | None
) -> torch.Tensor:
    """L2-normalised float32 embeddings of uint8 N x H x W x 3 images (no augmentation), on the CPU."""
    was_training = backbone.training
    backbone.eval()
    out = []
    dev = next(backbone.parameters()).device
    for start in range(0, len(images), batch_size):
        x = normalise(images[start: start + batch_size].to(dev).permute(0, 3, 1, 2).float(), mean, scale)
        with torch.autocast(device_type=dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            e = backbone(x)
        out.append(F.normalize(e.float(), dim=1).cpu())
    backbone.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


def pair_scores(embeddings: torch.Tensor, pairs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Cosine similarity of each (i, j) pair of L2-normalised embeddings."""
    i, j, _ = pairs
    e = embeddings.numpy().astype(np.float64)
    return np.einsum("nd,nd->n", e[i], e[j])


def verification_metrics(embeddings: torch.Tensor, pairs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, float]:
    """Cosine-score ROC AUC, EER (+ threshold) and TAR at FAR 1e-2 / 1e-3 over the validation pairs."""
    genuine = pairs[2]
    scores = pair_scores(embeddings, pairs)
    roc = roc_curve(scores, genuine)
    rate, threshold = eer_of(scores, genuine)
    return {
        "val_auc": roc.auc,
        "val_eer": rate,
        "val_eer_threshold": threshold,
        "val_tar@far=1e-2": tar_at_far(scores, genuine, 1e-2),
        "val_tar@far=1e-3": tar_at_far(scores, genuine, 1e-3),
        "val_genuine_mean": float(scores[genuine].mean()),
        "val_impostor_mean": float(scores[~genuine].mean()),
        "val_pairs": int(len(scores)),
    }


# -------------------------------------------------------------------------------------------------- train
def train(config: TrainConfig) -> TrainResult:
    """Run (or resume) training as `config` says; see the module docstring for what the run folder holds."""
    previous_threads = torch.get_num_threads()
    try:
        return _train(config)
    finally:
        torch.set_num_threads(previous_threads)


def _train(config: TrainConfig) -> TrainResult:
    cfg = config
    if cfg.loss not in ("triplet", "arcface", "both"):
        raise ValueError(f"loss must be triplet, arcface or both, got {cfg.loss!r}")
    if cfg.optimizer not in ("adamw", "sgd"):
        raise ValueError(f"optimizer must be adamw or sgd, got {cfg.optimizer!r}")
    if cfg.early_stop not in ("eer", "auc"):
        raise ValueError(f"early_stop must be eer or auc, got {cfg.early_stop!r}")
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed, cfg.deterministic)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    amp = resolve_amp(cfg.amp, device)
    t_start = time.time()

    # ---- base model card (template, normalisation, weights, export metadata)
    base_folder: Path | None = None
    base_card: dict[str, Any] | None = None
    if cfg.base_model_folder or cfg.base_model:
        base_folder = Path(cfg.base_model_folder) if cfg.base_model_folder else WEIGHTS_ROOT / str(cfg.base_model)
        base_card = json.loads((base_folder / "model.json").read_text())
    norm = (base_card or {}).get("normalisation", {"mean": [127.5, 127.5, 127.5], "scale": 128.0})
    mean, scale = tuple(float(v) for v in norm["mean"]), float(norm["scale"])

    # ---- data
    cache = load_cache(cfg.cache)
    backbone_name = resolve_backbone(cfg.backbone, base_card)
    if base_card is not None and backbone_name != "tiny":
        if template_to_dict(cache.template) != template_to_dict(base_card["template"]):
            raise ValueError(
                f"the crop cache {cfg.cache} was aligned to template {cache.template['points']}, but "
                f"{base_card['id']} declares {base_card['template']['points']}: rebuild the cache"
            )
    keep = np.ones(len(cache.labels), bool)
    if cfg.limit_identities:
        keep &= cache.labels < int(cfg.limit_identities)
    exclude = list(cache.meta.get("lfw_overlap", [])) if cfg.exclude_lfw_overlap else []
    held_out: list[str] = []
    if cfg.holdout_pairs or cfg.holdout_folds:
        if not (cfg.holdout_pairs and cfg.holdout_folds):
            raise ValueError("holdout_pairs and holdout_folds go together")
        held_out = pairs_identities(cfg.holdout_pairs, cfg.holdout_folds)
    split = _limited_split(cache, keep, cfg, exclude + held_out)
    trained_on = set(split.train_identities) | set(split.val_identities)
    if trained_on & set(held_out):  # the test identities never reach training or early stopping
        raise AssertionError(f"held-out identities in the training split: {sorted(trained_on & set(held_out))}")
    (run_dir / "split.json").write_text(json.dumps({
        **split.summary(), "train": split.train_identities, "val": split.val_identities,
        "held_out": {"pairs": cfg.holdout_pairs, "folds": cfg.holdout_folds, "identities": held_out}}, indent=1))
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    use_triplet = cfg.loss in ("triplet", "both")
    use_arcface = cfg.loss in ("arcface", "both")
    sampler = PKSampler(split.train_labels, cfg.p, cfg.k, seed=cfg.seed, min_images=2 if use_triplet else 1,
                        batches_per_epoch=cfg.batches_per_epoch)
    train_images = torch.from_numpy(cache.images[split.train_idx]).to(device)
    train_labels = torch.from_numpy(split.train_labels).to(device)
    val_images = torch.from_numpy(cache.images[split.val_idx])
    has_val = len(split.val_identities) >= 2
    pairs = verification_pairs(split.val_labels, cfg.val_impostors, cfg.seed) if has_val else None
    augmenter = Augmenter(AugmentConfig(**cfg.augment_options)) if cfg.augment else None

    # ---- model
    backbone = build_backbone(backbone_name, cfg.embedding_dim, base_folder, base_card)
    init_record: dict[str, Any] = {"init": cfg.init}
    pretrained = cfg.init != "scratch"
    if cfg.init == "scratch":
        init_from_scratch(backbone)
    elif cfg.init == "pretrained":
        if base_card is None or base_folder is None:
            raise ValueError("init=pretrained needs a base model")
        init_record.update(load_backbone_weights(backbone, base_folder / base_card["weights_file"]))
    else:
        init_record.update(load_backbone_weights(backbone, cfg.init))
    backbone.to(device)
    frozen = frozen_stages(backbone, cfg.freeze_until)
    n_frozen = apply_freeze(backbone, frozen)
    dim = embedding_dim_of(backbone)
    head = ArcFaceHead(dim, split.n_classes, cfg.arcface_s, cfg.arcface_m, cfg.easy_margin) if use_arcface else None
    loss_fn = CombinedLoss(
        cfg.triplet_weight if use_triplet else 0.0,
        cfg.arcface_weight if use_arcface else 0.0,
        triplet=TripletLoss(cfg.margin, cfg.mining, cfg.distance) if use_triplet else None,
        arcface=head,
    ).to(device)

    # ---- optimiser: backbone (x pretrained_lr_mult when pretrained) and head; no decay on 1-d params.
    # Relative LR: Adam moves every parameter by about `lr` per step whatever its size, and dlib's conv
    # weights are ~1e-3 (its batch norms are folded into affine scales of ~10), so an absolute LR that suits
    # the head rewrites them in a few steps. With relative_lr each pretrained backbone tensor gets
    # lr * RMS(tensor): a step then changes it by about lr relative to its size.
    bb_lr = cfg.lr * (cfg.pretrained_lr_mult if pretrained else 1.0)
    relative = cfg.relative_lr and pretrained and cfg.optimizer == "adamw"
    groups = []
    bb_params = [(n, p) for n, p in backbone.named_parameters() if p.requires_grad]
    if relative:
        for n, p in bb_params:
            rms = float(p.detach().float().pow(2).mean().sqrt())
            groups.append({"params": [p], "lr": bb_lr * max(rms, 1e-8), "name": "backbone:" + n,
                           "weight_decay": cfg.weight_decay if p.ndim > 1 else 0.0})
        bb_params = []
    for name, params, lr in (
        ("backbone", [p for _, p in bb_params], bb_lr),
        ("head", list(loss_fn.parameters()), cfg.lr),
    ):
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        if decay:
            groups.append({"params": decay, "lr": lr, "weight_decay": cfg.weight_decay, "name": name})
        if no_decay:
            groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": name + "_no_decay"})
    if not groups:
        raise ValueError("nothing to train: every backbone stage is frozen and the loss has no head")
    if cfg.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    else:
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    steps_per_epoch = len(sampler)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total_steps, int(round(cfg.warmup_epochs * steps_per_epoch)), cfg.min_lr_ratio))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    trainable_backbone = [p for p in backbone.parameters() if p.requires_grad]

    # ---- state, resume
    history: list[dict[str, Any]] = []
    best_value: float | None = None
    best_epoch = 0
    bad_epochs = 0
    start_epoch = 1
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    resume = cfg.resume
    if resume == "auto":
        resume = str(last_path) if last_path.is_file() else None
    if resume:
        ckpt = torch.load(resume, map_location="cpu", weights_only=False)  # RNG states must stay on the CPU
        backbone.load_state_dict(ckpt["model"])
        loss_fn.load_state_dict(ckpt["loss"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        history, best_value, best_epoch = ckpt["history"], ckpt["best_value"], ckpt["best_epoch"]
        bad_epochs, start_epoch = ckpt["bad_epochs"], ckpt["epoch"] + 1
        _set_rng_state(ckpt["rng"])
        # what the checkpoint knows is the truth (an epoch may have been logged after the last save)
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    else:
        (run_dir / "metrics.jsonl").write_text("")

    def log(entry: dict[str, Any]) -> None:
        history.append(entry)
        with open(run_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(entry) + "\n")

    def save_best(epoch: int, metrics: dict[str, Any]) -> None:
        _atomic_save({"model": backbone.state_dict(), "loss": loss_fn.state_dict(), "epoch": epoch,
                      "metrics": metrics, "config": cfg.to_dict()}, best_path)

    def validate() -> dict[str, Any]:
        if not has_val:
            return {}
        # float32 even under AMP: the validation set is small and its metrics steer early stopping
        emb = embed_images(backbone, val_images, mean, scale, cfg.eval_batch_size, None)
        return verification_metrics(emb, pairs)

    # ---- epoch 0: the initial weights
    if not resume:
        metrics = validate()
        entry = {"epoch": 0, "lr": 0.0, "time_s": round(time.time() - t_start, 2), **metrics}
        if metrics:
            best_value = metrics[f"val_{cfg.early_stop}"]
        entry["best"] = True
        log(entry)
        save_best(0, entry)

    stop_reason = "completed"
    epoch = start_epoch - 1
    for epoch in range(start_epoch, cfg.epochs + 1):
        t_epoch = time.time()
        head_only = epoch <= cfg.head_warmup_epochs and head is not None
        for p in trainable_backbone:
            p.requires_grad_(not head_only)
        # head-only epochs leave the whole backbone as it is: batch-norm statistics too
        set_train_mode(backbone, backbone_stages(backbone) if head_only else frozen)
        loss_fn.train()
        sampler.set_epoch(epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        sums: dict[str, float] = {}
        n_steps = 0
        bar = _progress(steps_per_epoch, f"epoch {epoch}/{cfg.epochs}", cfg.progress)
        for batch in sampler:
            idx = torch.as_tensor(batch, device=device)
            x = train_images[idx]
            x = augmenter(x, gen) if augmenter is not None else x.permute(0, 3, 1, 2).float()
            x = normalise(x, mean, scale)
            y = train_labels[idx]
            with torch.autocast(device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None):
                emb = backbone(x)
            loss, parts = loss_fn(emb.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            parts["loss"] = float(loss.detach())
            for key, value in parts.items():
                if math.isfinite(value):
                    sums[key] = sums.get(key, 0.0) + value
            n_steps += 1
            bar.update(1)
            bar.set_postfix(loss=f"{parts['loss']:.4f}")
        bar.close()
        metrics = validate()
        entry = {
            "epoch": epoch,
            **{f"train_{k}": v / max(1, n_steps) for k, v in sums.items()},
            "lr": cfg.lr * scheduler.lr_lambdas[0](scheduler.last_epoch - 1),
            "lr_backbone": cfg.lr * scheduler.lr_lambdas[0](scheduler.last_epoch - 1) * (
                (cfg.pretrained_lr_mult if pretrained else 1.0) if trainable_backbone else 0.0),
            "relative_lr": relative,
            "head_only": head_only,
            "epoch_time_s": round(time.time() - t_epoch, 2),
            "time_s": round(time.time() - t_start, 2),
            **metrics,
        }
        improved = bool(metrics) and _better(cfg.early_stop, metrics[f"val_{cfg.early_stop}"], best_value, cfg.min_delta)
        if improved or not has_val:
            best_value = metrics.get(f"val_{cfg.early_stop}") if metrics else None
            best_epoch, bad_epochs = epoch, 0
            save_best(epoch, entry)
        else:
            bad_epochs += 1
        entry["best"] = best_epoch == epoch
        log(entry)
        if cfg.progress:
            shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in entry.items()
                     if k in ("epoch", "train_loss", "val_auc", "val_eer", "val_tar@far=1e-2", "epoch_time_s")}
            print(json.dumps(shown), flush=True)
        _atomic_save({
            "model": backbone.state_dict(), "loss": loss_fn.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
            "history": history, "best_value": best_value, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
            "rng": _rng_state(), "config": cfg.to_dict(),
        }, last_path)
        if has_val and cfg.patience and bad_epochs >= cfg.patience and epoch < cfg.epochs:
            stop_reason = "patience"
            break
        if cfg.time_limit_s and time.time() - t_start > cfg.time_limit_s and epoch < cfg.epochs:
            stop_reason = "time_limit"
            break

    best_entry = next((h for h in history if h["epoch"] == best_epoch), history[-1] if history else {})
    export_dir = None
    if cfg.export and backbone_name != "tiny" and base_card is not None and base_folder is not None:
        state = torch.load(best_path, map_location=device, weights_only=False)
        backbone.load_state_dict(state["model"])
        threshold = None
        if cfg.export_threshold and has_val:
            threshold = _default_threshold(backbone, val_images, pairs, mean, scale, cfg, base_card, source_name=
                                           cache.meta.get("source_name", "crops"))
        export_dir = _export(cfg, backbone.cpu(), base_folder, base_card, cache, split, best_entry, init_record,
                             run_dir, n_frozen, frozen, len(history), threshold, backbone_name, held_out)
    result = TrainResult(
        run_dir=run_dir, best_epoch=best_epoch, best_metrics=best_entry, history=history,
        stopped_early=stop_reason != "completed", stop_reason=stop_reason, last_checkpoint=last_path, best_checkpoint=best_path, export_dir=export_dir,
    )
    (run_dir / "result.json").write_text(json.dumps(
        {k: v for k, v in result.to_dict().items() if k != "history"}, indent=1, default=str))
    return result


def _limited_split(cache, keep: np.ndarray, cfg: TrainConfig, exclude: list[str]):
    """The identity split over the photos in `keep` (indices stay cache indices)."""
    sub = np.flatnonzero(keep)
    split = split_identities(cache.labels[sub], cache.identities, cfg.val_fraction, cfg.seed, exclude)
    split.train_idx = sub[split.train_idx]
    split.val_idx = sub[split.val_idx]
    return split


def _default_threshold(backbone, val_images, pairs, mean, scale, cfg, base_card, source_name) -> tuple[float, str]:
    """The exported card's default threshold, on the validation pairs with the best weights: at the base card's
    `default_threshold_far` when it declares one (so the threshold means what the base's means), else the EER
    threshold."""
    scores = pair_scores(embed_images(backbone, val_images, mean, scale, cfg.eval_batch_size, None), pairs)
    genuine = pairs[2]
    far = base_card.get("extra", {}).get("default_threshold_far")
    where = (f"the identity-disjoint validation split of {source_name} ({int(genuine.sum())} genuine, "
             f"{int((~genuine).sum())} impostor pairs) with the best epoch's weights")
    if far:
        point = threshold_at_far(scores, genuine, float(far))
        note = (f"FAR {far} on {where} (measured FAR {point.far:.5f}, FRR {point.frr:.4f}"
                f"{', resolution-limited' if point.resolution_limited else ''}); facerec.train. Recalibrate on the "
                "deployment's own data (or as the base model was) before relying on it")
        return point.threshold, note
    rate, threshold = eer_of(scores, genuine)
    return threshold, f"EER threshold ({rate:.4f}) on {where}; facerec.train. Recalibrate before relying on it"


def _export(cfg, backbone, base_folder, base_card, cache, split, best_entry, init_record, run_dir, n_frozen,
            frozen, n_epochs_logged, threshold, backbone_name, held_out) -> Path:
    source_name = cache.meta.get("source_name", "crops")
    dtype = cfg.export_dtype or DEFAULT_EXPORT_DTYPE[backbone_name]
    model_id = cfg.export_id or f"{base_card['id']}_ft_{source_name}"
    recipe = {
        "command": "python -m facerec.train fit",
        "config": cfg.to_dict(),
        "init": init_record,
        "frozen_stages": frozen,
        "frozen_parameters": n_frozen,
        "best_epoch": best_entry.get("epoch"),
        "epochs_run": n_epochs_logged - 1,
        "best_metrics": {k: v for k, v in best_entry.items() if k.startswith("val_")},
        "split": split.summary(),
        "held_out": {"pairs": cfg.holdout_pairs, "folds": cfg.holdout_folds, "identities": len(held_out)},
        "crop_cache": {k: cache.meta.get(k) for k in ("model_id", "source_name", "n_images", "n_failures",
                                                       "encoding", "jpeg_quality", "detector", "face_choice")},
        "torch": torch.__version__,
    }
    excluded = ", ".join(split.excluded_identities) or "none"
    training_data = (
        f"Fine-tuned on {source_name} (CelebA in-the-wild photos; facerec crop cache of {cache.meta.get('n_images')} "
        f"aligned faces): {split.summary()['train_identities']} identities / {split.summary()['train_images']} "
        f"photos for training, {split.summary()['val_identities']} identities held out for validation; "
        f"LFW-overlap identities excluded: {excluded}"
        + (f"; {len(held_out)} identities of {cfg.holdout_pairs} folds {cfg.holdout_folds} held out (test set)"
           if held_out else "")
        + f". Base model's training data: {base_card.get('training_data', '')}"
    )
    licence = (
        "CelebA: non-commercial research purposes only (this model inherits that); base model's training data: "
        f"{base_card.get('training_data_licence', 'unspecified')}"
    )
    provenance = (
        f"facerec.train from {base_card['id']} v{base_card.get('version')} (weights sha256 "
        f"{base_card.get('weights_sha256')}); best epoch {best_entry.get('epoch')} by validation "
        f"{cfg.early_stop.upper()}; loss {cfg.loss}, optimiser {cfg.optimizer}, lr {cfg.lr}, epochs {cfg.epochs}, "
        f"P x K {cfg.p} x {cfg.k}, seed {cfg.seed}; weights stored as {dtype}. Full recipe in "
        "extra.training_recipe."
    )
    return export_model_folder(
        backbone, base_folder / "model.json", run_dir / "export" / model_id, model_id, cfg.export_version,
        dtype, provenance, training_data, licence, recipe,
        default_threshold=threshold[0] if threshold else None,
        threshold_provenance=threshold[1] if threshold else None,
    )
