"""Embedders that run an ONNX graph from a registry package exactly as published, through ONNX Runtime.

Why a graph skeleton plus an npz instead of the original `.onnx`: the repository must stay small, so the
weights are stored compactly (float16, or int8 with a float32 scale per output channel) in a reproducible npz
(`facerec.npzfile`), and the graph travels as the original ONNX file with every initializer marked external
(a few KB). At load time the weights are expanded back to float32 and handed to ONNX Runtime as those external
initializers, so the operators that run are the original graph's, unchanged. The error this storage adds is
measured against the original graph by `scripts/convert_onnx_embedder.py` and `tests/test_onnx_embedders.py`
and stated in each model's card.

npz layout (written by the converter): `names` (the initializer names, in graph order) and, per initializer i,
either `t{i}` (stored as is: float16/float32/int64) or `t{i}.q` (int8) with `t{i}.s` (float32, one scale per
index of axis 0): value = q * s.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facerec.models.base import EmbeddingModel

_THREADS_ENV = "FACEREC_TORCH_THREADS"  # one knob for every CPU runtime: see facerec.models.runtime


def dequantise(npz: "np.lib.npyio.NpzFile") -> dict[str, np.ndarray]:
    """The graph's initializers as the graph wants them (float32, or their integer type) from a weights npz."""
    names = [str(n) for n in npz["names"]]
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        key = f"t{i}"
        if f"{key}.q" in npz.files:
            q = npz[f"{key}.q"]
            scale = npz[f"{key}.s"].astype(np.float32)
            out[name] = q.astype(np.float32) * scale.reshape((-1,) + (1,) * (q.ndim - 1))
        else:
            a = npz[key]
            out[name] = a.astype(np.float32) if a.dtype.kind == "f" else a
    return out


def compact(arrays: dict[str, np.ndarray], int8_min_fan_in: int) -> dict[str, np.ndarray]:
    """The npz arrays (layout in the module docstring) of `arrays`: float16, except tensors with a fan-in of at least
    `int8_min_fan_in` (0: none), stored int8 with a float32 scale per output channel (symmetric, max|w| / 127).
    Why per tensor: measured on SFace, int8 costs nothing on its 50176-input fully connected layer (min cosine
    0.9999938 against 0.9999957 all-float16) but 0.9972 when its convolutions are int8 too."""
    out: dict[str, np.ndarray] = {"names": np.array(list(arrays))}
    for i, (name, a) in enumerate(arrays.items()):
        key = f"t{i}"
        flat = a.reshape(len(a), -1)
        if int8_min_fan_in and flat.shape[1] >= int8_min_fan_in:
            scale = np.abs(flat).max(axis=1) / 127.0
            scale[scale == 0] = 1.0
            out[f"{key}.q"] = np.clip(np.rint(flat / scale[:, None]), -127, 127).astype(np.int8).reshape(a.shape)
            out[f"{key}.s"] = scale.astype(np.float32)
        else:
            out[key] = a.astype(np.float16)
    return out


def storage_name(int8_min_fan_in: int) -> str:
    return f"float16, int8 where fan-in >= {int8_min_fan_in}" if int8_min_fan_in else "float16"


def load_weights(path: Path | str) -> dict[str, np.ndarray]:
    with np.load(Path(path), allow_pickle=False) as npz:
        return dequantise(npz)


def onnx_session(graph: bytes, weights: dict[str, np.ndarray], threads: int | None = None):
    """An ONNX Runtime CPU session of `graph` (initializers external) with `weights` as its initializers."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads or max(1, int(os.environ.get(_THREADS_ENV, "1") or 1))
    options.inter_op_num_threads = 1
    names = list(weights)
    values = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(weights[n])) for n in names]
    options.add_external_initializers(names, values)
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    session._facerec_keepalive = values  # ORT reads these buffers; they must outlive the session
    return session


class OnnxEmbedder(EmbeddingModel):
    """An ONNX graph (card `extra.graph_file`) with compact weights (card `weights_file`).

    The card's `extra.batch_size` is how many crops one graph call takes (1 where the export fixed it).
    The card's `normalisation` ((x - mean) / scale, per channel, in `input_colour` order) is applied here,
    before the graph; a graph that normalises inside itself declares mean 0, scale 1.
    """

    def _load(self) -> None:
        extra = self.card.extra
        self.batch_size = int(extra.get("batch_size", 1))
        graph = (self.folder / extra["graph_file"]).read_bytes()
        self.session = onnx_session(graph, load_weights(self.weights_path))
        self.input_name = self.session.get_inputs()[0].name
        norm = self.card.normalisation
        self.mean = np.asarray(norm["mean"], dtype=np.float32).reshape(1, 3, 1, 1)
        self.scale = np.float32(norm["scale"])
        if self.card.input_colour not in ("RGB", "BGR"):
            raise ValueError(f"{self.id}: input_colour {self.card.input_colour!r} is neither RGB nor BGR")

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        """uint8 N x H x W x 3 RGB → float32 N x 3 x H x W as the graph expects."""
        x = np.asarray(crops, dtype=np.float32).transpose(0, 3, 1, 2)
        if self.card.input_colour == "BGR":
            x = x[:, ::-1]
        return np.ascontiguousarray((x - self.mean) / self.scale)

    def _embed(self, crops: np.ndarray) -> np.ndarray:
        x = self.preprocess(crops)
        outputs = [self.session.run(None, {self.input_name: x[i:i + self.batch_size]})[0]
                   for i in range(0, len(x), self.batch_size)]
        return np.concatenate(outputs).reshape(len(x), -1).astype(np.float32, copy=False)
