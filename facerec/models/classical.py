"""The textbook face models before deep learning, as facerec embedding models on the dlib crops.

All three read the aligned 150 x 150 RGB crop of the dlib template (so one alignment serves every model),
convert it to grey (ITU-R BT.601 luma, rounded to uint8), cut the face box the card names and resize it
(area interpolation) to the card's size; what follows differs:

- Eigenfaces (Turk & Pentland 1991): the pixels (optionally histogram-equalised, then standardised per image
  to zero mean and unit variance: a crude illumination normalisation) minus the training mean, projected on
  the leading principal components of the training faces. Optionally whitened (each component divided by
  its standard deviation), which makes the cosine a Mahalanobis cosine; the card says which.
- Fisherfaces (Belhumeur, Hespanha & Kriegman 1997): the same pixels through PCA (to at most `pca_dims`, so
  the within-class scatter is not singular), then LDA (the directions maximising between-identity over
  within-identity scatter). The two projections are stored as one D x k matrix.
- LBP histograms (Ahonen, Hadid & Pietikainen 2006): uniform local binary patterns (scikit-image's
  `local_binary_pattern(..., method="uniform")`) on a grid of cells, one histogram per cell, each
  L1-normalised, weighted by a per-cell weight w_c (learned on the training photos, mean 1) and divided by
  sum(w): the whole vector h sums to 1. The comparison the method calls for is the chi-square distance;
  facerec's index compares unit vectors by inner product, so the template is the Hellinger map sqrt(h),
  which is unit-norm by construction. Its inner product is the Bhattacharyya coefficient sum sqrt(h g), a
  chi-square-like similarity: per bin (p - q)^2 / (p + q) = (sqrt p - sqrt q)^2 (sqrt p + sqrt q)^2 / (p + q)
  and the last factor lies in [1, 2], so chi-square / 4 <= 1 - BC <= chi-square / 2 (the two rank pairs
  alike, not identically); `facerec.decisions.scorers.ChiSquareScorer` squares the
  templates back into h and g and scores -chi-square(h, g) exactly (weighted chi-square, because
  chi-square is 1-homogeneous: sum_c w_c chi2(h_c, g_c) = chi2 of the weighted histograms).

Eigenfaces and Fisherfaces templates are compared by cosine (the index's inner product of unit vectors).
Weights are small `.npz` files of plain arrays (`allow_pickle=False`), sha256-checked on first use; run time
needs numpy, OpenCV (resize, equalisation) and, for LBP, scikit-image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facerec.models.base import EmbeddingModel

LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601


# ------------------------------------------------------------------------------------- preprocessing
def grey_faces(crops: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int],
               equalize: bool = False) -> np.ndarray:
    """uint8 N x h x w grey faces: BT.601 luma of the RGB crops, box (x0, y0, x1, y1) cut out, resized to
    size (w, h) with area interpolation (plain cut when the size already matches), optionally equalised."""
    import cv2

    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    x0, y0, x1, y1 = (int(v) for v in box)
    w, h = (int(v) for v in size)
    grey = np.rint(crops[:, y0:y1, x0:x1, :3].astype(np.float32) @ LUMA.astype(np.float32))
    grey = np.clip(grey, 0, 255).astype(np.uint8)
    out = np.empty((len(grey), h, w), np.uint8)
    for i, g in enumerate(grey):
        g = g if g.shape == (h, w) else cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA)
        out[i] = cv2.equalizeHist(g) if equalize else g
    return out


def pixel_vectors(grey: np.ndarray, photometric: str = "zscore") -> np.ndarray:
    """N x (h*w) float32 pixel vectors in [0, 1], standardised per image when `photometric == "zscore"`."""
    x = np.asarray(grey, dtype=np.float32).reshape(len(grey), -1) / 255.0
    if photometric == "zscore":
        x = (x - x.mean(axis=1, keepdims=True)) / np.maximum(x.std(axis=1, keepdims=True), 1e-6)
    elif photometric != "none":
        raise ValueError(f"photometric must be 'zscore' or 'none', got {photometric!r}")
    return x


def face_pixels(crops: np.ndarray, norm: dict[str, Any]) -> np.ndarray:
    """The pixel vectors a card's `normalisation` describes (Eigenfaces and Fisherfaces input)."""
    grey = grey_faces(crops, norm["box"], norm["size"], bool(norm.get("equalize", False)))
    return pixel_vectors(grey, norm.get("photometric", "zscore"))


def lbp_bins(points: int, method: str) -> int:
    """Number of distinct codes scikit-image's `local_binary_pattern` gives for `method`."""
    if method == "uniform":
        return points + 2
    if method == "nri_uniform":
        return points * (points - 1) + 3
    if method in ("default", "ror"):
        return 2**points
    raise ValueError(f"unsupported LBP method {method!r}")


def cell_edges(length: int, cells: int) -> np.ndarray:
    """Boundaries of `cells` near-equal cells along an axis of `length` pixels."""
    return np.rint(np.linspace(0, length, cells + 1)).astype(int)


def lbp_cell_histograms(grey: np.ndarray, points: int, radius: float, method: str,
                        grid: tuple[int, int]) -> np.ndarray:
    """N x rows x cols x bins: per-cell histograms of the LBP codes, each L1-normalised (a cell sums to 1).

    `grid` is (cols, rows); cells are near-equal rectangles covering the whole face image."""
    from skimage.feature import local_binary_pattern

    grey = np.asarray(grey)
    if grey.ndim == 2:
        grey = grey[None]
    cols, rows = (int(v) for v in grid)
    bins = lbp_bins(points, method)
    ys, xs = cell_edges(grey.shape[1], rows), cell_edges(grey.shape[2], cols)
    # Cell index of every pixel, so one bincount per image does all cells.
    cell_of = (np.searchsorted(ys, np.arange(grey.shape[1]), side="right") - 1)[:, None] * cols \
        + (np.searchsorted(xs, np.arange(grey.shape[2]), side="right") - 1)[None, :]
    out = np.empty((len(grey), rows * cols, bins))
    for i, g in enumerate(grey):
        codes = local_binary_pattern(g, points, radius, method=method).astype(np.int64)
        counts = np.bincount((cell_of * bins + codes).ravel(), minlength=rows * cols * bins)
        out[i] = counts.reshape(rows * cols, bins)
    out /= out.sum(axis=2, keepdims=True)
    return out.reshape(len(grey), rows, cols, bins)


def weighted_histograms(cell_hists: np.ndarray, cell_weights: np.ndarray) -> np.ndarray:
    """N x (rows*cols*bins) histogram h summing to 1: cell histograms times w_c / sum(w)."""
    w = np.asarray(cell_weights, dtype=np.float64)
    h = cell_hists * (w / w.sum())[None, :, :, None]
    return h.reshape(len(h), -1)


# ---------------------------------------------------------------------------------------- models
class _NpzModel(EmbeddingModel):
    """A model whose weights are a small npz of plain arrays (sha256-checked by `ensure_loaded`)."""

    def _read_weights(self) -> dict[str, np.ndarray]:
        with np.load(self.weights_path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}


class LinearSubspaceEmbedder(_NpzModel):
    """Pixels -> ((x - mean) @ components.T - offset) * scale: the runtime of Eigenfaces and Fisherfaces.

    Weights: `mean` (D,), `components` (k x D; float16 to keep the file small), `scale` (k,), and optionally
    `offset` (k,; zero when absent)."""

    def _load(self) -> None:
        w = self._read_weights()
        self.mean = w["mean"].astype(np.float32)
        self.components = w["components"].astype(np.float32)
        self.scale = w["scale"].astype(np.float32)
        self.offset = w["offset"].astype(np.float32) if "offset" in w else np.zeros_like(self.scale)
        if self.components.shape[0] != self.embedding_dim:
            raise ValueError(f"{self.id}: {self.components.shape[0]} components, model.json says {self.embedding_dim}")

    def pixels(self, crops: np.ndarray) -> np.ndarray:
        return face_pixels(crops, self.card.normalisation)

    def _embed(self, crops: np.ndarray) -> np.ndarray:
        return ((self.pixels(crops) - self.mean) @ self.components.T - self.offset) * self.scale


class EigenfacesEmbedder(LinearSubspaceEmbedder):
    """Eigenfaces: `components` are the orthonormal principal axes, largest variance first."""

    def reconstruct(self, crops: np.ndarray, n_components: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(pixel vectors, their reconstruction from the first `n_components` eigenfaces)."""
        self.ensure_loaded()
        k = self.embedding_dim if n_components is None else int(n_components)
        x = self.pixels(np.asarray(crops))
        basis = self.components[:k]
        return x, (x - self.mean) @ basis.T @ basis + self.mean


class FisherfacesEmbedder(LinearSubspaceEmbedder):
    """Fisherfaces: `components` is (PCA then LDA) as one k x D matrix; scale is 1."""


class LBPEmbedder(_NpzModel):
    """Hellinger-mapped, cell-weighted uniform-LBP histograms (see the module doc).

    Card `extra.lbp`: points, radius, method, grid (cols, rows). Weights: `cell_weights` (rows x cols)."""

    def _load(self) -> None:
        w = self._read_weights()
        self.cell_weights = w["cell_weights"].astype(np.float64)
        lbp = self.card.extra["lbp"]
        self.points, self.radius, self.method = int(lbp["points"]), float(lbp["radius"]), str(lbp["method"])
        self.grid = (int(lbp["grid"][0]), int(lbp["grid"][1]))
        if self.cell_weights.shape != (self.grid[1], self.grid[0]):
            raise ValueError(f"{self.id}: cell weights {self.cell_weights.shape} do not fit grid {self.grid}")
        dim = self.grid[0] * self.grid[1] * lbp_bins(self.points, self.method)
        if dim != self.embedding_dim:
            raise ValueError(f"{self.id}: LBP layout gives {dim} values, model.json says {self.embedding_dim}")

    def grey(self, crops: np.ndarray) -> np.ndarray:
        norm = self.card.normalisation
        return grey_faces(crops, norm["box"], norm["size"], bool(norm.get("equalize", False)))

    def cell_histograms(self, crops: np.ndarray) -> np.ndarray:
        """N x rows x cols x bins, each cell L1-normalised (before the cell weights)."""
        self.ensure_loaded()
        return lbp_cell_histograms(self.grey(np.asarray(crops)), self.points, self.radius, self.method, self.grid)

    def histograms(self, crops: np.ndarray) -> np.ndarray:
        """The weighted histogram h (N x D, each row sums to 1) whose square root is the template."""
        return weighted_histograms(self.cell_histograms(crops), self.cell_weights)

    def _embed(self, crops: np.ndarray) -> np.ndarray:
        return np.sqrt(self.histograms(crops)).astype(np.float32)
