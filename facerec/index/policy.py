"""Which index for which gallery: kinds, faiss factory strings and search parameters from data/index.json.

`auto` picks by gallery size and hardware (the table under "auto", tuned by benchmarks/search_scale.py);
any other kind is an override. The chosen plan is recorded in the index manifest, so a loaded index
searches with the parameters it was built for even after the data file changes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from facerec.errors import SearchIndexError

PARAMS_FILE = Path(__file__).resolve().parent.parent / "data" / "index.json"
INDEX_KINDS = ("auto", "flat", "hnsw", "ivf", "ivfsq8", "ivfpq", "pcahnsw", "pcaivfsq8", "torch", "torchivf")


@lru_cache(maxsize=1)
def index_params() -> dict:
    return json.loads(PARAMS_FILE.read_text())


@dataclass(frozen=True)
class Plan:
    """A concrete index: kind, faiss factory string, search parameters and exact re-ranking depth."""

    kind: str
    factory: str
    search: dict = field(default_factory=dict)  # nprobe / efSearch
    rerank: int = 1  # shortlist = k * rerank candidates re-scored exactly (1: codes are exact)
    nlist: int = 0
    project: float = 0.0  # >0: search in the templates' principal subspace holding this share of their energy
    store: str = "float32"  # dtype of the re-ranking vectors on disk (float16 halves them: scores to ~1e-3)

    @property
    def trained(self) -> bool:
        return self.nlist > 0

    def to_dict(self) -> dict:
        return {"kind": self.kind, "factory": self.factory, "search": dict(self.search), "rerank": self.rerank,
                "nlist": self.nlist, "project": self.project, "store": self.store}

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        return cls(d["kind"], d["factory"], dict(d.get("search", {})), int(d.get("rerank", 1)), int(d.get("nlist", 0)),
                   float(d.get("project", 0.0)), d.get("store", "float32"))


def auto_kind(n: int, gpus: int = 0) -> tuple[str, dict]:
    """The kind (and tuned search parameters) the auto table gives a gallery of `n` on this hardware."""
    for row in index_params()["auto"]["gpu" if gpus > 0 else "cpu"]:
        if row["below"] is None or n < row["below"]:
            return row["kind"], {k: v for k, v in row.items() if k not in ("below", "kind")}
    raise SearchIndexError("data/index.json: the auto table has no open-ended last row")


def make_plan(kind: str, n: int, dim: int, gpus: int = 0) -> Plan:
    """Resolve `kind` ('auto' or an explicit kind) for a gallery of `n` vectors of `dim`."""
    if kind not in INDEX_KINDS:
        raise SearchIndexError(f"unknown index kind {kind!r} (choose from {', '.join(INDEX_KINDS)})")
    tuned: dict = {}
    if kind == "auto":
        kind, tuned = auto_kind(n, gpus)
    p = {**index_params()["kinds"][kind], **tuned}
    rerank = 1 if p.get("exact", True) else int(p.get("rerank", 4))
    extra = {"project": float(p.get("project_energy", 0.0)), "store": p.get("store", "float32")}
    if "M" in p:  # an HNSW graph
        return Plan(kind, p["factory"].format(M=p["M"]),
                    {"efSearch": p["efSearch"], "efConstruction": p["efConstruction"]}, rerank, **extra)
    if "nlist_per_sqrt_n" in p:  # inverted lists
        train = index_params()["train"]
        nlist = int(min(p["max_nlist"], max(p["min_nlist"], p["nlist_per_sqrt_n"] * math.sqrt(max(n, 1)))))
        nlist = min(nlist, max(1, n // train["min_per_list"]))
        if nlist < p["min_nlist"]:  # too few vectors to train: exact search until the gallery grows
            return make_plan("flat", n, dim, gpus)
        m = max(1, dim // p.get("pq_dims_per_code", 4))
        while dim % m:
            m -= 1
        search = {"nprobe": min(p["nprobe"], nlist),
                  **{k: p[k] for k in ("shortlist", "batch_exhaustive", "quantizer_efSearch", "kmeans_niter") if k in p}}
        return Plan(kind, p["factory"].format(nlist=nlist, m=m), search, rerank, nlist, **extra)
    return Plan(kind, p["factory"], {k: p[k] for k in ("shortlist",) if k in p}, rerank)


def needs_retrain(plan: Plan, trained_rows: int, n: int, requested: str, dim: int, gpus: int = 0) -> bool:
    """Rebuild when the gallery outgrew its training set by the stated ratio, or its size now calls for
    another kind (a small IVF gallery starts flat and becomes IVF once there is enough to train on)."""
    if make_plan(requested, n, dim, gpus).kind != plan.kind:
        return True
    return plan.trained and n > index_params()["train"]["retrain_growth"] * max(trained_rows, 1)


def train_sample_size(nlist: int) -> int:
    return nlist * index_params()["train"]["max_per_list"]
