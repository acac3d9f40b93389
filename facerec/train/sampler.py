"""P x K batches: P distinct identities, K images each, for online triplet mining.

- Identities with fewer than `min_images` images (default 2: a triplet needs a positive) never appear.
- An identity with fewer than K images contributes all of its images once plus random repeats to make K;
  the repeats differ after augmentation ("augmented duplicates"). With >= K images, K distinct images are drawn.
- Identities are visited in shuffled rounds (every eligible identity once per round, then a new shuffle), so
  all identities are seen about equally often; no identity appears twice in a batch.
- Epoch length: `len(sampler)` batches, by default ceil(number of eligible images / (P * K)), i.e. one epoch
  shows about as many samples as there are eligible images (but not each image exactly once).
- Deterministic: the batches of epoch e depend only on (seed, e); call `set_epoch(e)` before iterating
  (resuming at epoch e reproduces the same batches).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class PKSampler(Sampler[list[int]]):
    """A batch sampler (pass as `batch_sampler=` to a DataLoader, or iterate it directly)."""

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        p: int,
        k: int,
        seed: int = 0,
        min_images: int = 2,
        batches_per_epoch: int | None = None,
    ) -> None:
        labels = np.asarray(labels).reshape(-1)
        if p < 1 or k < 1:
            raise ValueError(f"P and K must be >= 1, got P={p}, K={k}")
        self.p, self.k, self.seed = int(p), int(k), int(seed)
        self.min_images = int(min_images)
        ids, inverse = np.unique(labels, return_inverse=True)
        groups = [np.flatnonzero(inverse == i) for i in range(len(ids))]
        keep = [i for i, g in enumerate(groups) if len(g) >= self.min_images]
        self.identities = ids[keep]
        self.groups = [groups[i] for i in keep]
        self.excluded = [ids[i].item() for i, g in enumerate(groups) if len(g) < self.min_images]
        if len(self.groups) < self.p:
            raise ValueError(
                f"only {len(self.groups)} identities have >= {self.min_images} images; a batch needs P={self.p}"
            )
        self.n_eligible_images = int(sum(len(g) for g in self.groups))
        self.batches_per_epoch = (
            int(batches_per_epoch)
            if batches_per_epoch
            else max(1, math.ceil(self.n_eligible_images / (self.p * self.k)))
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        n_ids = len(self.groups)
        queue: list[int] = []
        for _ in range(self.batches_per_epoch):
            chosen: list[int] = []
            deferred: list[int] = []
            while len(chosen) < self.p:
                if not queue:
                    queue = rng.permutation(n_ids).tolist()
                ident = queue.pop(0)
                (deferred if ident in chosen else chosen).append(ident)
            queue = deferred + queue
            batch: list[int] = []
            for ident in chosen:
                batch.extend(self._draw(self.groups[ident], rng))
            yield batch

    def _draw(self, group: np.ndarray, rng: np.random.Generator) -> list[int]:
        n = len(group)
        if n >= self.k:
            pick = rng.choice(n, self.k, replace=False)
        else:
            pick = np.r_[rng.permutation(n), rng.choice(n, self.k - n, replace=True)]
        return group[pick].tolist()
