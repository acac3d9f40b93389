"""An HTML contact sheet of a job: one row of face thumbnails per identity and per unknown cluster, with a
purity estimate per cluster and the faces whose answer was close to the decision (to check first).

One self-contained file: thumbnails are cut from the photos on the fly and inlined as base64 JPEG, so the
report opens anywhere (and holds faces: treat it like the photos themselves).
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from facerec.store.batch import FaceRows

THUMB = 96
MAX_PER_ROW = 40  # thumbnails shown per identity or cluster ("+N more" after)
UNCERTAIN_BAND = 0.05  # an identified face within this of the threshold, or with this margin or less


@dataclass(frozen=True)
class ReportInput:
    job: str
    faces: FaceRows
    identification_threshold: float
    verification_threshold: float
    cluster_threshold: float


def thumbnail(path: str, box: list[float]) -> str:
    """A square crop around the face (box plus 20 %), as a data: URL; an empty string if the photo is gone."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            x1, y1, x2, y2 = box
            side = max(x2 - x1, y2 - y1) * 1.2
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            crop = im.crop((int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2)))
            crop.thumbnail((THUMB, THUMB))
            buf = io.BytesIO()
            crop.save(buf, "JPEG", quality=80)
    except OSError:
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def purity(embeddings: np.ndarray, threshold: float, sample: int = 200) -> tuple[float, float]:
    """Mean pairwise similarity of a cluster, and the share of its pairs at or above the 1:1 threshold
    (an estimate of purity: an impure cluster holds pairs that would not verify). First `sample` members."""
    e = embeddings[:sample]
    if len(e) < 2:
        return 1.0, 1.0
    sims = e @ e.T
    pairs = sims[np.triu_indices(len(e), 1)]
    return float(pairs.mean()), float((pairs >= threshold).mean())


def render(data: ReportInput) -> str:
    f = data.faces
    identities: dict[str, list[int]] = {}
    clusters: dict[int, list[int]] = {}
    for i in range(len(f)):
        name = f.person[i] or f.match[i]
        if name:
            identities.setdefault(name, []).append(i)
        elif f.cluster[i] >= 0:
            clusters.setdefault(int(f.cluster[i]), []).append(i)
    near = np.abs(f.score - data.identification_threshold) <= UNCERTAIN_BAND
    uncertain = [i for i in range(len(f)) if f.match[i] and not f.person[i]
                 and (near[i] or f.margin[i] <= UNCERTAIN_BAND)]

    parts = [f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>facerec batch report: {_e(data.job)}</title>
<style>body{{font-family:sans-serif;margin:1em}} section{{margin:1em 0;border-top:1px solid #ccc}}
img.face{{width:{THUMB}px;height:{THUMB}px;object-fit:cover;margin:2px}} .meta{{color:#555;font-size:90%}}</style>
</head><body><h1>Job {_e(data.job)}</h1>
<p class="meta" id="summary">{len(f)} faces in {len(set(f.file_ids.tolist()))} photos; {len(identities)} identities;
{sum(len(v) > 1 for v in clusters.values())} unknown clusters of two faces or more; identification threshold
{data.identification_threshold:.4f}, clustering threshold {data.cluster_threshold:.4f}.</p>
<h2>Identities</h2>"""]
    for name in sorted(identities):
        rows = identities[name]
        named = sum(1 for i in rows if f.person[i])
        parts.append(f'<section class="identity" data-name="{_e(name)}" data-size="{len(rows)}"><h3>{_e(name)}</h3>'
                     f'<p class="meta">{len(rows)} faces ({named} named by you, {len(rows) - named} identified)</p>'
                     + _sheet(f, rows) + "</section>")
    parts.append("<h2>Unknown clusters</h2>")
    for cid, rows in sorted(clusters.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        if len(rows) < 2:
            continue
        mean, share = purity(f.embeddings[rows], data.verification_threshold)
        parts.append(f'<section class="cluster" data-cluster="{cid}" data-size="{len(rows)}" data-purity="{share:.3f}">'
                     f'<h3>Cluster {cid}</h3><p class="meta">{len(rows)} faces; purity estimate {share:.0%} of pairs '
                     f'verify (mean similarity {mean:.3f}); name it with <code>facerec batch name {_e(data.job)} {cid} '
                     f'"Name"</code></p>' + _sheet(f, rows) + "</section>")
    singles = sum(1 for rows in clusters.values() if len(rows) == 1)
    parts.append(f'<p class="meta" id="singletons">{singles} unknown faces seen once (not shown).</p>')
    parts.append(f'<h2>Uncertain faces</h2><section class="uncertain" data-size="{len(uncertain)}">'
                 f'<p class="meta">Identified within {UNCERTAIN_BAND} of the threshold or of the runner-up.</p>'
                 + _sheet(f, uncertain, with_name=True) + "</section></body></html>")
    return "\n".join(parts)


def _sheet(f: FaceRows, rows: list[int], with_name: bool = False) -> str:
    shown = []
    for i in rows[:MAX_PER_ROW]:
        src = thumbnail(f.paths[i], f.boxes[i])
        title = f"{Path(f.paths[i]).name} face {int(f.face_index[i])} (id {int(f.ids[i])}), score {f.score[i]:.3f}"
        if with_name:
            title += f", {f.match[i]} (margin {f.margin[i]:.3f})"
        shown.append(f'<img class="face" data-face-id="{int(f.ids[i])}" alt="face {int(f.ids[i])}" '
                     f'title="{_e(title)}" src="{src}">')
    more = f'<span class="more">+{len(rows) - MAX_PER_ROW} more</span>' if len(rows) > MAX_PER_ROW else ""
    return "<div>" + "".join(shown) + more + "</div>"


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def write(data: ReportInput, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(render(data), encoding="utf-8")
    return path
