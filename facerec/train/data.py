"""Training data: an aligned-crop cache built once with the inference pipeline, and everything read from it.

Why a cache: detection (MTCNN) is the slow part (0.03-0.1 s an image on a CPU core; all 5,995 celeba_wild
photos took 3.1 min with one thread) and needs facenet-pytorch and OpenCV, which a GPU machine may lack. So
crops are made once, on CPU, with exactly the code inference uses (`FacePipeline.detect` -> `align_face` onto
the model's template), and the training loop reads only the cache (numpy + torch; no cv2/facenet import at
module level).

Cache folder (e.g. `.cache/crops/<model_id>/`)::

    meta.json         format, model id, template, image size, identities, shards, detector settings, counts
    labels.npy        int32 (N,)   index into meta["identities"]
    landmarks.npy     float32 (N, 5, 2)  MTCNN landmarks in the source photo (what the crop was aligned from)
    scores.npy        float32 (N,)  detection score of the chosen face
    files.json        source file of each crop, relative to the source folder
    failures.json     photos with no usable face: [{"file", "reason"}]
    shard-00000.npy   encoding "raw":  uint8 (n, H, W, 3) RGB crops
    shard-00000.npy   encoding "jpeg": uint8 (bytes,) concatenated JPEGs, with
    shard-00000.offsets.npy  int64 (n + 1,) byte offsets into it

Every shard is kept under `shard_mib` (default 30 MiB). The default encoding is JPEG (quality 90, ~7 KB a
150x150 crop, 37.4 MB for the 5,989 celeba_wild crops) because the device machine takes at most 64 MiB of
working tree: raw crops of the whole set are ~400 MB. `encoding="raw"` stores exact pixels (N x H x W x 3).
Crops are decoded once at load time (cv2, else torchvision.io, else Pillow) and kept in memory (and on the
GPU during training: ~400 MB for the full set). Horizontal flips are valid augmentations because the dlib
template is left-right symmetric (eyes and mouth corners mirror about x = 74.6).
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

CACHE_KIND = "facerec-crop-cache"
CACHE_VERSION = 1
DEFAULT_SHARD_MIB = 30.0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


# ----------------------------------------------------------------------------------------------- the cache
@dataclass
class CropCache:
    """A loaded cache: decoded crops (N x H x W x 3 uint8 RGB) and their labels."""

    folder: Path
    meta: dict[str, Any]
    images: np.ndarray
    labels: np.ndarray
    files: list[str]

    @property
    def identities(self) -> list[str]:
        return list(self.meta["identities"])

    @property
    def template(self) -> dict[str, Any]:
        return self.meta["template"]

    def __len__(self) -> int:
        return len(self.labels)


def template_to_dict(template) -> dict[str, Any]:
    """An `AlignmentTemplate` (or an equivalent dict) as model.json writes it."""
    if isinstance(template, dict):
        return {"width": int(template["width"]), "height": int(template["height"]),
                "points": [[float(x), float(y)] for x, y in template["points"]]}
    return {"width": int(template.width), "height": int(template.height),
            "points": [[float(x), float(y)] for x, y in template.points]}


def template_is_usable(template) -> bool:
    """False for a placeholder template (points missing, coinciding or outside the crop)."""
    t = template_to_dict(template)
    pts = np.asarray(t["points"], dtype=np.float64)
    if pts.shape != (5, 2) or not np.isfinite(pts).all():
        return False
    inside = (pts[:, 0] >= 0).all() and (pts[:, 0] <= t["width"]).all() and (pts[:, 1] >= 0).all() \
        and (pts[:, 1] <= t["height"]).all()
    spread = np.linalg.norm(pts - pts.mean(0), axis=1).mean()
    return bool(inside and spread > 1.0)


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    try:
        import cv2

        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise ValueError("cv2.imencode failed")
        return buf.tobytes()
    except ImportError:
        from PIL import Image

        out = io.BytesIO()
        Image.fromarray(rgb).save(out, format="JPEG", quality=int(quality))
        return out.getvalue()


def decode_jpegs(data: np.ndarray, offsets: np.ndarray, backend: str = "auto") -> np.ndarray:
    """Decode concatenated JPEGs (uint8 bytes + n+1 offsets) into n x H x W x 3 uint8 RGB.

    `backend`: "auto" (OpenCV if importable, else torchvision.io, else Pillow), or one of "cv2",
    "torchvision", "pil". Decoders may differ by a grey level here and there (IDCT rounding).
    """
    chunks = [data[offsets[i]: offsets[i + 1]] for i in range(len(offsets) - 1)]
    if not chunks:
        return np.zeros((0, 0, 0, 3), np.uint8)
    order = ("cv2", "torchvision", "pil") if backend == "auto" else (backend,)
    for name in order:
        try:
            if name == "cv2":
                import cv2

                return np.stack([cv2.imdecode(c, cv2.IMREAD_COLOR)[:, :, ::-1] for c in chunks])
            if name == "torchvision":
                from torchvision.io import ImageReadMode, decode_jpeg

                tensors = [torch.from_numpy(np.ascontiguousarray(c)) for c in chunks]
                decoded = decode_jpeg(tensors, mode=ImageReadMode.RGB)
                return np.stack([d.permute(1, 2, 0).numpy() for d in decoded])
            if name == "pil":
                from PIL import Image

                return np.stack([np.asarray(Image.open(io.BytesIO(c.tobytes())).convert("RGB")) for c in chunks])
            raise ValueError(f"unknown JPEG backend {name!r}")
        except ImportError:
            if backend != "auto":
                raise
    raise ImportError("no JPEG decoder: install opencv-python-headless, torchvision or pillow")


class CacheWriter:
    """Streams crops into shards under `shard_mib`; `close()` writes labels, metadata and file lists."""

    def __init__(
        self,
        folder: Path | str,
        template,
        identities: Sequence[str],
        encoding: str = "jpeg",
        jpeg_quality: int = 90,
        shard_mib: float = DEFAULT_SHARD_MIB,
        meta: dict[str, Any] | None = None,
    ) -> None:
        if encoding not in ("jpeg", "raw"):
            raise ValueError(f"encoding must be 'jpeg' or 'raw', got {encoding!r}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob("shard-*.npy"):
            stale.unlink()
        self.template = template_to_dict(template)
        self.identities = [str(i) for i in identities]
        self.encoding = encoding
        self.jpeg_quality = int(jpeg_quality)
        self.shard_bytes = int(shard_mib * 2**20)
        self.extra_meta = dict(meta or {})
        self.labels: list[int] = []
        self.files: list[str] = []
        self.landmarks: list[np.ndarray] = []
        self.scores: list[float] = []
        self.failures: list[dict[str, str]] = []
        self.shards: list[dict[str, Any]] = []
        self._pending: list[Any] = []
        self._pending_bytes = 0
        self.shape = (self.template["height"], self.template["width"], 3)

    def add(self, crop: np.ndarray, label: int, file: str = "", landmarks=None, score: float = float("nan")) -> None:
        crop = np.asarray(crop, dtype=np.uint8)
        if crop.shape != self.shape:
            raise ValueError(f"crop shape {crop.shape} differs from the template's {self.shape}")
        item = encode_jpeg(crop, self.jpeg_quality) if self.encoding == "jpeg" else crop
        self.add_encoded(item, label, file, landmarks, score)

    def add_encoded(self, item, label: int, file: str = "", landmarks=None, score: float = float("nan")) -> None:
        """Add a crop already encoded as this cache stores it (JPEG bytes, or the uint8 H x W x 3 array)."""
        if self.encoding == "raw" and np.asarray(item).shape != self.shape:
            raise ValueError(f"crop shape {np.asarray(item).shape} differs from the template's {self.shape}")
        size = len(item) if self.encoding == "jpeg" else item.nbytes
        if self._pending and self._pending_bytes + size > self.shard_bytes:
            self._flush()
        self._pending.append(item)
        self._pending_bytes += size
        self.labels.append(int(label))
        self.files.append(str(file))
        self.landmarks.append(np.zeros((5, 2)) if landmarks is None else np.asarray(landmarks, dtype=np.float64))
        self.scores.append(float(score))

    def fail(self, file: str, reason: str) -> None:
        self.failures.append({"file": str(file), "reason": reason})

    def _flush(self) -> None:
        if not self._pending:
            return
        name = f"shard-{len(self.shards):05d}.npy"
        entry: dict[str, Any] = {"file": name, "count": len(self._pending)}
        if self.encoding == "jpeg":
            offsets = np.cumsum([0] + [len(b) for b in self._pending]).astype(np.int64)
            data = np.frombuffer(b"".join(self._pending), dtype=np.uint8)
            np.save(self.folder / name, data)
            np.save(self.folder / name.replace(".npy", ".offsets.npy"), offsets)
            entry["offsets"] = name.replace(".npy", ".offsets.npy")
        else:
            np.save(self.folder / name, np.stack(self._pending))
        entry["bytes"] = (self.folder / name).stat().st_size
        self.shards.append(entry)
        self._pending, self._pending_bytes = [], 0

    def close(self) -> dict[str, Any]:
        self._flush()
        n = len(self.labels)
        np.save(self.folder / "labels.npy", np.asarray(self.labels, dtype=np.int32))
        np.save(self.folder / "landmarks.npy", np.asarray(self.landmarks, dtype=np.float32).reshape(n, 5, 2))
        np.save(self.folder / "scores.npy", np.asarray(self.scores, dtype=np.float32))
        (self.folder / "files.json").write_text(json.dumps(self.files, indent=0))
        (self.folder / "failures.json").write_text(json.dumps(self.failures, indent=1))
        counts = np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=len(self.identities))
        meta = {
            "kind": CACHE_KIND,
            "format_version": CACHE_VERSION,
            "template": self.template,
            "image_size": [self.shape[0], self.shape[1]],
            "encoding": self.encoding,
            "jpeg_quality": self.jpeg_quality if self.encoding == "jpeg" else None,
            "n_images": n,
            "n_failures": len(self.failures),
            "identities": self.identities,
            "images_per_identity": counts.tolist(),
            "shards": self.shards,
            "total_bytes": int(sum(s["bytes"] for s in self.shards)),
            **self.extra_meta,
        }
        (self.folder / "meta.json").write_text(json.dumps(meta, indent=1))
        return meta


def load_cache(folder: Path | str) -> CropCache:
    """Read and decode a crop cache (numpy/torch only: works on the GPU machine)."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{folder}: no crop cache here (meta.json missing); build it with "
                                f"`python -m facerec.train cache`")
    meta = json.loads(meta_path.read_text())
    if meta.get("kind") != CACHE_KIND or meta.get("format_version") != CACHE_VERSION:
        raise ValueError(f"{folder}: not a version-{CACHE_VERSION} {CACHE_KIND}")
    h, w = meta["image_size"]
    parts = []
    for shard in meta["shards"]:
        arr = np.load(folder / shard["file"], allow_pickle=False)
        if meta["encoding"] == "jpeg":
            arr = decode_jpegs(arr, np.load(folder / shard["offsets"], allow_pickle=False))
        if len(arr) != shard["count"]:
            raise ValueError(f"{folder / shard['file']}: {len(arr)} crops, meta says {shard['count']}")
        parts.append(arr)
    images = np.concatenate(parts) if parts else np.zeros((0, h, w, 3), np.uint8)
    labels = np.load(folder / "labels.npy").astype(np.int64)
    files = json.loads((folder / "files.json").read_text())
    if images.shape[1:] != (h, w, 3) or len(images) != len(labels) or len(files) != len(labels):
        raise ValueError(f"{folder}: inconsistent cache ({images.shape}, {len(labels)} labels, {len(files)} files)")
    return CropCache(folder=folder, meta=meta, images=images, labels=labels, files=files)


def list_identities(source: Path) -> list[str]:
    return sorted(p.name for p in Path(source).iterdir() if p.is_dir())


def read_lfw_overlap(source: Path) -> list[str]:
    """celeba_wild's `lfw_overlap.csv`: identities that are (or may be) LFW people (every row, 'uncertain' too)."""
    path = Path(source) / "lfw_overlap.csv"
    if not path.is_file():
        return []
    rows = path.read_text().strip().splitlines()[1:]
    return sorted({r.split(",")[0].strip() for r in rows if r.strip()})


class _Aligner:
    """Detection + face choice + alignment with the inference pipeline (one per process)."""

    def __init__(self, model_folder: Path, min_score: float, min_face_size: float) -> None:
        from facerec.face.pipeline import FacePipeline
        from facerec.models.base import EmbeddingModel

        class _TemplateOnly(EmbeddingModel):
            """The model as the pipeline sees it for detection and alignment; its weights are never needed."""

            def _load(self) -> None:
                raise RuntimeError("the crop cache builder does not embed")

            def _embed(self, crops: np.ndarray) -> np.ndarray:
                raise RuntimeError("the crop cache builder does not embed")

        self.model = _TemplateOnly(Path(model_folder))
        self.card = self.model.card
        self.pipeline = FacePipeline(self.model, min_score=min_score, min_size=min_face_size)

    def __call__(self, path: Path) -> tuple[np.ndarray, np.ndarray, float]:
        """(crop, landmarks, score) of the chosen face; raises LookupError when there is none."""
        from facerec.face.align import align_face
        from facerec.face.selection import select_subject
        from facerec.io import load_image

        rgb = load_image(path)
        detections = self.pipeline.detect(rgb)
        if not detections:
            raise LookupError("no face")
        d = select_subject(detections, rgb.shape).subject
        return align_face(rgb, d.landmarks, self.card.template), d.landmarks, d.score


_WORKER: dict[str, Any] = {}


def _worker_init(model_folder: str, min_score: float, min_face_size: float, threads: int | None,
                 encoding: str, jpeg_quality: int) -> None:
    if threads:
        torch.set_num_threads(int(threads))
    _WORKER.update(aligner=_Aligner(Path(model_folder), min_score, min_face_size), encoding=encoding,
                   quality=jpeg_quality)


def _worker_run(path: str) -> tuple[str, Any, Any, float]:
    """('ok', encoded crop, landmarks, score) or ('fail', reason, None, nan)."""
    try:
        crop, landmarks, score = _WORKER["aligner"](Path(path))
    except LookupError as exc:
        return "fail", str(exc), None, float("nan")
    except Exception as exc:  # a broken photo is recorded, not fatal
        return "fail", f"{type(exc).__name__}: {exc}", None, float("nan")
    item = encode_jpeg(crop, _WORKER["quality"]) if _WORKER["encoding"] == "jpeg" else crop
    return "ok", item, landmarks, score


def build_crop_cache(
    source: Path | str,
    out: Path | str,
    model_id: str = "dlib_resnet29",
    limit_identities: int | None = None,
    max_per_identity: int | None = None,
    encoding: str = "jpeg",
    jpeg_quality: int = 90,
    shard_mib: float = DEFAULT_SHARD_MIB,
    min_score: float = 0.9,
    min_face_size: float = 20.0,
    progress: bool = True,
    model_folder: Path | str | None = None,
    workers: int = 1,
    threads: int | None = 1,
    exclude_identities: Sequence[str] = (),
) -> dict[str, Any]:
    """Detect, choose and align one face per photo of `source/<identity>/*` with the inference pipeline.

    Exactly what inference does to a photo (`FacePipeline.detect` with the same score/size filters and the
    close-up fix, then `align_face` onto the model's template), minus the embedding; of several faces the most
    central of the large ones is kept (`facerec.face.selection.select_subject`). Photos without a face go to failures.json.

    `model_folder` overrides the model (any folder with a model.json; its template is used), else
    facerec/weights/<model_id>. Identities are taken in sorted order (`limit_identities` keeps the first N, and
    `max_per_identity` the first M photos of each, sorted by name; `exclude_identities`, e.g. a test set's,
    are never read). `workers` > 1 runs that many processes
    (spawned; each with `threads` torch threads: 1 is fastest on a busy machine). Needs facenet-pytorch and
    OpenCV. Returns the cache's meta.json content.
    """
    from facerec.models.base import WEIGHTS_ROOT, ModelCard

    source, out = Path(source), Path(out)
    folder = Path(model_folder) if model_folder is not None else WEIGHTS_ROOT / model_id
    card = ModelCard.load(folder)
    if not template_is_usable(card.template):
        raise ValueError(f"model {card.id!r}: its template in model.json is a placeholder {card.template.points}; "
                         "derive it first (scripts/derive_dlib_template.py)")
    identities = [i for i in list_identities(source) if i not in set(exclude_identities)]
    if limit_identities:
        identities = identities[: int(limit_identities)]
    jobs: list[tuple[int, Path]] = []
    for label, ident in enumerate(identities):
        files = sorted(p for p in (source / ident).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if max_per_identity:
            files = files[: int(max_per_identity)]
        jobs.extend((label, f) for f in files)
    overlap = [i for i in read_lfw_overlap(source) if i in identities]
    meta_extra = {
        "model_id": card.id,
        "model_version": card.version,
        "weights_sha256": card.weights_sha256,
        "source": str(source),
        "source_name": source.name,
        "built_by": "facerec.train.data.build_crop_cache",
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "detector": {"name": "mtcnn (facenet-pytorch)", "min_score": min_score, "min_face_size": min_face_size},
        "face_choice": "most central face among those >= 0.5x the largest face's area",
        "limit_identities": limit_identities,
        "max_per_identity": max_per_identity,
        "lfw_overlap": overlap,
        "excluded_identities": sorted(set(exclude_identities)),
    }
    writer = CacheWriter(out, card.template, identities, encoding, jpeg_quality, shard_mib, meta_extra)
    bar = _progress(len(jobs), "detect+align", progress)
    start = time.time()
    init_args = (str(folder), min_score, min_face_size, threads, encoding, jpeg_quality)
    paths = [str(p) for _, p in jobs]
    if workers and workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(int(workers), mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init, initargs=init_args)
        results = pool.map(_worker_run, paths, chunksize=16)
    else:
        pool = None
        previous_threads = torch.get_num_threads()
        _worker_init(*init_args)
        results = map(_worker_run, paths)
    try:
        for (label, path), (status, item, landmarks, score) in zip(jobs, results):
            rel = str(path.relative_to(source))
            if status == "ok":
                writer.add_encoded(item, label, rel, landmarks, score)
            else:
                writer.fail(rel, item)
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
        else:
            _WORKER.clear()
            torch.set_num_threads(previous_threads)
    writer.extra_meta["build_seconds"] = round(time.time() - start, 1)
    return writer.close()


# ------------------------------------------------------------------------------------ splits and pairs
@dataclass
class Split:
    """Identity-disjoint train / validation indices into the cache, with contiguous class labels."""

    train_idx: np.ndarray
    val_idx: np.ndarray
    train_labels: np.ndarray  # 0..n_train_classes-1, aligned with train_idx
    val_labels: np.ndarray  # 0..n_val_classes-1, aligned with val_idx
    train_identities: list[str]
    val_identities: list[str]
    excluded_identities: list[str] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        return len(self.train_identities)

    def summary(self) -> dict[str, Any]:
        return {
            "train_identities": len(self.train_identities), "train_images": int(len(self.train_idx)),
            "val_identities": len(self.val_identities), "val_images": int(len(self.val_idx)),
            "excluded_identities": self.excluded_identities,
        }


def split_identities(
    labels: np.ndarray,
    identities: Sequence[str],
    val_fraction: float = 0.1,
    seed: int = 0,
    exclude: Sequence[str] = (),
    min_val_images: int = 2,
) -> Split:
    """Hold out `val_fraction` of the identities (drawn among those with >= `min_val_images` photos, so each
    gives genuine pairs); `exclude` (e.g. LFW-overlap identities) goes to neither side."""
    labels = np.asarray(labels).reshape(-1)
    identities = [str(i) for i in identities]
    excluded = sorted(set(exclude) & set(identities))
    present = [i for i in np.unique(labels) if identities[i] not in excluded]
    counts = {i: int((labels == i).sum()) for i in present}
    n_val = int(round(val_fraction * len(present))) if val_fraction > 0 else 0
    if val_fraction > 0:
        n_val = max(n_val, 2)
    candidates = [i for i in present if counts[i] >= min_val_images]
    if n_val > len(candidates) or n_val >= len(present):
        raise ValueError(f"cannot hold out {n_val} identities for validation from {len(present)} "
                         f"({len(candidates)} with >= {min_val_images} photos)")
    rng = np.random.default_rng(seed)
    val_set = set(np.asarray(candidates)[rng.permutation(len(candidates))[:n_val]].tolist()) if n_val else set()
    train_ids = [i for i in present if i not in val_set]
    val_ids = sorted(val_set)

    def gather(ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        remap = {old: new for new, old in enumerate(ids)}
        idx = np.flatnonzero(np.isin(labels, ids))
        return idx, np.asarray([remap[int(v)] for v in labels[idx]], dtype=np.int64)

    train_idx, train_labels = gather(train_ids)
    val_idx, val_labels = gather(val_ids)
    return Split(
        train_idx=train_idx, val_idx=val_idx, train_labels=train_labels, val_labels=val_labels,
        train_identities=[identities[i] for i in train_ids], val_identities=[identities[i] for i in val_ids],
        excluded_identities=excluded,
    )


def parse_folds(spec: str) -> list[int]:
    """'6-10' or '1,3,5' (1-based, as LFW numbers its folds) -> sorted 0-based fold indices."""
    folds: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.strip().isdecimal() or (hi and not hi.strip().isdecimal()):
            raise ValueError(f"folds {spec!r}: expected e.g. '6-10' or '1,3,5'")
        start, stop = int(lo), int(hi or lo)
        if start < 1 or stop < start:
            raise ValueError(f"folds {spec!r}: folds count from 1, ranges go up")
        folds.update(range(start - 1, stop))
    return sorted(folds)


def pairs_identities(pairs_file: Path | str, folds: str) -> list[str]:
    """The identities in the given folds of an LFW-format pairs file (held out of training by `holdout_pairs`)."""
    from facerec.evaluation.lfw_protocol import read_pairs

    chosen = set(parse_folds(folds))
    pairs = read_pairs(pairs_file, root=".")
    if max(chosen) > max(p.fold for p in pairs):
        raise ValueError(f"{pairs_file}: has {max(p.fold for p in pairs) + 1} folds, asked for {folds}")
    return sorted({path.parent.name for p in pairs if p.fold in chosen for path in (p.path_a, p.path_b)})


def verification_pairs(labels: np.ndarray, n_impostors: int = 50_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, genuine) index pairs i < j: every genuine pair, plus `n_impostors` distinct impostor pairs drawn
    uniformly (all of them if there are fewer)."""
    labels = np.asarray(labels).reshape(-1)
    n = len(labels)
    iu, ju = np.triu_indices(n, k=1)
    same = labels[iu] == labels[ju]
    gi, gj = iu[same], ju[same]
    n_imp_total = int((~same).sum())
    if n_impostors >= n_imp_total:
        ii, ij = iu[~same], ju[~same]
    else:
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(n_imp_total, int(n_impostors), replace=False))
        ii, ij = iu[~same][chosen], ju[~same][chosen]
    i = np.r_[gi, ii]
    j = np.r_[gj, ij]
    genuine = np.r_[np.ones(len(gi), bool), np.zeros(len(ii), bool)]
    return i, j, genuine


# ----------------------------------------------------------------------------------------- augmentation
@dataclass
class AugmentConfig:
    """Probabilities and ranges of the batched augmentations (all on the batch's device)."""

    flip: float = 0.5
    jitter: float = 0.8
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    grayscale: float = 0.05
    affine: float = 0.5
    rotate_deg: float = 8.0
    scale: float = 0.06
    translate: float = 0.04  # fraction of the crop side
    blur: float = 0.1
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    downscale: float = 0.2
    downscale_factors: tuple[float, ...] = (0.35, 0.5, 0.65, 0.8)
    # pose (off by default, so earlier recipes draw the same random numbers): a yaw-synthetic warp (the
    # aligned face as a plane turned about its vertical axis, seen in perspective: one side compressed, the
    # other widened) and a random crop (a square window of side crop_min..1, resized back)
    yaw: float = 0.0
    yaw_deg: float = 30.0  # largest turn
    yaw_depth: float = 2.5  # camera distance in half-crop widths (smaller: stronger perspective)
    crop: float = 0.0
    crop_min: float = 0.8

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Augmenter:
    """Random flip, small affine, colour jitter, grayscale, blur, down-then-up scaling, and (when enabled) a
    yaw-synthetic warp and a random crop of a batch.

    Input: uint8 N x H x W x 3 or float N x 3 x H x W in [0, 255], any device; output float N x 3 x H x W in
    [0, 255]. Random parameters are drawn on the CPU from `generator`, so results are reproducible across
    devices given its seed. Affine warps fill with black, as the aligner does beyond the photo.
    """

    def __init__(self, config: AugmentConfig | None = None) -> None:
        self.config = config or AugmentConfig()

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        c = self.config
        g = generator
        if x.dtype == torch.uint8:
            x = x.permute(0, 3, 1, 2).float()
        else:
            x = x.float()
        n = x.shape[0]
        if n == 0:
            return x
        dev = x.device

        def draw(p: float) -> torch.Tensor:
            return torch.rand(n, generator=g) < p

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(n, generator=g)

        # flip
        flip = draw(c.flip).to(dev)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        # affine (rotation, scale, translation about the centre)
        sel = draw(c.affine)
        angle = uniform(-c.rotate_deg, c.rotate_deg) * math.pi / 180.0
        scale = uniform(1.0 - c.scale, 1.0 + c.scale)
        tx, ty = uniform(-2 * c.translate, 2 * c.translate), uniform(-2 * c.translate, 2 * c.translate)
        if sel.any():
            idx = torch.nonzero(sel).reshape(-1)
            cos, sin = torch.cos(angle[idx]) / scale[idx], torch.sin(angle[idx]) / scale[idx]
            theta = torch.stack([torch.stack([cos, -sin, tx[idx]], 1), torch.stack([sin, cos, ty[idx]], 1)], 1)
            sub = x[idx.to(dev)]
            grid = F.affine_grid(theta.to(dev, sub.dtype), list(sub.shape), align_corners=False)
            x = x.clone()
            x[idx.to(dev)] = F.grid_sample(sub, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # colour jitter: brightness, contrast, saturation
        sel = draw(c.jitter)
        b = torch.where(sel, uniform(1 - c.brightness, 1 + c.brightness), torch.ones(n)).to(dev)
        ct = torch.where(sel, uniform(1 - c.contrast, 1 + c.contrast), torch.ones(n)).to(dev)
        s = torch.where(sel, uniform(1 - c.saturation, 1 + c.saturation), torch.ones(n)).to(dev)
        x = x * b[:, None, None, None]
        gray = _gray(x)
        mean = gray.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * ct[:, None, None, None] + mean
        gray = _gray(x)
        x = (x - gray) * s[:, None, None, None] + gray
        x = x.clamp(0, 255)
        # grayscale
        gsel = draw(c.grayscale).to(dev)
        x = torch.where(gsel[:, None, None, None], _gray(x).expand_as(x), x)
        # gaussian blur
        sel = draw(c.blur)
        sigma = uniform(*c.blur_sigma)
        if sel.any():
            idx = torch.nonzero(sel).reshape(-1)
            x = x.clone()
            x[idx.to(dev)] = _gaussian_blur(x[idx.to(dev)], sigma[idx].to(dev))
        # down-then-up scaling (low resolution)
        sel = draw(c.downscale)
        which = torch.randint(len(c.downscale_factors), (n,), generator=g)
        if sel.any():
            h, w = x.shape[-2:]
            x = x.clone()
            for f_i, factor in enumerate(c.downscale_factors):
                idx = torch.nonzero(sel & (which == f_i)).reshape(-1).to(dev)
                if idx.numel():
                    small = F.interpolate(x[idx], size=(max(8, round(h * factor)), max(8, round(w * factor))),
                                          mode="bilinear", antialias=True, align_corners=False)
                    x[idx] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        # pose: last, and drawn only when enabled (earlier recipes keep their random stream)
        if c.yaw > 0:
            sel = draw(c.yaw)
            angle = uniform(-c.yaw_deg, c.yaw_deg) * math.pi / 180.0
            if sel.any():
                idx = torch.nonzero(sel).reshape(-1).to(dev)
                x = x.clone()
                x[idx] = _warp(x[idx], yaw_grid(angle[sel].to(dev), c.yaw_depth, x.shape[-2], x.shape[-1]))
        if c.crop > 0:
            sel = draw(c.crop)
            side = uniform(c.crop_min, 1.0)
            cx, cy = (2 * torch.rand(n, generator=g) - 1) * (1 - side), (2 * torch.rand(n, generator=g) - 1) * (1 - side)
            if sel.any():
                zero = torch.zeros_like(side)
                theta = torch.stack([torch.stack([side, zero, cx], 1), torch.stack([zero, side, cy], 1)], 1)[sel]
                idx = torch.nonzero(sel).reshape(-1).to(dev)
                sub = x[idx]
                x = x.clone()
                x[idx] = _warp(sub, F.affine_grid(theta.to(dev, sub.dtype), list(sub.shape), align_corners=False))
        return x.clamp(0, 255)


def yaw_grid(angle: torch.Tensor, depth: float, h: int, w: int) -> torch.Tensor:
    """grid_sample grids (n x h x w x 2) that show each crop as a plane turned by `angle` (radians) about its
    vertical axis, seen by a pinhole camera `depth` half-widths away: a point at x on the plane lands at
    u = x cos(a) D / (D + x sin(a)), v = y D / (D + x sin(a)); the grid inverts that for every output pixel."""
    dev, dt = angle.device, torch.float32
    u = ((torch.arange(w, device=dev, dtype=dt) + 0.5) * 2 / w - 1).reshape(1, 1, w)
    v = ((torch.arange(h, device=dev, dtype=dt) + 0.5) * 2 / h - 1).reshape(1, h, 1)
    cos, sin = torch.cos(angle).reshape(-1, 1, 1), torch.sin(angle).reshape(-1, 1, 1)
    x = u * depth / (depth * cos - u * sin)
    y = v * (depth + x * sin) / depth
    return torch.stack([x.expand(-1, h, w), y.expand(-1, h, w)], dim=-1)


def _warp(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Resample with black beyond the crop, as the aligner fills beyond the photo."""
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image (reflect padding)."""
    n, ch, h, w = x.shape
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t[None, :] ** 2) / (2 * sigma[:, None].to(x.dtype) ** 2))
    k = k / k.sum(1, keepdim=True)  # n x (2r+1)
    k = k.repeat_interleave(ch, 0)  # (n*ch) x (2r+1)
    y = x.reshape(1, n * ch, h, w)
    y = F.pad(y, (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=n * ch)
    y = F.conv2d(y, k[:, None, :, None], groups=n * ch)
    return y.reshape(n, ch, h, w)


def normalise(x: torch.Tensor, mean: Sequence[float], scale: float) -> torch.Tensor:
    """float N x 3 x H x W in [0, 255] -> (x - mean) / scale, the model card's input normalisation."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    return (x - m) / float(scale)


class CropDataset(torch.utils.data.Dataset):
    """(image, label) over cached crops: image float 3 x H x W, normalised with (mean, scale), augmented when
    an `Augmenter` is given. The training loop gathers and augments whole batches on the GPU instead (faster);
    this class is for generic use with a DataLoader (e.g. `batch_sampler=PKSampler(...)`)."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        scale: float = 1.0,
        augmenter: Augmenter | None = None,
        seed: int = 0,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError("images and labels differ in length")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.mean, self.scale = tuple(mean), float(scale)
        self.augmenter = augmenter
        self.seed = int(seed)
        self.calls = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(np.ascontiguousarray(self.images[i]))[None]
        if self.augmenter is not None:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(i) * 7919 + self.calls)
            self.calls += 1
            x = self.augmenter(x, g)
        else:
            x = x.permute(0, 3, 1, 2).float()
        return normalise(x, self.mean, self.scale)[0], int(self.labels[i])


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NullBar()
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, dynamic_ncols=True, mininterval=1.0)
    except ImportError:
        return _NullBar()
