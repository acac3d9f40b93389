"""An exact PyTorch port of dlib's ResNet-29 face-recognition network (`dlib_face_recognition_resnet_model_v1`).

The network is the one in dlib's `examples/dnn_face_recognition_ex.cpp`::

    input_rgb_image_sized<150>                       (RGB - mean) / 256
    con<32,7,7,2,2> affine relu                      7x7 stride 2, no padding   -> 32 x 72 x 72
    max_pool<3,3,2,2>                                3x3 stride 2, no padding   -> 32 x 35 x 35
    level4: 3 x ares<32>                                                         -> 32 x 35 x 35
    level3: ares_down<64>  + 3 x ares<64>                                        -> 64 x 17 x 17
    level2: ares_down<128> + 2 x ares<128>                                       -> 128 x 8 x 8
    level1: ares_down<256> + 2 x ares<256>                                       -> 256 x 4 x 4 (!)
    level0: ares_down<256>                                                       -> 256 x 2 x 2
    avg_pool_everything, fc_no_bias<128>

A residual block is con3x3 -> affine -> relu -> con3x3 -> affine, plus the shortcut, then relu. dlib's padding
default is `stride != 1 ? 0 : k/2`, so every stride-2 layer (the 7x7 stem, the max pool, the first conv of a
"down" block and its 2x2 average-pool shortcut) is unpadded. A down block's shortcut is a 2x2/2 average pool of
its input, zero-padded in channels when the width doubles. Where the two branches differ in size (at 8x8 the
strided 3x3 conv gives 3x3 but the 2x2 pool gives 4x4), dlib's `add_prev` sums into a tensor of the larger size,
treating the smaller one as zero beyond its bottom/right edge; `_add_mismatched` reproduces that.

dlib's "affine" layers are its frozen batch norms (per-channel scale and bias); the convolutions' own biases are
folded into the affine biases (exact algebra: g * (Wx + c) + b = g * Wx + (g * c + b)).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerec.models.torch_embedder import TorchEmbedder

MEAN_RGB = (122.782, 117.001, 104.298)
INPUT_SCALE = 256.0
INPUT_SIZE = 150


class Affine(nn.Module):
    """dlib's affine_ layer: y = x * scale[c] + bias[c]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias[None, :, None, None], x, self.weight[None, :, None, None])


class ConvAffine(nn.Module):
    """dlib's con_ (bias folded away) followed by affine_."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.affine = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.affine(self.conv(x))


def _add_mismatched(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: sum into the larger spatial size, zero beyond the smaller tensor's bottom/right edges."""
    if a.shape[2:] == b.shape[2:]:
        return a + b
    h = max(a.shape[2], b.shape[2])
    w = max(a.shape[3], b.shape[3])
    a = F.pad(a, (0, w - a.shape[3], 0, h - a.shape[2]))
    b = F.pad(b, (0, w - b.shape[3], 0, h - b.shape[2]))
    return a + b


class ResBlock(nn.Module):
    """ares<N> (stride 1, identity shortcut) or ares_down<N> (stride 2, 2x2 average-pool shortcut)."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        stride = 2 if down else 1
        self.conv1 = ConvAffine(cin, cout, 3, stride, 0 if down else 1)
        self.conv2 = ConvAffine(cout, cout, 3, 1, 1)
        self.extra_channels = cout - cin
        if not down and cin != cout:
            raise ValueError("a stride-1 block keeps its width")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x)))
        if self.down:
            shortcut = F.avg_pool2d(x, 2, 2)
            if self.extra_channels:
                shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
            return F.relu(_add_mismatched(out, shortcut))
        return F.relu(out + x)


# (name, in channels, out channels, down) in forward order; the names are the state-dict prefixes.
BLOCKS: tuple[tuple[str, int, int, bool], ...] = (
    ("res32_1", 32, 32, False),
    ("res32_2", 32, 32, False),
    ("res32_3", 32, 32, False),
    ("res64_down", 32, 64, True),
    ("res64_1", 64, 64, False),
    ("res64_2", 64, 64, False),
    ("res64_3", 64, 64, False),
    ("res128_down", 64, 128, True),
    ("res128_1", 128, 128, False),
    ("res128_2", 128, 128, False),
    ("res256_down", 128, 256, True),
    ("res256_1", 256, 256, False),
    ("res256_2", 256, 256, False),
    ("res256_down_out", 256, 256, True),
)


class DlibResNet29(nn.Module):
    """dlib's face-recognition ResNet. Input: N x 3 x 150 x 150 float, already (RGB - mean) / 256."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvAffine(3, 32, 7, 2, 0)
        self.blocks = nn.ModuleDict({name: ResBlock(cin, cout, down) for name, cin, cout, down in BLOCKS})
        self.fc = nn.Linear(256, 128, bias=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 256-d pooled features before the final projection."""
        x = F.relu(self.stem(x))
        x = F.max_pool2d(x, 3, 2)
        for block in self.blocks.values():
            x = block(x)
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def preprocess(crops: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 N x 150 x 150 x 3 RGB -> float N x 3 x 150 x 150, (x - mean) / 256 as dlib's input layer does."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).to(device=device, dtype=torch.float32)
    mean = torch.tensor(MEAN_RGB, dtype=torch.float32, device=device)
    return ((x - mean) / INPUT_SCALE).permute(0, 3, 1, 2).contiguous()


def quantise(state: dict[str, np.ndarray], dtype: str = "int12") -> dict[str, np.ndarray]:
    """The inverse storage of `dequantise`: float32/float16 arrays, or conv/fc weights as per-output-channel
    symmetric intN (`<name>.q` + `<name>.scale`, max-abs scale, no clipping); 1-D tensors stay float32."""
    if dtype in ("float32", "float16"):
        return {k: v.astype(dtype) for k, v in state.items()}
    if dtype not in ("int8", "int10", "int11", "int12"):
        raise ValueError(f"unknown storage dtype {dtype!r}")
    bits = int(dtype[3:])
    qmax = 2 ** (bits - 1) - 1
    out: dict[str, np.ndarray] = {}
    for k, v in state.items():
        if v.ndim >= 2:
            flat = v.reshape(v.shape[0], -1).astype(np.float64)
            scale = np.abs(flat).max(axis=1) / qmax
            scale[scale == 0] = 1.0
            q = np.clip(np.rint(flat / scale[:, None]), -qmax, qmax)
            out[k + ".q"] = q.astype(np.int8 if bits <= 8 else np.int16).reshape(v.shape)
            out[k + ".scale"] = scale.astype(np.float32)
        else:
            out[k] = v.astype(np.float32)
    return out


def dequantise(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Turn the stored arrays into float32 state-dict tensors.

    A tensor is stored either as float (`name`) or as per-output-channel symmetric int8 (`name.q` int8 plus
    `name.scale` float32 with one scale per output row/filter): value = q * scale.
    """
    out: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        if key.endswith(".scale"):
            continue
        if key.endswith(".q"):
            name = key[: -len(".q")]
            scale = arrays[name + ".scale"].astype(np.float32)
            q = value.astype(np.float32)
            out[name] = q * scale.reshape((-1,) + (1,) * (q.ndim - 1))
        else:
            out[key] = value.astype(np.float32)
    return out


def load_state_from_npz(module: DlibResNet29, path: Path | str) -> DlibResNet29:
    """Load weights stored by scripts/convert_dlib_resnet.py into `module` (strict: every tensor must match)."""
    with np.load(Path(path), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    state = {k: torch.from_numpy(v) for k, v in dequantise(arrays).items()}
    module.load_state_dict(state, strict=True)
    return module


class DlibResNetEmbedder(TorchEmbedder):
    """dlib's ResNet-29 face descriptor (128-d) on 150x150 RGB chips."""

    input_mean = MEAN_RGB
    input_scale = INPUT_SCALE

    def _build(self) -> DlibResNet29:
        return load_state_from_npz(DlibResNet29(), self.weights_path)

    def _preprocess(self, crops: np.ndarray) -> torch.Tensor:
        return preprocess(crops, self.device)
