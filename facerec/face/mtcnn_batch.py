"""MTCNN over many photos at once (any sizes): the one MTCNN detection path of the pipeline.

Why our own driver over facenet-pytorch's three networks: its `detect_face` batches only photos of one size
and crops every candidate box in a Python loop (one small resize call per box), so on an H200 it detected
59 photos/s. Here photos are grouped into size buckets, each bucket runs as one batch per pyramid level and
one batch per refinement stage, and every resampling (pyramid levels, the 24/48-px crops) is a mean over
rectangles read from integer integral images: exactly `interpolate(mode="area")` (adaptive average pooling,
whose cell bounds are reproduced), with no per-box loop. Padding a bucket never leaks into a photo's result:
P-net's ceil-mode max-pool sees -inf past each photo's edge, P-net cells past it are dropped, and boxes are
clipped to each photo's own size. So results equal facenet-pytorch's one photo at a time up to float rounding
(tests/test_mtcnn_batch.py), with one difference: a box lying wholly outside its photo is dropped here, where
facenet-pytorch would mis-slice it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from facerec.models.mtcnn import MTCNNNetworks

Result = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes (N,4 x1,y1,x2,y2), scores (N,), landmarks (N,5,2)

THRESHOLDS = (0.6, 0.7, 0.7)  # P-net, R-net, O-net: facenet-pytorch's defaults (MTCNN's paper)
FACTOR = 0.709  # pyramid step
NMS_LEVEL, NMS_IMAGE, NMS_FINAL = 0.5, 0.7, 0.7
# Photos per batch: their padded pixels at most this many (also bounds memory: P-net's first level holds about
# 10 floats per photo pixel). Measured on 176-px LFW photos: on an H200, batches of 256 (8 MP) detected 3,783
# photos/s against 2,609 for batches of 2,048; on one CPU core, 16 (0.5 MP) took 14 ms a photo, 1 took 19.
GPU_BATCH_PIXELS = 8_000_000
CPU_BATCH_PIXELS = 500_000
REFINE_CHUNK = 4096  # R-net / O-net crops per forward pass


def _empty() -> Result:
    return np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, 5, 2))


def pyramid(height: int, width: int, min_face_size: int) -> list[float]:
    """facenet-pytorch's scale list for one photo (the same float steps, so the same level sizes)."""
    m = 12.0 / min_face_size
    minl = min(height, width) * m
    scales, scale = [], m
    while minl >= 12:
        scales.append(scale)
        scale = scale * FACTOR
        minl = minl * FACTOR
    return scales


def _bucket_key(height: int, width: int) -> tuple[int, int]:
    """Photos whose sides round to the same steps share a batch (padding wastes at most ~1/8 per side)."""
    def step(side: int) -> int:
        return max(32, 1 << max(0, side.bit_length() - 4))
    return -(-height // step(height)), -(-width // step(width))


class MTCNNDetector:
    """`detect(rgb)` and `detect_many(rgbs)` -> per photo boxes (N,4 x1,y1,x2,y2), scores (N,), landmarks (N,5,2),
    largest box first, as float64 arrays. The networks load on first use (GPU when present)."""

    def __init__(self, min_face_size: int = 20, device: str | None = None) -> None:
        self.min_face_size = int(min_face_size)
        self.networks = MTCNNNetworks(device)
        self._lock = threading.Lock()  # one batch at a time on the shared networks

    def detect(self, rgb: np.ndarray) -> Result:
        return self.detect_many([rgb])[0]

    def detect_many(self, images: Sequence[np.ndarray]) -> list[Result]:
        results: list[Result | None] = [None] * len(images)
        buckets: dict[tuple[int, int], list[int]] = {}
        for i, rgb in enumerate(images):
            h, w = rgb.shape[:2]
            if min(h, w) < self.min_face_size:
                results[i] = _empty()  # no face of the minimum size fits; the pyramid would be empty
            else:
                buckets.setdefault(_bucket_key(h, w), []).append(i)
        if not buckets:
            return results
        nets = self.networks.load()
        import torch

        device = torch.device(nets.device)
        limit = GPU_BATCH_PIXELS if device.type == "cuda" else CPU_BATCH_PIXELS

        with self._lock, torch.inference_mode():
            for members in buckets.values():
                batch: list[int] = []
                height = width = 0  # the batch's padded shape
                for i in members + [-1]:
                    if i >= 0:
                        h, w = images[i].shape[:2]
                    if batch and (i < 0 or (len(batch) + 1) * max(height, h) * max(width, w) > limit):
                        for j, result in zip(batch, _detect_bucket(nets, device, [images[k] for k in batch],
                                                                   self.min_face_size)):
                            results[j] = result
                        batch, height, width = [], 0, 0
                    if i >= 0:
                        batch.append(i)
                        height, width = max(height, h), max(width, w)
        return results


def _detect_bucket(nets, device, images: list[np.ndarray], min_face_size: int) -> list[Result]:
    """The three MTCNN stages over one bucket of photos (padded to one shape)."""
    import torch

    n = len(images)
    heights = [im.shape[0] for im in images]
    widths = [im.shape[1] for im in images]
    H, W = max(heights), max(widths)
    if all(im.shape[:2] == (H, W) for im in images):
        host = np.stack(images)
    else:
        host = np.zeros((n, H, W, 3), dtype=np.uint8)
        for i, im in enumerate(images):
            host[i, : im.shape[0], : im.shape[1]] = im
    pixels = torch.from_numpy(host).to(device)
    # integral images, one zero row/column in front; int32 is exact while a channel's sum fits
    dtype = torch.int32 if 255 * H * W < 2**31 else torch.int64
    integral = torch.zeros((n, H + 1, W + 1, 3), dtype=dtype, device=device)
    integral[:, 1:, 1:] = pixels.to(dtype).cumsum(1, dtype=dtype).cumsum(2, dtype=dtype)
    del pixels
    h_t = torch.tensor(heights, device=device)
    w_t = torch.tensor(widths, device=device)

    boxes, image_idx = _stage_one(nets, integral, heights, widths, min_face_size)
    boxes, image_idx = _stage_two(nets, integral, boxes, image_idx, h_t, w_t)
    boxes, points, image_idx = _stage_three(nets, integral, boxes, image_idx, h_t, w_t)

    boxes, points, image_idx = boxes.cpu().numpy(), points.cpu().numpy(), image_idx.cpu().numpy()
    order = np.argsort(image_idx, kind="stable")
    bounds = np.searchsorted(image_idx[order], np.arange(n + 1))
    results = []
    for i in range(n):
        sel = order[bounds[i]: bounds[i + 1]]
        if len(sel) == 0:
            results.append(_empty())
            continue
        b, p = boxes[sel], points[sel]
        largest = np.argsort((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[::-1]  # largest first, as facenet-pytorch
        b, p = b[largest], p[largest]
        results.append((b[:, :4].astype(np.float64), b[:, 4].astype(np.float64), p.astype(np.float64)))
    return results


def _rect_means(integral, image_idx, y0, y1, x0, x1):
    """Means over rectangles [y0,y1) x [x0,x1): image_idx (M,), y0/y1 (M,R), x0/x1 (M,S) -> (M,3,R,S) float32,
    computed as adaptive average pooling does (sum / cell height / cell width). `integral` is channels-last,
    (B, H+1, W+1, 3), so each corner read is one 3-value row."""
    _, hp, wp, _ = integral.shape
    flat = integral.view(-1, 3)
    base = image_idx[:, None, None] * (hp * wp)

    def at(ys, xs):
        index = (base + ys[:, :, None] * wp + xs[:, None, :]).reshape(-1)
        return flat.index_select(0, index)

    total = at(y1, x1) - at(y0, x1) - at(y1, x0) + at(y0, x0)
    m, r, s = y0.shape[0], y0.shape[1], x0.shape[1]
    kh = (y1 - y0).float()[:, :, None, None]
    kw = (x1 - x0).float()[:, None, :, None]
    return (total.view(m, r, s, 3).float() / kh / kw).permute(0, 3, 1, 2)


def _cells(start, extent, out, width: int):
    """Adaptive-pooling cell bounds: cell i of out[m] cells over [start, start+extent) of row m, for i < width
    (cells past a row's own count repeat its last cell: they are masked or dropped by the caller).
    start, extent, out: (M,) int64 -> lo, hi: (M, width)."""
    import torch

    i = torch.minimum(torch.arange(width, device=start.device)[None, :], out[:, None] - 1)
    lo = start[:, None] + torch.div(i * extent[:, None], out[:, None], rounding_mode="floor")
    hi = start[:, None] + torch.div((i + 1) * extent[:, None] + out[:, None] - 1, out[:, None],
                                    rounding_mode="floor")
    return lo, hi


def _batched_nms(boxes, scores, image_idx, threshold: float):
    """torchvision NMS within each photo (float64 coordinate offsets: no rounding from large offsets)."""
    import torch
    from torchvision.ops import nms

    if boxes.shape[0] == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    b = boxes.double()
    b = b - b.min()
    offsets = image_idx.double() * (b.max() + 1)
    return nms(b + offsets[:, None], scores.double(), threshold)


def _min_nms(boxes, scores, image_idx, threshold: float):
    """MTCNN's last NMS ("Min": overlap over the smaller box, facenet-pytorch's `nms_numpy`), within each photo,
    in float64: all photos at once, one greedy step per rank (photos hold few boxes by now)."""
    import torch

    b = boxes.double().cpu().numpy()
    s = scores.double().cpu().numpy()
    idx = image_idx.cpu().numpy()
    order = np.lexsort((-s, idx))  # by photo, best score first
    idx_sorted = idx[order]
    starts = np.searchsorted(idx_sorted, idx_sorted, side="left")
    rank = np.arange(len(order)) - starts
    photos, slot = np.unique(idx_sorted, return_inverse=True)
    depth = int(rank.max()) + 1
    grid = np.full((len(photos), depth), -1)
    grid[slot, rank] = order
    valid = grid >= 0
    g = b[np.where(valid, grid, 0)]  # (P, K, 4)
    area = (g[..., 2] - g[..., 0] + 1) * (g[..., 3] - g[..., 1] + 1)
    w = np.maximum(0.0, np.minimum(g[:, :, None, 2], g[:, None, :, 2])
                   - np.maximum(g[:, :, None, 0], g[:, None, :, 0]) + 1)
    h = np.maximum(0.0, np.minimum(g[:, :, None, 3], g[:, None, :, 3])
                   - np.maximum(g[:, :, None, 1], g[:, None, :, 1]) + 1)
    overlap = w * h / np.minimum(area[:, :, None], area[:, None, :])
    alive = valid.copy()
    later = np.triu(np.ones((depth, depth), dtype=bool), 1)
    for k in range(depth):
        alive &= ~(alive[:, k:k + 1] & (overlap[:, k, :] > threshold) & later[k])
    return torch.as_tensor(grid[alive], device=boxes.device)


def _pnet(pnet, data, out_h, out_w):
    """P-net over padded level images, blind to the padding: -inf past each photo's edge before the ceil-mode
    max-pool (which ignores out-of-range cells on a photo alone), and probability -1 on output cells past it."""
    import torch

    x = pnet.prelu1(pnet.conv1(data))
    rows = torch.arange(x.shape[2], device=x.device)
    cols = torch.arange(x.shape[3], device=x.device)
    outside = ((rows[None, :, None] >= (out_h - 2)[:, None, None])
               | (cols[None, None, :] >= (out_w - 2)[:, None, None]))
    x = pnet.pool1(x.masked_fill(outside[:, None], float("-inf")))
    x = pnet.prelu2(pnet.conv2(x))
    x = pnet.prelu3(pnet.conv3(x))
    probs = pnet.softmax4_1(pnet.conv4_1(x))[:, 1]
    reg = pnet.conv4_2(x)
    valid_h = torch.div(out_h - 2 + 1, 2, rounding_mode="floor") - 4
    valid_w = torch.div(out_w - 2 + 1, 2, rounding_mode="floor") - 4
    rows = torch.arange(probs.shape[1], device=x.device)
    cols = torch.arange(probs.shape[2], device=x.device)
    outside = ((rows[None, :, None] >= valid_h[:, None, None]) | (cols[None, None, :] >= valid_w[:, None, None]))
    return reg, probs.masked_fill(outside, -1.0)


def _square(boxes):
    from facenet_pytorch.models.utils.detect_face import rerec

    return rerec(boxes)


def _stage_one(nets, integral, heights: list[int], widths: list[int], min_face_size: int):
    """P-net over every pyramid level of every photo; candidates kept per level (NMS 0.5), then per photo (0.7)."""
    import torch
    from facenet_pytorch.models.utils.detect_face import generateBoundingBox

    device = integral.device
    scales_per = [pyramid(h, w, min_face_size) for h, w in zip(heights, widths)]
    all_boxes, all_idx = [], []
    for level in range(max(len(s) for s in scales_per)):
        members = [i for i, s in enumerate(scales_per) if len(s) > level]
        scale = scales_per[members[0]][level]  # the same float for every photo at this level
        m_t = torch.tensor(members, device=device)
        out_h = torch.tensor([int(heights[i] * scale + 1) for i in members], device=device)
        out_w = torch.tensor([int(widths[i] * scale + 1) for i in members], device=device)
        h_t = torch.tensor([heights[i] for i in members], device=device)
        w_t = torch.tensor([widths[i] for i in members], device=device)
        zero = torch.zeros_like(h_t)
        y0, y1 = _cells(zero, h_t, out_h, int(out_h.max()))
        x0, x1 = _cells(zero, w_t, out_w, int(out_w.max()))
        data = (_rect_means(integral, m_t, y0, y1, x0, x1) - 127.5) * 0.0078125
        reg, probs = _pnet(nets.pnet, data, out_h, out_w)
        boxes, idx = generateBoundingBox(reg, probs, scale, THRESHOLDS[0])
        idx = m_t[idx]
        pick = _batched_nms(boxes[:, :4], boxes[:, 4], idx, NMS_LEVEL)
        all_boxes.append(boxes[pick])
        all_idx.append(idx[pick])
    boxes, idx = torch.cat(all_boxes), torch.cat(all_idx)
    pick = _batched_nms(boxes[:, :4], boxes[:, 4], idx, NMS_IMAGE)
    boxes, idx = boxes[pick], idx[pick]
    regw = boxes[:, 2] - boxes[:, 0]
    regh = boxes[:, 3] - boxes[:, 1]
    boxes = torch.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                         boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh, boxes[:, 4]], dim=1)
    return _square(boxes), idx


def _crops(integral, boxes, image_idx, heights, widths, size: int):
    """Each box cut from its own photo (clipped to that photo, as facenet-pytorch's `pad`) and area-resampled
    to size x size, normalised; returns the crops and which boxes had a non-empty cut (the others are dropped)."""
    import torch

    b = boxes[:, :4].trunc().long()
    x0 = b[:, 0].clamp(min=1) - 1
    y0 = b[:, 1].clamp(min=1) - 1
    x1 = torch.minimum(b[:, 2], widths[image_idx])
    y1 = torch.minimum(b[:, 3], heights[image_idx])
    keep = (y1 > y0) & (x1 > x0)
    x0, y0, x1, y1, idx = x0[keep], y0[keep], x1[keep], y1[keep], image_idx[keep]
    out = torch.full_like(y0, size)
    ry0, ry1 = _cells(y0, y1 - y0, out, size)
    rx0, rx1 = _cells(x0, x1 - x0, out, size)
    return (_rect_means(integral, idx, ry0, ry1, rx0, rx1) - 127.5) * 0.0078125, keep


def _forward(net, data):
    import torch

    outs = [net(data[i: i + REFINE_CHUNK]) for i in range(0, data.shape[0], REFINE_CHUNK)]
    return tuple(torch.cat(parts) for parts in zip(*outs))


def _stage_two(nets, integral, boxes, image_idx, heights, widths):
    """R-net on 24x24 crops of the candidates: score > 0.7, NMS 0.7 per photo, box regression, squared."""
    import torch

    if boxes.shape[0] == 0:
        return boxes, image_idx
    from facenet_pytorch.models.utils.detect_face import bbreg

    data, keep = _crops(integral, boxes, image_idx, heights, widths, 24)
    boxes, image_idx = boxes[keep], image_idx[keep]
    reg, probs = _forward(nets.rnet, data)
    score = probs[:, 1]
    passed = score > THRESHOLDS[1]
    boxes = torch.cat((boxes[passed, :4], score[passed, None]), dim=1)
    image_idx, reg = image_idx[passed], reg[passed]
    pick = _batched_nms(boxes[:, :4], boxes[:, 4], image_idx, NMS_IMAGE)
    boxes, image_idx, reg = boxes[pick], image_idx[pick], reg[pick]
    return _square(bbreg(boxes, reg)), image_idx


def _stage_three(nets, integral, boxes, image_idx, heights, widths):
    """O-net on 48x48 crops: score > 0.7, landmarks, box regression, "Min" NMS 0.7 per photo."""
    import torch

    if boxes.shape[0] == 0:
        return boxes, torch.zeros((0, 5, 2), device=boxes.device), image_idx
    from facenet_pytorch.models.utils.detect_face import bbreg

    data, keep = _crops(integral, boxes, image_idx, heights, widths, 48)
    boxes, image_idx = boxes[keep], image_idx[keep]
    reg, landmarks, probs = _forward(nets.onet, data)
    score = probs[:, 1]
    passed = score > THRESHOLDS[2]
    boxes = torch.cat((boxes[passed, :4], score[passed, None]), dim=1)
    image_idx, reg, landmarks = image_idx[passed], reg[passed], landmarks[passed]
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    points = torch.stack((w[:, None] * landmarks[:, :5] + boxes[:, 0:1] - 1,
                          h[:, None] * landmarks[:, 5:10] + boxes[:, 1:2] - 1), dim=2)
    boxes = bbreg(boxes, reg)
    if boxes.shape[0] == 0:
        return boxes, points, image_idx
    pick = _min_nms(boxes[:, :4], boxes[:, 4], image_idx, NMS_FINAL)
    return boxes[pick], points[pick], image_idx[pick]
