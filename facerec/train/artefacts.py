"""Shared helpers of the textbook trainers (`facerec.train.classical`, `facerec.train.verifier`): the
identity-disjoint split of the crop cache, validation numbers, and byte-stable weight files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from facerec.decisions import metrics
from facerec.train.data import Split, split_identities, verification_pairs

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO / ".cache" / "crops" / "dlib_resnet29"
WEIGHTS_ROOT = REPO / "facerec" / "weights"
CELEBA_TERMS = ("CelebA (Liu, Luo, Wang & Tang, ICCV 2015, The Chinese University of Hong Kong): non-commercial "
                "research purposes only; a model trained on it inherits that restriction.")


def write_licence(folder: Path, what: str, command: str) -> None:
    """The folder's LICENSE: the terms these fitted parameters inherit from their training data."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / "LICENSE").write_text(
        f"{what}\n\nFitted by the facerec project on aligned crops of the celeba_wild training photos with:\n"
        f"    {command}\n\n"
        "These parameters are derived from CelebA photos and inherit CelebA's terms:\n"
        "    Ziwei Liu, Ping Luo, Xiaogang Wang, Xiaoou Tang. Deep Learning Face Attributes in the Wild. ICCV 2015.\n"
        "    The Chinese University of Hong Kong. Non-commercial research purposes only.\n"
        "The people pictured did not consent to any other use. No LFW image was used in fitting.\n")


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def cache_split(meta: dict[str, Any], labels: np.ndarray, val_fraction: float, seed: int) -> Split:
    """Identity-disjoint train/validation split of a crop cache, LFW-overlap identities left out of both."""
    return split_identities(labels, meta["identities"], val_fraction=val_fraction, seed=seed,
                            exclude=meta.get("lfw_overlap", []))


def cache_description(meta: dict[str, Any], split: Split, val_fraction: float, seed: int) -> str:
    return (f"{meta.get('source_name', 'crop cache')} ({meta.get('source', '?')}): {meta['n_images']} aligned "
            f"crops of {len(meta['identities'])} identities (MTCNN + the {meta.get('model_id', '?')} template, "
            f"facerec.train.data.build_crop_cache); LFW-overlap identities excluded "
            f"({', '.join(split.excluded_identities) or 'none'}); identity-disjoint split "
            f"(facerec.train.data.split_identities, val_fraction {val_fraction}, seed {seed}): train "
            f"{len(split.train_idx)} crops / {len(split.train_identities)} identities, validation "
            f"{len(split.val_idx)} crops / {len(split.val_identities)} identities. No LFW image was used.")


def validation_pairs(val_labels: np.ndarray, n_impostors: int = 50_000, seed: int = 0):
    """(i, j, genuine) of the validation split: every genuine pair plus `n_impostors` impostor pairs."""
    return verification_pairs(val_labels, n_impostors=n_impostors, seed=seed)


def score_report(scores: np.ndarray, genuine: np.ndarray, far: float = 1e-3) -> dict[str, Any]:
    """ROC AUC, EER (+ threshold), best accuracy and the threshold/TAR at `far` of validation scores."""
    labels = np.asarray(genuine, dtype=np.int8)
    eer_value, eer_threshold = metrics.eer(scores, labels)
    point = metrics.threshold_at_far(scores, labels, far)
    return {
        "pairs": int(labels.size), "genuine": int(labels.sum()), "impostor": int(labels.size - labels.sum()),
        "roc_auc": round(float(metrics.roc_curve(scores, labels).auc), 5),
        "eer": round(float(eer_value), 5), "eer_threshold": float(eer_threshold),
        "far_target": far, "threshold_at_far": float(point.threshold), "far": float(point.far),
        "tar_at_far": round(float(point.tar), 5),
    }


