"""Metric-learning losses: triplet loss with online mining, an ArcFace head, and their weighted sum.

Distances. Embeddings are L2-normalised first (inference compares unit vectors by cosine, so training does
too). `distance="euclidean"` (the default) is the chord length ||a - b|| = sqrt(2 - 2 cos) in [0, 2];
`distance="cosine"` is 1 - cos in [0, 2]. The margin is in the units of the chosen distance.

Mining works on a batch's distance matrix and labels and returns index tensors (anchor, positive, negative),
so each miner can be tested on a hand-made matrix:

- `batch_hard_triplets` (Hermans et al. 2017): for every anchor that has a positive and a negative in the
  batch, its farthest positive and its nearest negative. One triplet per anchor.
- `semi_hard_triplets` (Schroff et al. 2015, FaceNet): for every positive pair (a, p), a != p, the negatives
  with d(a,p) < d(a,n) < d(a,p) + margin; the hardest of them (smallest d(a,n)) is taken. Pairs with no such
  negative give no triplet (no fallback to hard negatives, which is what FaceNet avoids). Early in training from
  scratch few triplets may qualify; prefer batch_hard there.
- `all_triplets`: every valid (a, p, n); the "all" loss averages over the triplets whose loss is > 0
  ("batch all", Hermans et al.).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DISTANCES = ("euclidean", "cosine")
MININGS = ("batch_hard", "semi_hard", "all")


def pairwise_distances(embeddings: torch.Tensor, distance: str = "euclidean", normalise: bool = True) -> torch.Tensor:
    """N x N distances between (L2-normalised) embeddings.

    Euclidean distances are computed as sqrt(max(2 - 2 cos, eps)): a zero distance (two equal embeddings) gets
    a zero gradient instead of sqrt's infinite one; the diagonal is exactly 0.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    e = F.normalize(embeddings.float(), dim=1) if normalise else embeddings.float()
    cos = e @ e.T
    if distance == "cosine":
        return 1.0 - cos
    dist = torch.sqrt(torch.clamp(2.0 - 2.0 * cos, min=1e-12))
    eye = torch.eye(len(dist), dtype=torch.bool, device=dist.device)
    return dist.masked_fill(eye, 0.0)  # exact zeros on the diagonal (rounding would give ~3e-4)


def _masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive mask: same label, not self; negative mask: different label)."""
    labels = labels.reshape(-1)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.numel(), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def batch_hard_triplets(dist: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each anchor with >= 1 positive and >= 1 negative: (anchor, hardest positive, hardest negative).

    Ties go to the lowest index (torch's argmax/argmin order).
    """
    pos, neg = _masks(labels)
    d = dist.detach()
    valid = pos.any(1) & neg.any(1)
    hardest_pos = torch.where(pos, d, torch.full_like(d, -math.inf)).argmax(1)
    hardest_neg = torch.where(neg, d, torch.full_like(d, math.inf)).argmin(1)
    anchors = torch.nonzero(valid).reshape(-1)
    return anchors, hardest_pos[anchors], hardest_neg[anchors]


def semi_hard_triplets(
    dist: torch.Tensor, labels: torch.Tensor, margin: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each positive pair (a, p): the negative n with d(a,p) < d(a,n) < d(a,p) + margin and the smallest
    d(a,n) (ties: lowest index). Pairs without such a negative are left out."""
    pos, neg = _masks(labels)
    d = dist.detach()
    a_idx, p_idx = torch.nonzero(pos, as_tuple=True)
    if a_idx.numel() == 0:
        empty = a_idx.new_zeros(0)
        return empty, empty, empty
    d_ap = d[a_idx, p_idx][:, None]  # P x 1
    d_an = d[a_idx]  # P x N
    band = neg[a_idx] & (d_an > d_ap) & (d_an < d_ap + margin)
    n_idx = torch.where(band, d_an, torch.full_like(d_an, math.inf)).argmin(1)
    keep = band.any(1)
    return a_idx[keep], p_idx[keep], n_idx[keep]


def all_triplets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every valid (a, p, n): label[a] == label[p], a != p, label[a] != label[n]."""
    pos, neg = _masks(labels)
    valid = pos[:, :, None] & neg[:, None, :]
    a, p, n = torch.nonzero(valid, as_tuple=True)
    return a, p, n


class TripletLoss(nn.Module):
    """max(0, d(a,p) - d(a,n) + margin) over online-mined triplets of a labelled batch.

    `batch_hard` and `semi_hard` average over the mined triplets; `all` averages over the triplets with a
    positive loss. A batch with no triplet gives 0 (still attached to the graph). `last_stats` holds detached
    diagnostics of the latest call: number of triplets, fraction active, mean d(a,p) and d(a,n).
    """

    def __init__(self, margin: float = 0.2, mining: str = "batch_hard", distance: str = "euclidean") -> None:
        super().__init__()
        if mining not in MININGS:
            raise ValueError(f"mining must be one of {MININGS}, got {mining!r}")
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        self.margin = float(margin)
        self.mining = mining
        self.distance = distance
        self.last_stats: dict[str, float] = {}

    def mine(self, dist: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.mining == "batch_hard":
            return batch_hard_triplets(dist, labels)
        if self.mining == "semi_hard":
            return semi_hard_triplets(dist, labels, self.margin)
        return all_triplets(labels)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        dist = pairwise_distances(embeddings, self.distance)
        a, p, n = self.mine(dist, labels)
        if a.numel() == 0:
            self.last_stats = {"triplets": 0.0, "active": 0.0, "d_ap": float("nan"), "d_an": float("nan")}
            return dist.sum() * 0.0
        d_ap, d_an = dist[a, p], dist[a, n]
        losses = F.relu(d_ap - d_an + self.margin)
        active = losses > 0
        if self.mining == "all":
            count = int(active.sum())
            loss = losses.sum() / count if count else losses.sum() * 0.0
        else:
            loss = losses.mean()
        self.last_stats = {
            "triplets": float(a.numel()),
            "active": float(active.float().mean()),
            "d_ap": float(d_ap.detach().mean()),
            "d_an": float(d_an.detach().mean()),
        }
        return loss


class ArcFaceHead(nn.Module):
    """Additive angular margin (Deng et al. 2019, insightface's formulation), kept apart from the backbone.

    logits = s * cos(theta_j) for j != y and s * phi(theta_y) for the true class, with
    phi = cos(theta + m) while theta + m <= pi (cos theta > th = cos(pi - m)), else the monotone continuation
    cos theta - mm with mm = sin(pi - m) * m; `easy_margin` uses phi only where cos theta > 0.
    Embeddings and class centres (`weight`, n_classes x embedding_dim) are L2-normalised; the head always
    computes in float32 (safe under autocast).
    """

    def __init__(
        self, embedding_dim: int, n_classes: int, s: float = 64.0, m: float = 0.5, easy_margin: bool = False
    ) -> None:
        super().__init__()
        self.embedding_dim = int(embedding_dim)
        self.n_classes = int(n_classes)
        self.s = float(s)
        self.m = float(m)
        self.easy_margin = bool(easy_margin)
        self.weight = nn.Parameter(torch.empty(self.n_classes, self.embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        self.cos_m = math.cos(self.m)
        self.sin_m = math.sin(self.m)
        self.th = math.cos(math.pi - self.m)
        self.mm = math.sin(math.pi - self.m) * self.m

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight.float(), dim=1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled logits (N x n_classes); with `labels` the margin is applied to each row's true class."""
        cosine = self.cosine(embeddings)
        if labels is None:
            return cosine * self.s
        # clamp away from 0 so that sqrt's gradient stays finite when cos theta = +-1
        sine = torch.sqrt(torch.clamp(1.0 - cosine * cosine, min=1e-7))
        phi = cosine * self.cos_m - sine * self.sin_m
        if self.easy_margin:
            phi = torch.where(cosine > 0, phi, cosine)
        else:
            phi = torch.where(cosine > self.th, phi, cosine - self.mm)
        one_hot = F.one_hot(labels.reshape(-1).long(), self.n_classes).to(torch.bool)
        return torch.where(one_hot, phi, cosine) * self.s

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.forward(embeddings, labels), labels.reshape(-1).long())

    def extra_repr(self) -> str:
        return f"{self.embedding_dim} -> {self.n_classes}, s={self.s}, m={self.m}, easy_margin={self.easy_margin}"


class CombinedLoss(nn.Module):
    """triplet_weight * triplet + arcface_weight * ArcFace cross-entropy.

    A term with weight 0 is not computed (and its module may be None). The ArcFace head's parameters are this
    module's parameters: give them to the optimiser and save them with the checkpoint.
    """

    def __init__(
        self,
        triplet_weight: float = 1.0,
        arcface_weight: float = 1.0,
        *,
        triplet: TripletLoss | None = None,
        arcface: ArcFaceHead | None = None,
    ) -> None:
        super().__init__()
        if triplet_weight < 0 or arcface_weight < 0 or triplet_weight + arcface_weight == 0:
            raise ValueError("loss weights must be >= 0 and not both 0")
        if triplet_weight > 0 and triplet is None:
            triplet = TripletLoss()
        if arcface_weight > 0 and arcface is None:
            raise ValueError("arcface_weight > 0 needs an ArcFaceHead (it knows the number of classes)")
        self.triplet_weight = float(triplet_weight)
        self.arcface_weight = float(arcface_weight)
        self.triplet = triplet if triplet_weight > 0 else None
        self.arcface = arcface if arcface_weight > 0 else None

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        total = embeddings.new_zeros((), dtype=torch.float32)
        parts: dict[str, float] = {}
        if self.triplet is not None:
            t = self.triplet(embeddings, labels)
            total = total + self.triplet_weight * t
            parts["triplet"] = float(t.detach())
            parts.update({f"triplet_{k}": v for k, v in self.triplet.last_stats.items()})
        if self.arcface is not None:
            a = self.arcface.loss(embeddings, labels)
            total = total + self.arcface_weight * a
            parts["arcface"] = float(a.detach())
        return total, parts
