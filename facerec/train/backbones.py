"""Backbones for training, chosen by the base model's id: its card's runtime says which network to build
(`dlib_resnet` -> dlib's ResNet-29 port, `onnx` -> the chain port of its ONNX graph, e.g. SFace); plus a tiny
CNN for tests and smoke runs.

A backbone is any nn.Module taking N x 3 x H x W float input, already normalised as its model card says, and
returning N x D raw (unnormalised) embeddings. Freezing works on named *stages* in forward order:
`backbone_stages(module)` lists them; `freeze_until=<stage>` freezes that stage and every one before it.
A module may name its own stages (`stages()`, `stage_of(param_name)`: the ONNX port does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from facerec.io import sha256_file
from facerec.npzfile import write_npz
import torch
from torch import nn

BACKBONES = ("auto", "dlib_resnet29", "onnx", "tiny")
# card runtime -> backbone ("auto" picks by the base model's card)
RUNTIME_BACKBONES = {"dlib_resnet": "dlib_resnet29", "onnx": "onnx"}
# how each exportable backbone stores its weights by default (TrainConfig.export_dtype None)
DEFAULT_EXPORT_DTYPE = {"dlib_resnet29": "int12", "onnx": "int8"}

# dlib ResNet-29: block-name prefix -> stage, in forward order.
DLIB_STAGES = ("stem", "res32", "res64", "res128", "res256", "res256_out", "fc")


def _dlib_stage(param_name: str) -> str:
    if param_name.startswith("stem."):
        return "stem"
    if param_name.startswith("fc."):
        return "fc"
    block = param_name.split(".")[1]  # blocks.<name>.…
    if block == "res256_down_out":
        return "res256_out"
    return block.split("_")[0]


class TinyEmbeddingNet(nn.Module):
    """A small conv net (4 conv + BN + ReLU stages, global average pool, linear) for tests and smoke runs."""

    def __init__(self, embedding_dim: int = 64, width: int = 16) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.stem = block(3, w, 2)
        self.stage1 = block(w, 2 * w, 2)
        self.stage2 = block(2 * w, 4 * w, 2)
        self.stage3 = block(4 * w, 4 * w, 1)
        self.fc = nn.Linear(4 * w, embedding_dim)
        self.embedding_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.fc(x.mean(dim=(2, 3)))


def resolve_backbone(name: str, base_card: dict[str, Any] | None) -> str:
    """"auto" -> the backbone of the base model's runtime; other names as given."""
    if name != "auto":
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r} (known: {', '.join(BACKBONES)})")
        return name
    runtime = (base_card or {}).get("extra", {}).get("runtime")
    if runtime not in RUNTIME_BACKBONES:
        raise ValueError(f"backbone 'auto' needs a base model whose runtime is one of {sorted(RUNTIME_BACKBONES)}, "
                         f"got {runtime!r}")
    return RUNTIME_BACKBONES[runtime]


def build_backbone(name: str, embedding_dim: int | None = None, base_folder: Path | None = None,
                   base_card: dict[str, Any] | None = None) -> nn.Module:
    """The (untrained or graph-initialised) network; `name` as `resolve_backbone` returns it."""
    if name == "onnx":
        from facerec.train.onnx_port import OnnxChainNet

        if base_folder is None or base_card is None:
            raise ValueError("the onnx backbone is the port of a base model's graph: give a base model")
        net = OnnxChainNet.from_folder(base_folder, base_card, pretrained=False)
        if embedding_dim not in (None, net.embedding_dim):
            raise ValueError(f"{base_card['id']} has a fixed {net.embedding_dim}-d output")
        return net
    if name == "dlib_resnet29":
        from facerec.models.dlib_resnet import DlibResNet29

        if embedding_dim not in (None, 128):
            raise ValueError("dlib_resnet29 has a fixed 128-d output")
        return DlibResNet29()
    if name == "tiny":
        return TinyEmbeddingNet(embedding_dim or 64)
    raise ValueError(f"unknown backbone {name!r} (known: {', '.join(BACKBONES)})")


def embedding_dim_of(module: nn.Module) -> int:
    if hasattr(module, "embedding_dim"):
        return int(module.embedding_dim)
    return int(module.fc.out_features)


def stage_of(module: nn.Module, param_name: str) -> str:
    if hasattr(module, "stage_of"):
        return module.stage_of(param_name)
    from_dlib = type(module).__name__ == "DlibResNet29"
    return _dlib_stage(param_name) if from_dlib else param_name.split(".")[0]


def backbone_stages(module: nn.Module) -> list[str]:
    """Stage names in forward order (dlib: stem, res32, res64, res128, res256, res256_out, fc; other modules:
    their top-level children)."""
    if hasattr(module, "stages"):
        return module.stages()
    if type(module).__name__ == "DlibResNet29":
        return list(DLIB_STAGES)
    return [name for name, child in module.named_children() if any(True for _ in child.parameters())]


def frozen_stages(module: nn.Module, freeze_until: str | None) -> list[str]:
    """The stages `freeze_until` freezes: none for None/"none", every stage for "all"."""
    stages = backbone_stages(module)
    if freeze_until in (None, "", "none"):
        return []
    if freeze_until == "all":
        return stages
    if freeze_until not in stages:
        raise ValueError(f"freeze_until={freeze_until!r} is not a stage of this backbone ({', '.join(stages)})")
    return stages[: stages.index(freeze_until) + 1]


def apply_freeze(module: nn.Module, stages: list[str]) -> int:
    """Set requires_grad=False on the stages' parameters (and put their BatchNorms in eval mode when
    `module.train()` is called: see `set_train_mode`). Returns the number of frozen parameters."""
    frozen = 0
    for name, param in module.named_parameters():
        if stage_of(module, name) in stages:
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def set_train_mode(module: nn.Module, stages_frozen: list[str]) -> None:
    """module.train(), except the BatchNorm layers of frozen stages, which keep their running statistics."""
    module.train()
    for name, sub in module.named_modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and name and stage_of(module, name + ".x") in stages_frozen:
            sub.eval()


def init_from_scratch(module: nn.Module) -> None:
    """He-normal convolutions and linears; for dlib's residual blocks the second affine's scale starts at 0
    (each block starts as the identity: dlib's net has no batch norm, so this keeps a deep random net stable)."""
    for sub in module.modules():
        if isinstance(sub, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(sub.weight, nonlinearity="relu")
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
    if type(module).__name__ == "DlibResNet29":
        for name, param in module.named_parameters():
            if name.endswith("affine.weight"):
                nn.init.ones_(param)
            elif name.endswith("affine.bias"):
                nn.init.zeros_(param)
        for block in module.blocks.values():
            nn.init.zeros_(block.conv2.affine.weight)


def load_backbone_weights(module: nn.Module, source: str | Path) -> dict[str, Any]:
    """Weights from a `.npz` (the dlib port's or the ONNX embedders' storage format) or one of our `.pt`
    checkpoints (its "model" state). Returns a description for the training record."""
    path = Path(source)
    if path.suffix == ".npz" and hasattr(module, "load_initializers"):
        from facerec.models.onnx_embedder import load_weights

        module.load_initializers(load_weights(path))
    elif path.suffix == ".npz":
        from facerec.models.dlib_resnet import dequantise

        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        state = {k: torch.from_numpy(v) for k, v in dequantise(arrays).items()}
        module.load_state_dict(state, strict=True)
    elif path.suffix in (".pt", ".pth"):
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        module.load_state_dict(ckpt["model"] if "model" in ckpt else ckpt, strict=True)
    else:
        raise ValueError(f"{path}: expected a .npz (model folder weights) or .pt (facerec.train checkpoint)")
    repo = Path(__file__).resolve().parents[2]
    shown = path.resolve().relative_to(repo) if path.resolve().is_relative_to(repo) else path
    return {"path": str(shown), "sha256": sha256_file(path)}


# ------------------------------------------------------------------------------------------------- export
def export_model_folder(
    module: nn.Module,
    base_card_path: Path,
    out_folder: Path,
    model_id: str,
    version: str,
    dtype: str,
    provenance: str,
    training_data: str,
    training_data_licence: str,
    recipe: dict[str, Any],
    default_threshold: float | None = None,
    threshold_provenance: str | None = None,
) -> Path:
    """Write `out_folder/model.json` + `weights.npz` (+ the ONNX port's `graph.onnx`, + the base's LICENSE)
    for the registry.

    The card is the base model's `model.json` with a new id, version, weights, provenance and training data;
    the template, normalisation and runtime are the base's (the crops were aligned to that template). The
    base's own measurements (exactness of its stored weights, LFW accuracy) are dropped: they are not these
    weights'.
    """
    out_folder = Path(out_folder)
    out_folder.mkdir(parents=True, exist_ok=True)
    weights = out_folder / "weights.npz"
    raw = json.loads(Path(base_card_path).read_text())
    if hasattr(module, "initializers"):
        from facerec.train.onnx_port import export_onnx_folder

        storage = export_onnx_folder(module, Path(base_card_path).parent, raw, out_folder, weights.name, dtype)
    else:
        from facerec.models.dlib_resnet import quantise

        state = {k: v.detach().float().cpu().numpy() for k, v in module.state_dict().items()}
        write_npz(weights, quantise(state, dtype))
        storage = dtype
    base_id = raw.get("id")
    card = dict(raw)
    card.update({
        "id": model_id,
        "version": str(version),
        "weights_file": weights.name,
        "weights_sha256": sha256_file(weights),
        "weights_licence": (
            f"Derivative of {base_id} (weights licence: {raw.get('weights_licence', 'unknown')}), fine-tuned on "
            f"data whose terms apply: {training_data_licence}"
        ),
        "training_data": training_data,
        "training_data_licence": training_data_licence,
        "provenance": provenance,
        "lfw_accuracy": "",
    })
    if default_threshold is not None:
        card["default_threshold"] = float(default_threshold)
        card["threshold_provenance"] = threshold_provenance or "validation split"
    else:
        card["threshold_provenance"] = (
            f"copied from {base_id} and not recalibrated for these weights ({raw.get('threshold_provenance')})")
    extra = {k: v for k, v in card.get("extra", {}).items() if k not in ("exactness_vs_original", "lfw_view2_accuracy")}
    extra.setdefault("runtime", "dlib_resnet")
    extra.update({"base_model": base_id, "base_weights_sha256": raw.get("weights_sha256"),
                  "weights_dtype": dtype, "storage": storage, "training_recipe": recipe})
    if "commercial_use" in extra:  # the base's answer does not hold for weights trained on other data
        extra["commercial_use"] = f"no, unless the fine-tuning data's terms allow it: {training_data_licence}"
    card["extra"] = extra
    (out_folder / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    licence = Path(base_card_path).parent / "LICENSE"
    if licence.is_file():
        (out_folder / "LICENSE").write_text(licence.read_text())
    return out_folder
