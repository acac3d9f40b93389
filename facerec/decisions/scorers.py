"""Pair scorers: how two templates become one similarity score (higher = more likely the same person).

Every scorer takes two batches of templates, `a` and `b` (N x D each; a 1 x D side is broadcast against the
other), and returns N scores. A pair is accepted when `score >= threshold`, as everywhere in
`facerec.decisions`; a threshold belongs to one (model, scorer) pair and never carries over to another.

- `CosineScorer` ("cosine"): the inner product of the unit templates every facerec model produces.
- `LearnedScorer` ("learned"): face verification as binary classification. The two faces went through the
  same (shared-weight, "Siamese") embedding network; a small classifier trained on genuine/impostor pairs
  reads a symmetric pair feature (see `pair_features`) and its **logit** is the score:
  `logit = log P(same | pair) / P(different | pair)` under the class balance it was trained with.
  The logit, not the probability, because it is an unbounded, strictly monotone map of the same decision
  (so ROC, EER and FAR thresholds are identical) that keeps its resolution where it matters: a FAR-1e-4
  threshold can sit at a logit of 20-40, where the probability rounds to 1.0 in float32/float64 and
  distinct pairs would tie. `LearnedScorer.probability` gives sigmoid(logit) for display.
  The weights live in `facerec/weights/verifier_<embedding model>/` (`verifier.json` + a plain-numpy
  `.npz`), are loaded lazily, sha256-checked, and run here in numpy: no scikit-learn at run time.
- `ChiSquareScorer` ("chi2"): score = -chi-square distance between histograms, for the LBP model, whose
  templates are Hellinger maps `t = sqrt(h)` of L1-normalised (cell-weighted) histograms `h`; squaring the
  template gives `h` back exactly (up to float32 rounding), so the chi-square is exact.

Pair features for the learned verifier (both symmetric in a and b, so score(a, b) == score(b, a)):

- "absdiff": |a - b|, element-wise.
- "chi2": the chi-square terms (p - q)^2 / (p + q) of non-negative vectors. Embeddings are signed, so each is
  first split into its positive and negative parts, p = [relu(a), relu(-a)] (2D values, all >= 0; the
  "sign split"), and the terms are taken on those (0/0 := 0). Why the sign split rather than a shift
  a + c with c >= max|a|: the shift makes the denominator 2c + a + b, nearly constant for any usable c, so
  the feature degenerates into a rescaled squared difference and depends on an arbitrary c; the split is
  parameter-free, keeps chi-square's meaning (difference relative to the mass the two share, on each sign
  separately), and like |a - b| it is 1-homogeneous (scaling both embeddings scales it). Where a and b
  have the same sign in a dimension the term is (a - b)^2 / (a + b) on that sign's half and 0 on the
  other; where they differ it is |a| on one half and |b| on the other (summing to |a - b|).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from facerec.errors import ModelError
from facerec.decisions.thresholds import DecisionThreshold, model_default
from facerec.models.base import WEIGHTS_ROOT, ModelCard, read_card

SCORERS = ("cosine", "learned", "chi2")
VERIFIER_FILE = "verifier.json"
VERIFIER_PREFIX = "verifier_"


@runtime_checkable
class Scorer(Protocol):
    """Similarity of template pairs: `score(a, b)` for N x D arrays gives N scores, higher = same person."""

    name: str

    def score(self, a: np.ndarray, b: np.ndarray) -> np.ndarray: ...


def _pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as float64 N x D arrays (a single template, 1-D or 1 x D, is broadcast to the other)."""
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"templates must be N x D with equal D, got {a.shape} and {b.shape}")
    if len(a) != len(b):
        if len(a) == 1:
            a = np.broadcast_to(a, b.shape)
        elif len(b) == 1:
            b = np.broadcast_to(b, a.shape)
        else:
            raise ValueError(f"{len(a)} templates cannot be paired with {len(b)}")
    return a, b


# ------------------------------------------------------------------------------------------ cosine
class CosineScorer:
    """Cosine similarity (the inner product of the unit templates facerec stores; normalised here anyway)."""

    name = "cosine"

    def score(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = _pairs(a, b)
        norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        return np.einsum("nd,nd->n", a, b) / norms


# -------------------------------------------------------------------------------------- chi-square
def chi_square_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """sum_i (p_i - q_i)^2 / (p_i + q_i) over the last axis, for non-negative p, q (terms with p_i + q_i = 0
    count 0). No factor 1/2 (Ahonen et al. 2006's form); for L1-normalised histograms it lies in [0, 2]."""
    p, q = _pairs(p, q)
    return chi_square_terms(p, q).sum(axis=1)


def chi_square_terms(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(p - q)^2 / (p + q) element-wise, 0 where p + q == 0."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    den = p + q
    out = np.zeros(np.broadcast_shapes(p.shape, q.shape))
    np.divide((p - q) ** 2, den, out=out, where=den > 0)
    return out


class ChiSquareScorer:
    """-chi-square between the histograms behind Hellinger-mapped templates (t = sqrt(h), so h = t^2).

    For the LBP model: its unit templates make the index's inner product the Bhattacharyya coefficient
    sum_i sqrt(h_i g_i); this scorer recovers h and g and returns the exact -chi-square(h, g)."""

    name = "chi2"

    def score(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = _pairs(a, b)
        return -chi_square_terms(a * a, b * b).sum(axis=1)


# --------------------------------------------------------------------------- learned-verifier features
def sign_split(x: np.ndarray) -> np.ndarray:
    """[relu(x), relu(-x)] along the last axis: a non-negative 2D-vector holding x exactly."""
    x = np.asarray(x, dtype=np.float64)
    return np.concatenate([np.maximum(x, 0.0), np.maximum(-x, 0.0)], axis=-1)


def abs_diff_feature(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| (N x D)."""
    a, b = _pairs(a, b)
    return np.abs(a - b)


def chi2_feature(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Chi-square terms of the sign-split embeddings (N x 2D): (p - q)^2 / (p + q), p = [relu(a), relu(-a)]."""
    a, b = _pairs(a, b)
    return chi_square_terms(sign_split(a), sign_split(b))


PAIR_FEATURES = {"absdiff": abs_diff_feature, "chi2": chi2_feature}


def pair_features(a: np.ndarray, b: np.ndarray, features: Sequence[str] = ("absdiff",)) -> np.ndarray:
    """The named pair features side by side (N x F), in the order given."""
    unknown = [f for f in features if f not in PAIR_FEATURES]
    if unknown or not features:
        raise ValueError(f"pair features must be some of {sorted(PAIR_FEATURES)}, got {list(features)}")
    return np.concatenate([PAIR_FEATURES[f](a, b) for f in features], axis=1)


# ------------------------------------------------------------------------------------- forward pass
ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "tanh": np.tanh,
    "logistic": lambda x: 0.5 * (1.0 + np.tanh(0.5 * x)),
    "identity": lambda x: x,
}


def classifier_logit(x: np.ndarray, mean: np.ndarray, scale: np.ndarray, weights: Sequence[np.ndarray],
                     biases: Sequence[np.ndarray], activation: str = "relu") -> np.ndarray:
    """The logit of a standardised linear model (one layer) or MLP (hidden layers use `activation`, the
    output layer is linear with one unit): what sklearn's LogisticRegression.decision_function or an
    MLPClassifier's pre-sigmoid output computes on (x - mean) / scale."""
    if len(weights) != len(biases) or not weights:
        raise ValueError("need one bias per weight matrix, at least one layer")
    act = ACTIVATIONS[activation]
    h = (np.asarray(x, dtype=np.float64) - mean) / scale
    for n, (w, b) in enumerate(zip(weights, biases)):
        h = h @ w + b
        if n < len(weights) - 1:
            h = act(h)
    return h.reshape(len(h), -1)[:, 0]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verifier_folder(model_id: str) -> Path:
    """`facerec/weights/<model_id>/` if it holds a verifier.json, else `facerec/weights/verifier_<model_id>/`."""
    for name in (model_id, f"{VERIFIER_PREFIX}{model_id}"):
        folder = WEIGHTS_ROOT / name
        if (folder / VERIFIER_FILE).is_file():
            return folder
    known = sorted(p.name for p in WEIGHTS_ROOT.iterdir() if (p / VERIFIER_FILE).is_file())
    raise ModelError(f"no learned verifier for {model_id!r} (looked for {VERIFIER_PREFIX}{model_id}/{VERIFIER_FILE}; "
                     f"available: {', '.join(known) or 'none'})")


class LearnedScorer:
    """A trained pair classifier over embeddings of one model; `score` is its logit (see module doc).

    `load` reads only `verifier.json`; the coefficients are read (and their sha256 checked) on first use.
    """

    name = "learned"

    def __init__(self, folder: Path, card: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.card = card
        self.id: str = card["id"]
        self.embedding_model: str = card["embedding_model"]
        self.features: tuple[str, ...] = tuple(card["features"])
        self.classifier: str = card["classifier"]
        self.default_threshold = float(card["default_threshold"])
        self._lock = threading.Lock()
        self._params: dict[str, Any] | None = None

    @classmethod
    def load(cls, model_id: str) -> "LearnedScorer":
        """The verifier of embedding model `model_id` (folder `verifier_<model_id>`), or a verifier folder
        named directly. A verifier trained on another model's embeddings (or other weights) is refused."""
        folder = verifier_folder(model_id)
        card = read_card(folder / VERIFIER_FILE, "verifier")
        embedding_model = card.get("embedding_model", "")
        if folder.name != model_id and embedding_model != model_id:
            raise ModelError(f"{folder.name} scores {embedding_model!r} embeddings, not {model_id!r}")
        model_card = WEIGHTS_ROOT / embedding_model / "model.json"
        if model_card.is_file():
            sha = json.loads(model_card.read_text()).get("weights_sha256")
            if sha != card.get("embedding_weights_sha256"):
                raise ModelError(f"{folder.name} was trained on {embedding_model} weights with sha256 "
                                 f"{card.get('embedding_weights_sha256')}, the model now has {sha}")
        return cls(folder, card)

    def _ensure_loaded(self) -> dict[str, Any]:
        with self._lock:
            if self._params is None:
                path = self.folder / self.card["weights_file"]
                digest = _sha256(path)
                if digest != self.card["weights_sha256"]:
                    raise ModelError(f"{path}: sha256 {digest} differs from {VERIFIER_FILE}'s "
                                     f"{self.card['weights_sha256']}")
                with np.load(path, allow_pickle=False) as npz:
                    n_layers = int(npz["n_layers"].reshape(-1)[0])
                    self._params = {
                        "mean": npz["mean"].astype(np.float64), "scale": npz["scale"].astype(np.float64),
                        "weights": [npz[f"W{i}"].astype(np.float64) for i in range(n_layers)],
                        "biases": [npz[f"b{i}"].astype(np.float64) for i in range(n_layers)],
                    }
            return self._params

    def features_of(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return pair_features(a, b, self.features)

    def score(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The classifier's logit for each pair (higher = more likely the same person)."""
        p = self._ensure_loaded()
        x = self.features_of(a, b)
        if x.shape[1] != len(p["mean"]):
            raise ModelError(f"{self.id}: {x.shape[1]} pair features, the classifier expects {len(p['mean'])} "
                             f"(embeddings of {self.embedding_model} expected)")
        return classifier_logit(x, p["mean"], p["scale"], p["weights"], p["biases"],
                                self.card.get("activation", "relu"))

    def probability(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """P(same) under the training class balance: sigmoid(logit)."""
        return sigmoid(self.score(a, b))


def score_pairs(scorer: Scorer, embeddings: np.ndarray, i: np.ndarray, j: np.ndarray,
                chunk: int = 100_000) -> np.ndarray:
    """scorer.score(embeddings[i], embeddings[j]) in chunks: pair features are float64 N x F, so millions of
    calibration pairs at once would need gigabytes."""
    i, j = np.asarray(i).ravel(), np.asarray(j).ravel()
    if len(i) != len(j):
        raise ValueError(f"{len(i)} left and {len(j)} right indices")
    out = np.empty(len(i))
    for s in range(0, len(i), chunk):
        out[s:s + chunk] = scorer.score(embeddings[i[s:s + chunk]], embeddings[j[s:s + chunk]])
    return out


def default_threshold(scorer: Scorer, card: ModelCard) -> DecisionThreshold:
    """The threshold in force for `scorer` on model `card` when no calibration is stored: the model card's
    own (cosine), the verifier's (learned: FAR 1e-3 on its validation pairs), or the card's
    `extra.chi2_default_threshold` (chi2). Thresholds never carry over between scorers."""
    if scorer.name == "cosine":
        return model_default(card)
    if isinstance(scorer, LearnedScorer):
        return DecisionThreshold(
            threshold=scorer.default_threshold,
            source=f"default of verifier {scorer.id}: {scorer.card.get('threshold_provenance', '')}",
            target_far=scorer.card.get("default_threshold_far"),
            promised_far=scorer.card.get("default_threshold_far"),
        )
    if scorer.name == "chi2" and "chi2_default_threshold" in card.extra:
        return DecisionThreshold(
            threshold=float(card.extra["chi2_default_threshold"]),
            source=f"default of model {card.id} for -chi-square: FAR {card.extra.get('default_threshold_far')} on "
                   "its validation pairs",
            target_far=card.extra.get("default_threshold_far"),
            promised_far=card.extra.get("default_threshold_far"),
        )
    raise ModelError(f"model {card.id} declares no default threshold for the {scorer.name!r} scorer: calibrate first")


_cache_lock = threading.Lock()
_learned: dict[str, LearnedScorer] = {}


def get_scorer(name: str = "cosine", model_id: str | None = None) -> Scorer:
    """"cosine" | "learned" (the verifier of embedding model `model_id`) | "chi2" (Hellinger templates)."""
    if name == "cosine":
        return CosineScorer()
    if name == "chi2":
        return ChiSquareScorer()
    if name == "learned":
        if not model_id:
            raise ModelError("the learned scorer needs the embedding model id")
        with _cache_lock:
            if model_id not in _learned:
                _learned[model_id] = LearnedScorer.load(model_id)
            return _learned[model_id]
    raise ModelError(f"unknown scorer {name!r} (known: {', '.join(SCORERS)})")
