"""The P x K batch sampler: P distinct identities x K images, deterministic, few-image identities."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from facerec.train.sampler import PKSampler


def make_labels() -> np.ndarray:
    # identity 0: 10 images, 1: 6, 2: 4, 3: 2 (fewer than K), 4: 1 (excluded), 5..9: 5 each
    counts = [10, 6, 4, 2, 1, 5, 5, 5, 5, 5]
    labels = np.concatenate([np.full(c, i) for i, c in enumerate(counts)])
    return np.random.default_rng(0).permutation(labels)


def test_each_batch_has_p_distinct_identities_times_k():
    labels = make_labels()
    sampler = PKSampler(labels, p=4, k=4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for batch in batches:
        assert len(batch) == 16
        ids = [labels[i] for i in batch]
        counts = Counter(ids)
        assert len(counts) == 4 and set(counts.values()) == {4}
        # an identity's K indices are consecutive in the batch
        assert [ids[j * 4] for j in range(4)] == list(dict.fromkeys(ids))


def test_epoch_length_definition():
    labels = make_labels()
    sampler = PKSampler(labels, p=4, k=4, seed=0)
    eligible = len(labels) - 1  # identity 4 (one image) is excluded
    assert sampler.n_eligible_images == eligible
    assert len(sampler) == math.ceil(eligible / 16)
    assert len(PKSampler(labels, p=4, k=4, batches_per_epoch=7)) == 7


def test_deterministic_given_seed_and_epoch():
    labels = make_labels()
    a, b = PKSampler(labels, 3, 2, seed=5), PKSampler(labels, 3, 2, seed=5)
    assert list(a) == list(b)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b)
    c = PKSampler(labels, 3, 2, seed=5)
    assert list(c) != list(a)  # epoch 0 differs from epoch 1
    assert list(PKSampler(labels, 3, 2, seed=6)) != list(c)


def test_few_image_identities():
    labels = make_labels()
    sampler = PKSampler(labels, p=4, k=4, seed=1, batches_per_epoch=50)
    assert sampler.excluded == [4]
    seen_small = 0
    for batch in sampler:
        ids = [labels[i] for i in batch]
        assert 4 not in ids
        for ident in set(ids):
            idx = [i for i in batch if labels[i] == ident]
            n_images = int((labels == ident).sum())
            if n_images >= 4:
                assert len(set(idx)) == 4  # K distinct images
            else:
                assert set(idx) == set(np.flatnonzero(labels == ident))  # all of its images, plus repeats
                seen_small += ident == 3
    assert seen_small > 0


def test_identities_visited_evenly():
    labels = make_labels()
    sampler = PKSampler(labels, p=3, k=2, seed=0, batches_per_epoch=30)
    counts = Counter(labels[b[j * 2]] for b in sampler for j in range(3))
    assert len(counts) == 9
    assert max(counts.values()) - min(counts.values()) <= 2


def test_min_images_one_keeps_singletons():
    labels = make_labels()
    sampler = PKSampler(labels, p=4, k=2, seed=0, min_images=1, batches_per_epoch=40)
    assert sampler.excluded == []
    assert any(labels[i] == 4 for b in sampler for i in b)


def test_too_few_identities():
    with pytest.raises(ValueError, match="identities"):
        PKSampler([0, 0, 1, 1, 2], p=3, k=2)
