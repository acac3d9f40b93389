"""ROC and DET plots written straight to PNG files.

Headless by construction: each function draws on its own `Figure` with an Agg canvas, imported inside the
function, so importing this module never loads pyplot or switches the process-wide matplotlib backend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from facerec.decisions.metrics import OperatingPoint, RocCurve, det_points

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# A million-impostor curve has a million points; a few hundred per axis draw the same picture.
_MAX_POINTS = 2000
_GRID = 500
_DET_TICKS = (1e-6, 1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5, 0.8, 0.95)  # spread out in probit, so labels do not overlap
_DET_TOP = 0.95
_FLOOR = 1e-7  # zero rates are drawn here, just past the lowest axis limit (their probit is -inf)

_normal = NormalDist()


def _probit(p: NDArray[np.float64]) -> NDArray[np.float64]:
    """Normal deviate of each rate, clipped to [_FLOOR, 1 - _FLOOR] so that 0 and 1 stay finite."""
    return np.array([_normal.inv_cdf(v) for v in np.clip(p, _FLOOR, 1.0 - _FLOOR)])


def _thin(
    far: NDArray[np.float64], tar: NDArray[np.float64], far_grid: NDArray[np.float64], tar_grid: NDArray[np.float64]
) -> NDArray[np.intp]:
    """Indices of the curve points where it crosses a grid along either axis (both arrays non-decreasing)."""
    if far.size <= _MAX_POINTS:
        return np.arange(far.size)
    picks = np.r_[0, far.size - 1, np.searchsorted(far, far_grid), np.searchsorted(tar, tar_grid)]
    return np.unique(np.clip(picks, 0, far.size - 1))


def _resolution(counts: list[int]) -> float:
    """The smallest non-zero rate the largest sample can show (1 / n), floored to a decade: an axis limit."""
    return max(10 * _FLOOR, 10.0 ** np.floor(np.log10(1.0 / max(counts))))


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


def _figure(title: str) -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    return fig, ax


def plot_roc(
    curves: Mapping[str, RocCurve],
    path: str | os.PathLike,
    title: str = "ROC",
    operating_points: Mapping[str, OperatingPoint] | None = None,
) -> Path:
    """TAR against FAR on a log FAR axis, where the low-FAR region that decides a deployment is readable."""
    if not curves:
        raise ValueError("no curves to plot")
    fig, ax = _figure(title)
    lo = _resolution([c.n_impostor for c in curves.values()])
    for name, roc in curves.items():
        idx = _thin(roc.far, roc.tar, np.geomspace(lo, 1.0, _GRID), np.linspace(0.0, 1.0, _GRID))
        idx = idx[roc.far[idx] > 0]  # below 1 / n_impostor nothing was measured
        ax.plot(roc.far[idx], roc.tar[idx], label=f"{name} (AUC {roc.auc:.4f})")
    for name, op in (operating_points or {}).items():
        # A resolution-limited point (FAR 0) sits on the left edge.
        ax.plot(max(op.far, lo), op.tar, "o", mec="black", label=f"{name}: FAR {op.far:.2g}, TAR {op.tar:.3f}")
    ax.set_xscale("log")
    ax.set_xlim(lo, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("FAR (false accept rate)")
    ax.set_ylabel("TAR (true accept rate)")
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_det(
    curves: Mapping[str, RocCurve],
    path: str | os.PathLike,
    title: str = "DET",
    operating_points: Mapping[str, OperatingPoint] | None = None,
) -> Path:
    """FRR against FAR on normal-deviate axes, where score distributions close to Gaussian give straight
    lines, so systems compare at a glance across both error rates."""
    if not curves:
        raise ValueError("no curves to plot")
    fig, ax = _figure(title)
    lo_far = _resolution([c.n_impostor for c in curves.values()])
    lo_frr = _resolution([c.n_genuine for c in curves.values()])
    edge = _normal.inv_cdf(min(lo_far, lo_frr))
    # Symmetric about 0.5, so the same grid serves FAR and TAR = 1 - FRR.
    rate_grid = np.array([_normal.cdf(v) for v in np.linspace(edge, -edge, _GRID)])
    for name, roc in curves.items():
        far, frr = det_points(roc)
        idx = _thin(far, roc.tar, rate_grid, rate_grid)
        ax.plot(_probit(far[idx]), _probit(frr[idx]), label=name)
    for name, op in (operating_points or {}).items():
        x, y = _probit(np.array([max(op.far, lo_far), max(op.frr, lo_frr)]))
        ax.plot(x, y, "o", mec="black", label=f"{name}: FAR {op.far:.2g}, FRR {op.frr:.3f}")
    for lo, set_ticks, set_lim in ((lo_far, ax.set_xticks, ax.set_xlim), (lo_frr, ax.set_yticks, ax.set_ylim)):
        ticks = [t for t in _DET_TICKS if t >= lo]
        set_ticks(_probit(np.array(ticks)), [f"{100 * t:g}%" for t in ticks], fontsize="small")
        set_lim(_normal.inv_cdf(lo), _normal.inv_cdf(_DET_TOP))
    ax.set_xlabel("FAR (false accept rate)")
    ax.set_ylabel("FRR (false reject rate)")
    ax.legend(loc="best", fontsize="small")
    return _save(fig, path)
