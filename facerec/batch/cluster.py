"""Global clustering of faces under constraints, independent of scan order.

Why not the photo libraries' rule (a face joins the person of its first neighbour within a distance, in scan
order): its answer depends on the order photos arrive, it chains siblings together through one look-alike, and
it happily puts two faces of one photo into one person. Here:

1. Faces are put in a canonical order (photo SHA-256, face index): nothing below depends on scan order.
2. A FAISS k-NN graph over all faces (exact inner product); an edge joins two faces whose similarity is at
   least the merge threshold (the only pairs that can start a merge).
3. Average linkage over that graph: the pair of connected clusters with the highest *exact* average
   similarity (sum vectors: mean of all |A|x|B| cosines in O(d)) is merged, while it is at least the threshold.
   Ties are broken by the clusters' canonical first members. With a `pair_threshold` the bar depends on how
   many comparisons a merge rests on: two single faces need `pair_threshold` (in a large collection one face
   meets many strangers, so one comparison must be strict), two groups need
   threshold + (pair_threshold - threshold) / sqrt(|A| x |B|) (the mean of many comparisons is steadier).
4. Constraints: faces the user named (one name) or linked ("must") start in one cluster; two clusters never
   merge when that would put two faces of one photo together, two different user names together, a "cannot"
   pair together, or a face with a name the user said it is not ("not this person").

Cluster ids are the smallest face id of each cluster: stable across re-clustering when membership is.
No torch here.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_NEIGHBOURS = 30


@dataclass(frozen=True)
class ClusterInput:
    ids: np.ndarray  # face ids (int64)
    keys: Sequence[tuple[str, int]]  # canonical order: (photo SHA-256, face index)
    embeddings: np.ndarray  # unit rows, float32
    photos: np.ndarray  # photo id per face: faces of one photo never share a cluster
    names: Sequence[str | None]  # user labels (must-link within a name; two names never merge)
    must: Sequence[tuple[int, int]] = ()  # face id pairs
    cannot: Sequence[tuple[int, int]] = ()
    rejected: Sequence[tuple[int, str]] = ()  # (face id, name it is not)


@dataclass
class _Cluster:
    members: list[int]  # canonical positions
    total: np.ndarray  # sum of member embeddings (float64)
    photos: set[int]
    name: str | None
    rejected: set[str] = field(default_factory=set)
    cannot: set[int] = field(default_factory=set)  # canonical positions it must not hold
    first: int = 0  # smallest canonical position (tie-break)


def knn_edges(embeddings: np.ndarray, k: int, threshold: float) -> list[tuple[float, int, int]]:
    """Pairs (i < j) among each face's k nearest neighbours with similarity >= threshold."""
    import faiss

    n = len(embeddings)
    if n < 2:
        return []
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    sims, nbrs = index.search(np.ascontiguousarray(embeddings, dtype=np.float32), min(k + 1, n))
    edges = {}
    for i in range(n):
        for s, j in zip(sims[i].tolist(), nbrs[i].tolist()):
            if j < 0 or j == i or s < threshold:
                continue
            a, b = (i, j) if i < j else (j, i)
            # one value per pair whichever side found it: recomputed in float64 so it is order-free
            if (a, b) not in edges:
                edges[(a, b)] = float(np.dot(embeddings[a].astype(np.float64), embeddings[b].astype(np.float64)))
    return [(s, a, b) for (a, b), s in edges.items()]


def cluster(data: ClusterInput, threshold: float, k: int = DEFAULT_NEIGHBOURS,
            pair_threshold: float | None = None) -> dict[int, int]:
    """Face id -> cluster id (the smallest face id of its cluster) for every face of `data`. `threshold`:
    the bar of large groups (and of every merge without `pair_threshold`); `pair_threshold`: of single faces."""
    n = len(data.ids)
    if n == 0:
        return {}
    order = sorted(range(n), key=lambda i: (data.keys[i], int(data.ids[i])))
    ids = np.asarray(data.ids)[order]
    emb = np.asarray(data.embeddings, dtype=np.float32)[order]
    photos = np.asarray(data.photos)[order]
    names = [data.names[i] for i in order]
    pos = {int(face_id): p for p, face_id in enumerate(ids.tolist())}

    # must-link groups: one user name, or linked pairs (union-find)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    by_name: dict[str, int] = {}
    for p, name in enumerate(names):
        if name is not None:
            union(by_name.setdefault(name, p), p)
    for a, b in data.must:
        if a in pos and b in pos:
            union(pos[a], pos[b])

    clusters: dict[int, _Cluster] = {}
    for p in range(n):
        root = find(p)
        c = clusters.get(root)
        if c is None:
            c = clusters[root] = _Cluster([], np.zeros(emb.shape[1]), set(), None, first=root)
        c.members.append(p)
        c.total += emb[p]
        c.photos.add(int(photos[p]))
        c.name = c.name or names[p]
    owner = {p: find(p) for p in range(n)}
    for face_id, name in data.rejected:
        if face_id in pos:
            clusters[owner[pos[face_id]]].rejected.add(name)
    for a, b in data.cannot:
        if a in pos and b in pos:
            clusters[owner[pos[a]]].cannot.add(pos[b])
            clusters[owner[pos[b]]].cannot.add(pos[a])

    neighbours: dict[int, set[int]] = {r: set() for r in clusters}
    for _, a, b in knn_edges(emb, k, threshold):
        ra, rb = owner[a], owner[b]
        if ra != rb:
            neighbours[ra].add(rb)
            neighbours[rb].add(ra)

    def linkage(x: _Cluster, y: _Cluster) -> float:
        return float(np.dot(x.total, y.total)) / (len(x.members) * len(y.members))

    def allowed(x: _Cluster, y: _Cluster) -> bool:
        if x.photos & y.photos:
            return False
        if x.name and y.name and x.name != y.name:
            return False
        if (x.name and x.name in y.rejected) or (y.name and y.name in x.rejected):
            return False
        return not (x.cannot & set(y.members) or y.cannot & set(x.members))

    heap: list[tuple[float, int, int, int, int]] = []
    version = dict.fromkeys(clusters, 0)

    def needed(x: _Cluster, y: _Cluster) -> float:
        if pair_threshold is None or pair_threshold <= threshold:
            return threshold
        return threshold + (pair_threshold - threshold) / float(np.sqrt(len(x.members) * len(y.members)))

    def push(ra: int, rb: int) -> None:
        s = linkage(clusters[ra], clusters[rb])
        if s >= needed(clusters[ra], clusters[rb]):
            a, b = (ra, rb) if ra < rb else (rb, ra)
            # negated similarity rounded so that float noise cannot reorder near-ties between runs
            heapq.heappush(heap, (-round(s, 9), a, b, version[a], version[b]))

    for ra in sorted(neighbours):
        for rb in sorted(neighbours[ra]):
            if ra < rb:
                push(ra, rb)
    while heap:
        _, a, b, va, vb = heapq.heappop(heap)
        if a not in clusters or b not in clusters or version[a] != va or version[b] != vb:
            continue
        x, y = clusters[a], clusters[b]
        if not allowed(x, y):
            continue
        # merge b into a (a < b: the canonical first member survives)
        x.members.extend(y.members)
        x.total += y.total
        x.photos |= y.photos
        x.name = x.name or y.name
        x.rejected |= y.rejected
        x.cannot |= y.cannot
        del clusters[b]
        version[a] += 1
        nb = (neighbours.pop(b) | neighbours[a]) - {a, b}
        neighbours[a] = nb
        for r in nb:
            neighbours[r].discard(b)
            neighbours[r].add(a)
        for r in sorted(nb):
            push(a, r)
    result = {}
    for c in clusters.values():
        label = int(min(ids[p] for p in c.members))
        for p in c.members:
            result[int(ids[p])] = label
    return result
