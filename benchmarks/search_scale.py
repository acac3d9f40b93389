"""1:K search at scale (issue 21). Written in two steps; the faces step runs first."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def make_faces(data: Path, out: Path, cache: Path) -> None:
    """Embed every LFW and CelebA face once with the default pipeline (MobileFaceNet, 192-d)."""
    from facerec.api import evaluation_pipeline
    from facerec.evaluation.pairs import embed_images

    pipeline = evaluation_pipeline()
    paths = sorted((data / "faces" / "lfw").glob("*/*.jpg")) + sorted((data / "faces" / "celeba_wild").glob("*/*.jpg"))
    t0 = time.time()
    done = [0]

    def progress(n: int) -> None:
        done[0] += n
        if done[0] % 500 < n:
            print(f"{done[0]}/{len(paths)} {time.time() - t0:.0f}s", flush=True)

    embedded = embed_images(pipeline, paths, progress, cache_dir=cache)
    keys = sorted(embedded.embeddings)
    vectors = np.stack([embedded.embeddings[k] for k in keys]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.array([f"{k.parent.parent.name}/{k.parent.name}" for k in keys])
    np.savez(out, vectors=vectors, labels=labels, paths=np.array([str(k) for k in keys]),
             model=np.array(pipeline.model.card.id if hasattr(pipeline.model, "card") else "default"))
    print(f"{len(keys)} faces embedded ({len(embedded.failed)} failed) in {time.time() - t0:.0f}s -> {out}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--faces", type=Path, default=Path("pack/faces.npz"))
    ap.add_argument("--crop-cache", type=Path, default=Path("pack/crops"))
    a = ap.parse_args()
    make_faces(a.data, a.faces, a.crop_cache)
