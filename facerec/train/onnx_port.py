"""A trainable PyTorch port of an ONNX embedder whose graph is a plain chain of layers (SFace 2021dec).

Why a port of our own rather than onnx2torch: training needs parameters we can freeze by stage, batch norms
that update, and a way back to the ONNX initializer names, so that fine-tuned weights are stored exactly as
`scripts/convert_onnx_embedder.py` stores the original (the same `graph.onnx` skeleton, weights npz in the
`facerec.models.onnx_embedder` layout) and run by the same ONNX Runtime code.

Supported: a chain (every node reads the previous node's output) of Sub/Mul by a constant, Conv, BatchNormalization,
PRelu, Dropout, Flatten and Gemm. Anything else is refused (ValueError) rather than approximated. Layers are
keyed by their node's output name; a *stage* is that name without its layer-kind suffix (SFace: conv_1,
conv_2_dw, conv_2, ..., conv_14, bn1, pre_fc1, fc1), in forward order, for `freeze_until`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

STAGE_SUFFIXES = ("_conv2d", "_batchnorm", "_relu")
# the stored weights of an exported port: what the converter uses for SFace (its 50176 -> 128 layer int8)
INT8_MIN_FAN_IN = 4096


def stage_of_node(output_name: str) -> str:
    for suffix in STAGE_SUFFIXES:
        if output_name.endswith(suffix):
            return output_name[: -len(suffix)]
    return output_name


class _Const(nn.Module):
    """x - c or x * c with a constant from the graph (the in-graph input normalisation)."""

    def __init__(self, op: str, value: np.ndarray) -> None:
        super().__init__()
        self.op = op
        self.register_buffer("value", torch.as_tensor(np.asarray(value, dtype=np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.value if self.op == "Sub" else x * self.value


class _Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, 1)


class OnnxChainNet(nn.Module):
    """The graph's layers as torch modules, in order; `initializers()` / `load_initializers()` speak ONNX names."""

    def __init__(self, graph_bytes: bytes) -> None:
        import onnx
        from onnx import numpy_helper

        super().__init__()
        model = onnx.load_from_string(graph_bytes)
        graph = model.graph
        inits = {t.name: t for t in graph.initializer}

        def embedded(name: str) -> np.ndarray | None:
            t = inits[name]
            return None if t.data_location == onnx.TensorProto.EXTERNAL else numpy_helper.to_array(t)

        def dims(name: str) -> tuple[int, ...]:
            return tuple(int(d) for d in inits[name].dims)

        self.layers = nn.ModuleDict()
        # ONNX initializer name -> (layer key, parameter/buffer name, ONNX shape)
        self._names: dict[str, tuple[str, str, tuple[int, ...]]] = {}
        values: dict[str, np.ndarray] = {}
        previous = graph.input[0].name
        flat = False
        for node in graph.node:
            if node.input[0] != previous:
                raise ValueError(f"node {node.name or node.output[0]!r} ({node.op_type}) does not read the previous "
                                 "output: not a chain graph")
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            key = node.output[0].replace(".", "_")
            op = node.op_type
            if op in ("Sub", "Mul"):
                value = embedded(node.input[1])
                if value is None or value.size != 1:
                    raise ValueError(f"{op} {key}: only a scalar constant operand is supported")
                layer: nn.Module = _Const(op, value.reshape(()))
            elif op == "Conv":
                if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                    raise ValueError(f"Conv {key}: auto_pad is not supported")
                w = dims(node.input[1])
                pads = list(attrs.get("pads", [0, 0, 0, 0]))
                if pads[:2] != pads[2:]:
                    raise ValueError(f"Conv {key}: asymmetric padding {pads}")
                groups = int(attrs.get("group", 1))
                layer = nn.Conv2d(w[1] * groups, w[0], tuple(w[2:]), stride=tuple(attrs.get("strides", [1, 1])),
                                  padding=tuple(pads[:2]), dilation=tuple(attrs.get("dilations", [1, 1])),
                                  groups=groups, bias=len(node.input) > 2)
                self._names[node.input[1]] = (key, "weight", w)
                if len(node.input) > 2:
                    self._names[node.input[2]] = (key, "bias", dims(node.input[2]))
            elif op == "BatchNormalization":
                c = dims(node.input[1])[0]
                kind = nn.BatchNorm1d if flat else nn.BatchNorm2d
                # ONNX momentum m: running = m * running + (1 - m) * batch; torch's is the weight of the batch
                layer = kind(c, eps=float(attrs.get("epsilon", 1e-5)), momentum=1.0 - float(attrs.get("momentum", 0.9)))
                for name, attr in zip(node.input[1:5], ("weight", "bias", "running_mean", "running_var")):
                    self._names[name] = (key, attr, dims(name))
            elif op == "PRelu":
                shape = dims(node.input[1])
                layer = nn.PReLU(int(np.prod(shape)))
                self._names[node.input[1]] = (key, "weight", shape)
            elif op == "Dropout":
                layer = nn.Dropout(float(attrs.get("ratio", 0.5)))
            elif op == "Flatten":
                if int(attrs.get("axis", 1)) != 1:
                    raise ValueError(f"Flatten {key}: only axis 1 is supported")
                layer, flat = _Flatten(), True
            elif op == "Gemm":
                if attrs.get("transA", 0) or float(attrs.get("alpha", 1.0)) != 1.0 or float(attrs.get("beta", 1.0)) != 1.0:
                    raise ValueError(f"Gemm {key}: only alpha = beta = 1, transA = 0 is supported")
                w = dims(node.input[1])
                out_f, in_f = w if attrs.get("transB", 0) else w[::-1]
                layer = nn.Linear(in_f, out_f, bias=len(node.input) > 2)
                self._names[node.input[1]] = (key, "weight" if attrs.get("transB", 0) else "weight.T", w)
                if len(node.input) > 2:
                    self._names[node.input[2]] = (key, "bias", dims(node.input[2]))
                flat = True
            else:
                raise ValueError(f"operator {op} ({key}) is not supported by the chain port")
            self.layers[key] = layer
            for name in node.input[1:]:
                if name in self._names and (v := embedded(name)) is not None:
                    values[name] = v
            previous = node.output[0]
        if previous != graph.output[0].name:
            raise ValueError("the last node's output is not the graph output")
        self.embedding_dim = int(graph.output[0].type.tensor_type.shape.dim[-1].dim_value)
        self.external_names = [t.name for t in graph.initializer  # graph order, as the converter stores them
                               if t.name in self._names and t.data_location == onnx.TensorProto.EXTERNAL]
        self.load_initializers(values, strict=False)
        self._stage_keys = {key: stage_of_node(key) for key in self.layers}

    @classmethod
    def from_folder(cls, folder: Path, card: dict[str, Any] | None = None, pretrained: bool = True) -> "OnnxChainNet":
        """The port of a facerec ONNX model folder (card `extra.graph_file`), with its stored weights if asked."""
        from facerec.models.onnx_embedder import load_weights

        folder = Path(folder)
        card = card or json.loads((folder / "model.json").read_text())
        net = cls((folder / card["extra"]["graph_file"]).read_bytes())
        if pretrained:
            net.load_initializers(load_weights(folder / card["weights_file"]))
        return net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers.values():
            x = layer(x)
        return x

    # ---- ONNX names
    def _tensor(self, key: str, attr: str) -> torch.Tensor:
        return getattr(self.layers[key], attr.removesuffix(".T"))

    def load_initializers(self, arrays: dict[str, np.ndarray], strict: bool = True) -> None:
        """Copy ONNX initializers (by name, ONNX shapes) into the layers; strict: every weight must be given."""
        missing = [n for n in self.external_names if n not in arrays]
        if strict and missing:
            raise ValueError(f"weights missing for {len(missing)} initializers, e.g. {missing[:3]}")
        with torch.no_grad():
            for name, value in arrays.items():
                if name not in self._names:
                    continue
                key, attr, shape = self._names[name]
                if tuple(value.shape) != shape:
                    raise ValueError(f"{name}: shape {value.shape}, the graph declares {shape}")
                t = torch.from_numpy(np.array(value, dtype=np.float32))  # a copy: npz arrays are read-only
                t = t.T if attr.endswith(".T") else t
                target = self._tensor(key, attr)
                target.copy_(t.reshape(target.shape))

    def initializers(self) -> dict[str, np.ndarray]:
        """Every mapped tensor under its ONNX name and shape (float32), in graph order."""
        out = {}
        for name, (key, attr, shape) in self._names.items():
            t = self._tensor(key, attr).detach().float().cpu()
            out[name] = (t.T if attr.endswith(".T") else t).numpy().reshape(shape).copy()
        return out

    # ---- stages for freezing
    def stages(self) -> list[str]:
        seen: list[str] = []
        for key, layer in self.layers.items():
            stage = self._stage_keys[key]
            if any(True for _ in layer.parameters()) and stage not in seen:
                seen.append(stage)
        return seen

    def stage_of(self, param_name: str) -> str:
        """`layers.<key>.<param>` -> the key's stage."""
        return self._stage_keys[param_name.split(".")[1]]


def export_onnx_folder(module: OnnxChainNet, base_folder: Path, base_card: dict[str, Any], out_folder: Path,
                       weights_file: str, dtype: str) -> str:
    """Write `graph.onnx` (the base's skeleton, its embedded small tensors replaced by the trained ones) and
    `weights_file` (the external weights, stored as the converter stores them). Returns the storage description."""
    import onnx
    from onnx import numpy_helper

    from facerec.models.onnx_embedder import compact, storage_name
    from facerec.npzfile import write_npz

    if dtype not in ("int8", "float16"):
        raise ValueError(f"ONNX exports store weights as int8 (fan-in >= {INT8_MIN_FAN_IN}, else float16) or float16, "
                         f"not {dtype!r}")
    graph_name = base_card["extra"]["graph_file"]
    model = onnx.load_from_string((Path(base_folder) / graph_name).read_bytes())
    trained = module.initializers()
    for t in model.graph.initializer:
        if t.name in trained and t.data_location != onnx.TensorProto.EXTERNAL:
            t.CopyFrom(numpy_helper.from_array(trained[t.name].astype(np.float32), t.name))
    (Path(out_folder) / graph_name).write_bytes(model.SerializeToString())
    fan = INT8_MIN_FAN_IN if dtype == "int8" else 0
    write_npz(Path(out_folder) / weights_file, compact({n: trained[n] for n in module.external_names}, fan),
              compresslevel=9)
    return storage_name(fan)
