"""Where a batch scan's time goes, stage by stage, in one process: read (hash + decode + shrink), detection
(MTCNN, one photo at a time), alignment + embedding (one batch), identification (one gallery search).

    python benchmarks/batch_stage_times.py PHOTO_DIR [--photos 512] [--out stages.json]

Says what bounds the end-to-end rate (on a GPU machine: run it there).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--photos", type=int, default=512)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import torch

    from facerec.api import FaceRec, Settings
    from facerec.batch.scan import DEFAULT_MAX_SIDE, read_photo, walk

    entries = walk([str(args.folder)]).files[: args.photos]
    fr = FaceRec(Settings.resolve(db="sqlite:///:memory:"))
    pipe = fr.pipeline
    warm = [read_photo(e, None, DEFAULT_MAX_SIDE, fr.settings.max_pixels).rgb for e in entries[:8]]
    fr.analyse(warm)  # model load, CUDA start

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    photos = [read_photo(e, None, DEFAULT_MAX_SIDE, fr.settings.max_pixels) for e in entries]
    t1 = time.perf_counter()
    rgbs = [p.rgb for p in photos if p.rgb is not None]
    detections = [pipe.detect(rgb) for rgb in rgbs]
    sync()
    t2 = time.perf_counter()
    analysed = fr.analyse(rgbs)  # detection again + alignment + one embedding batch
    sync()
    t3 = time.perf_counter()
    faces = [f for a in analysed for f in a.faces]
    fr.identify_faces(faces, 3)
    t4 = time.perf_counter()
    n = len(rgbs)
    stages = {"read_s": t1 - t0, "detect_s": t2 - t1, "align_embed_s": (t3 - t2) - (t2 - t1),
              "identify_s": t4 - t3}
    result = {"photos": n, "faces": len(faces), "device": torch.cuda.get_device_name(0) if torch.cuda.is_available()
              else "cpu", "torch": torch.__version__, **{k: round(v, 3) for k, v in stages.items()},
              "photos_per_s_by_stage": {k[:-2]: round(n / v, 1) if v > 0 else None for k, v in stages.items()},
              "bound": max(stages, key=stages.get)[:-2]}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
