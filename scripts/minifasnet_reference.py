#!/usr/bin/env python3
"""Reference outputs of the ORIGINAL Silent-Face-Anti-Spoofing code, for `tests/test_minifasnet_port.py`.

Runs the authors' own code (not facerec's port) on a few fixed NUAA frames: their RetinaFace detector
(`Detection.get_bbox`), their crop (`CropImage.crop`) and their network definition
(`src/model_lib/MiniFASNet.py`, weights loaded as `AntiSpoofPredict._load_model` does) and prints, per frame,
the detector box and both models' softmax, as Python literals to paste into the test.

    git -C <mirror of minivision-ai/Silent-Face-Anti-Spoofing> archive b6d5f04 src | tar x -C /tmp/sfas
    python scripts/minifasnet_reference.py --original /tmp/sfas --models ../shared/models/minifasnet \
        --nuaa ../shared/data/liveness/nuaa
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

FRAMES = (
    "ClientRaw/0001/0001_00_00_01_0.jpg",
    "ClientRaw/0012/0012_01_07_03_105.jpg",
    "ImposterRaw/0003/0003_01_08_03_81.jpg",
    "ImposterRaw/0005/0005_00_00_01_122.jpg",
)
MODELS = (("2.7_80x80_MiniFASNetV2.pth", 2.7), ("4_0_0_80x80_MiniFASNetV1SE.pth", 4.0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--original", required=True, help="folder holding the original repository's src/")
    parser.add_argument("--models", required=True, help="folder of the original .pth and RetinaFace files")
    parser.add_argument("--nuaa", required=True, help="NUAA folder (ClientRaw/, ImposterRaw/)")
    args = parser.parse_args()

    import cv2
    import numpy as np
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(args.original).resolve()))
    from src.anti_spoof_predict import AntiSpoofPredict  # the original code
    from src.generate_patches import CropImage

    models = Path(args.models).resolve()
    # The original reads its detector from ./resources/detection_model/: give it that layout.
    work = Path(args.original).resolve() / "resources" / "detection_model"
    work.mkdir(parents=True, exist_ok=True)
    for name in ("Widerface-RetinaFace.caffemodel", "deploy.prototxt"):
        if not (work / name).exists():
            os.symlink(models / name, work / name)
    os.chdir(Path(args.original).resolve())
    predictor = AntiSpoofPredict(0)
    cropper = CropImage()
    print("REFERENCE = [")
    for rel in FRAMES:
        image = cv2.imread(str(Path(args.nuaa).resolve() / rel))
        bbox = predictor.get_bbox(image)
        out = []
        for name, scale in MODELS:
            crop = cropper.crop(image, bbox, scale, 80, 80, True)
            out.append(predictor.predict(crop, str(models / name))[0].astype(np.float64).tolist())
        print(f"    ({rel!r}, {bbox}, {[[float(f'{p:.9g}') for p in o] for o in out]}),")
    print("]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
