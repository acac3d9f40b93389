"""MiniFASNet V2 and V1SE (Silent-Face-Anti-Spoofing, minivision-ai, Apache-2.0): passive liveness in PyTorch.

Written for facerec from the original definition (`src/model_lib/MiniFASNet.py` at commit b6d5f04 of
github.com/minivision-ai/Silent-Face-Anti-Spoofing), with the original's layer names so its state dict loads
as it is; `tests/test_minifasnet_port.py` checks the outputs against the original implementation's.

The network: 3x3/2 conv -> 3x3 depthwise conv -> inverted-residual stages (1x1 expand, 3x3 depthwise, linear
1x1 project; PReLU after the first two) with strided transitions 40 -> 20 -> 10 -> 5 px on an 80x80 input;
1x1 conv to 512, 5x5 global depthwise conv, linear 512 -> 128, batch norm, linear 128 -> 3 logits.
V1SE adds a squeeze-and-excitation block to the last unit of each residual stage. Class 1 of the softmax is
"real face". `channels` (the original's `keep` list) gives each layer's width after the authors' pruning.

The crop the model expects (`minifasnet_crop`): a box `scale` times the detector box, centred on it, moved to
stay inside the frame (scale lowered where it cannot fit), resized to 80x80, BGR, float 0-255.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import nn

# Layer widths of the two released models (the original's keep_dict '1.8M' and '1.8M_').
CHANNELS = {
    "MiniFASNetV1SE": (32, 32, 103, 103, 64, 13, 13, 64, 26, 26, 64, 13, 13, 64, 52, 52, 64, 231, 231, 128,
                       154, 154, 128, 52, 52, 128, 26, 26, 128, 52, 52, 128, 26, 26, 128, 26, 26, 128, 308, 308,
                       128, 26, 26, 128, 26, 26, 128, 512, 512),
    "MiniFASNetV2": (32, 32, 103, 103, 64, 13, 13, 64, 13, 13, 64, 13, 13, 64, 13, 13, 64, 231, 231, 128,
                     231, 231, 128, 52, 52, 128, 26, 26, 128, 77, 77, 128, 26, 26, 128, 26, 26, 128, 308, 308,
                     128, 26, 26, 128, 26, 26, 128, 512, 512),
}
SQUEEZE_EXCITE = {"MiniFASNetV1SE": True, "MiniFASNetV2": False}


class ConvBlock(nn.Module):
    """Conv (no bias) + batch norm, with PReLU unless `linear`."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1, linear: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.prelu = None if linear else nn.PReLU(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return x if self.prelu is None else self.prelu(x)


class SEModule(nn.Module):
    """Squeeze-and-excitation with batch norms after both 1x1 convs (as in the original)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels // reduction)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.relu(self.bn1(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(self.bn2(self.fc2(w)))


class DepthWise(nn.Module):
    """1x1 expand (PReLU), 3x3 depthwise (PReLU), linear 1x1 project; residual (optionally SE-gated) when
    `residual`."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, stride: int, residual: bool, se: bool = False) -> None:
        super().__init__()
        self.conv = ConvBlock(c_in, c_mid)
        self.conv_dw = ConvBlock(c_mid, c_mid, 3, stride, 1, groups=c_mid)
        self.project = ConvBlock(c_mid, c_out, linear=True)
        self.residual = residual
        self.se_module = SEModule(c_out) if se else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.conv_dw(self.conv(x)))
        if not self.residual:
            return y
        if self.se_module is not None:
            y = self.se_module(y)
        return x + y


class Residual(nn.Module):
    """A stage of residual units; `keep[i:i + 3 * n + 1]` are its widths (in, mid, out=in, mid, ...)."""

    def __init__(self, widths: Sequence[int], n: int, se: bool) -> None:
        super().__init__()
        units = []
        for k in range(n):
            c_in, c_mid, c_out = widths[3 * k], widths[3 * k + 1], widths[3 * k + 3]
            units.append(DepthWise(c_in, c_mid, c_out, 1, True, se=se and k == n - 1))
        self.model = nn.Sequential(*units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MiniFASNet(nn.Module):
    """MiniFASNet on an 80x80 BGR crop (float, 0-255): N x 3 x 80 x 80 -> N x 3 logits."""

    def __init__(self, variant: str, embedding_size: int = 128, num_classes: int = 3, conv6_kernel: int = 5) -> None:
        super().__init__()
        if variant not in CHANNELS:
            raise ValueError(f"unknown MiniFASNet variant {variant!r} (known: {', '.join(CHANNELS)})")
        k, se = CHANNELS[variant], SQUEEZE_EXCITE[variant]
        self.variant = variant
        self.conv1 = ConvBlock(3, k[0], 3, 2, 1)
        self.conv2_dw = ConvBlock(k[0], k[1], 3, 1, 1, groups=k[1])
        # In the original the mid width of a unit is written twice (expand out, depthwise in/out); the
        # released widths always repeat it, so (in, mid, out) = (k[i], k[i + 1], k[i + 3]).
        self.conv_23 = DepthWise(k[1], k[2], k[4], 2, False)
        self.conv_3 = Residual(k[4:17], 4, se)
        self.conv_34 = DepthWise(k[16], k[17], k[19], 2, False)
        self.conv_4 = Residual(k[19:38], 6, se)
        self.conv_45 = DepthWise(k[37], k[38], k[40], 2, False)
        self.conv_5 = Residual(k[40:47], 2, se)
        self.conv_6_sep = ConvBlock(k[46], k[47])
        self.conv_6_dw = ConvBlock(k[47], k[48], conv6_kernel, groups=k[48], linear=True)
        self.linear = nn.Linear(512, embedding_size, bias=False)
        self.bn = nn.BatchNorm1d(embedding_size)
        self.prob = nn.Linear(embedding_size, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in (self.conv1, self.conv2_dw, self.conv_23, self.conv_3, self.conv_34, self.conv_4,
                      self.conv_45, self.conv_5, self.conv_6_sep, self.conv_6_dw):
            x = layer(x)
        return self.prob(self.bn(self.linear(x.flatten(1))))


def crop_box(frame_w: int, frame_h: int, box_xywh: Sequence[int], scale: float) -> tuple[int, int, int, int]:
    """The original's `CropImage._get_new_box`: (x1, y1, x2, y2) inclusive of a box `scale` times
    `box_xywh` = (left, top, width, height), centred on it, shifted inside the frame; the scale is lowered
    where the enlarged box cannot fit."""
    x, y, w, h = (float(v) for v in box_xywh)
    scale = min((frame_h - 1) / h, (frame_w - 1) / w, scale)
    cx, cy = x + w / 2, y + h / 2
    x1, y1 = cx - w * scale / 2, cy - h * scale / 2
    x2, y2 = cx + w * scale / 2, cy + h * scale / 2
    if x1 < 0:
        x2, x1 = x2 - x1, 0.0
    if y1 < 0:
        y2, y1 = y2 - y1, 0.0
    if x2 > frame_w - 1:
        x1, x2 = x1 - (x2 - frame_w + 1), frame_w - 1.0
    if y2 > frame_h - 1:
        y1, y2 = y1 - (y2 - frame_h + 1), frame_h - 1.0
    return int(x1), int(y1), int(x2), int(y2)


def minifasnet_crop(bgr: np.ndarray, box_xywh: Sequence[int], scale: float, size: int = 80) -> np.ndarray:
    """The model's input crop of a uint8 BGR frame: `size` x `size` x 3 uint8 BGR (the original's
    `CropImage.crop`, bilinear resize)."""
    x1, y1, x2, y2 = crop_box(bgr.shape[1], bgr.shape[0], box_xywh, scale)
    return cv2.resize(bgr[y1 : y2 + 1, x1 : x2 + 1], (size, size))


def to_input(crops: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
    """N x H x W x 3 uint8 BGR crops -> N x 3 x H x W float32 0-255 (no scaling, no mean)."""
    x = np.ascontiguousarray(np.asarray(crops, dtype=np.float32).transpose(0, 3, 1, 2))
    return torch.from_numpy(x)
