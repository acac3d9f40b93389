"""How many genuinely new people enrollment's duplicate check refuses, by gallery size: 1:1 threshold vs the
gallery-aware one (facerec.decisions.thresholds.duplicate_threshold).

    python benchmarks/duplicate_check.py --lfw ../shared/data/faces/lfw --crop-cache pack/crops

Data: LFW View 1 DevTest (people disjoint from DevTrain, where the card's thresholds were measured), one photo
per person through the facerec pipeline. A gallery of the first N people; 100 other people try to enroll;
a newcomer is refused when any enrolled person scores at or above the threshold. Several disjoint draws.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facerec.api import evaluation_pipeline
from facerec.decisions.thresholds import duplicate_threshold
from facerec.evaluation.lfw_protocol import view1_pairs
from facerec.evaluation.pairs import embed_images
from facerec.models.registry import model_card


class _NoCalibration:
    """The duplicate rule as a fresh database sees it: no stored calibration."""

    def active_calibration(self, *_args) -> None:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", type=Path, required=True)
    ap.add_argument("--model", default="mobilefacenet")
    ap.add_argument("--crop-cache", type=Path)
    ap.add_argument("--newcomers", type=int, default=100)
    ap.add_argument("--draws", type=int, default=5)
    args = ap.parse_args()
    pairs = view1_pairs(args.lfw, "test")
    paths = sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})
    embedded = embed_images(evaluation_pipeline(args.model), paths, cache_dir=args.crop_cache).embeddings
    first: dict[str, np.ndarray] = {}
    for path in sorted(embedded):
        first.setdefault(path.parent.name, embedded[path])
    people = sorted(first)
    card = model_card(args.model)
    print(f"{len(people)} LFW View 1 DevTest people, one photo each; model {card.id}; {args.draws} draws")
    print(f"{'gallery N':>9} {'1:1 threshold':>14} {'refused':>8} {'gallery-aware':>14} {'refused':>8}  rule")
    rng = np.random.default_rng(0)
    for size in (97, 300, len(people) - args.newcomers):
        old, new = [], []
        point = duplicate_threshold(_NoCalibration(), card, size)
        for _ in range(args.draws):
            order = rng.permutation(len(people))
            gallery = np.stack([first[people[i]] for i in order[:size]])
            newcomers = np.stack([first[people[i]] for i in order[size:size + args.newcomers]])
            best = (newcomers @ gallery.T).max(axis=1)
            old.append(int((best >= card.default_threshold).sum()))
            new.append(int((best >= point.threshold).sum()))
        print(f"{size:9d} {card.default_threshold:14.4f} {np.mean(old):5.1f}/{args.newcomers} "
              f"{point.threshold:14.4f} {np.mean(new):5.1f}/{args.newcomers}  {point.source}")


if __name__ == "__main__":
    main()
