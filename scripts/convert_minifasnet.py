#!/usr/bin/env python3
"""Convert the original MiniFASNet V2 / V1SE `.pth` state dicts into facerec's weights folders.

    python scripts/convert_minifasnet.py --models ../shared/models/minifasnet

Source: `resources/anti_spoof_models/` of github.com/minivision-ai/Silent-Face-Anti-Spoofing at commit
b6d5f04ad78778917853b25c778acef6d5626d15 (Apache-2.0), as copied to `../shared/models/minifasnet/` (its
README gives the sha256 checked here). Output per model: `facerec/weights/<folder>/minifasnet_*_fp32.npz`
(keyed by the port's state-dict names, `module.` stripped, batch-norm step counters dropped; reproducible
bytes through `facerec.npzfile.write_npz`), `model.json` (the card) and `LICENSE` (the original's).

Why float32: float16 weights move the softmax by up to 2.2e-3 (V2) and 8.7e-5 (V1SE) on the reference
frames, beyond the 1e-5 the port must hold; float32 stays at 1.2e-6. Measured with `--dtype float16`.

Fields decided elsewhere and kept when the card already exists: the threshold (`scripts/minifasnet_calibrate.py`)
and the MTCNN box adapter (`input.box_adapter`, same script), with their provenance and metrics.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facerec.npzfile import write_npz  # noqa: E402

COMMIT = "b6d5f04ad78778917853b25c778acef6d5626d15"
SOURCE = "https://github.com/minivision-ai/Silent-Face-Anti-Spoofing"
MODELS = {
    "minifasnet_v2": {
        "id": "minifasnet-v2", "variant": "MiniFASNetV2", "file": "2.7_80x80_MiniFASNetV2.pth", "scale": 2.7,
        "sha256": "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0",
    },
    "minifasnet_v1se": {
        "id": "minifasnet-v1se", "variant": "MiniFASNetV1SE", "file": "4_0_0_80x80_MiniFASNetV1SE.pth", "scale": 4.0,
        "sha256": "84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990",
    },
}
KEPT = ("threshold", "threshold_provenance", "metrics")


def convert(models_dir: Path, folder: str, out_root: Path, dtype: str) -> dict:
    import torch

    spec = MODELS[folder]
    src = models_dir / spec["file"]
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    if digest != spec["sha256"]:
        raise SystemExit(f"{src}: sha256 {digest}, expected {spec['sha256']}")
    state = torch.load(src, map_location="cpu", weights_only=True)
    arrays = {}
    for key, value in state.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if name.endswith("num_batches_tracked"):
            continue
        arrays[name] = value.numpy().astype(dtype)
    out = out_root / folder
    weights_file = f"minifasnet_{spec['variant'][len('MiniFASNet'):].lower()}_{'fp16' if dtype == 'float16' else 'fp32'}.npz"
    sha = write_npz(out / weights_file, arrays)
    shutil.copyfile(models_dir / "LICENSE", out / "LICENSE")
    old = json.loads((out / "model.json").read_text()) if (out / "model.json").is_file() else {}
    box_adapter = old.get("input", {}).get("box_adapter")
    card = {
        "id": spec["id"],
        "version": "1",
        "kind": "liveness",
        "runtime": "minifasnet",
        "architecture": f"{spec['variant']} (Silent-Face-Anti-Spoofing; 80x80 input, 3 logits, softmax class 1 = "
                        f"real face); PyTorch port in facerec/models/minifasnet.py, written from the original "
                        f"src/model_lib/MiniFASNet.py",
        "variant": spec["variant"],
        "input": {
            "colour": "BGR",
            "size": [80, 80],
            "crop_scale": spec["scale"],
            "crop": "the original CropImage: a box crop_scale x the detector box (width and height), centred on "
                    "it, shifted to stay inside the frame (scale lowered where it cannot fit), bilinear resize "
                    "to 80x80",
            "box": "the original's RetinaFace box [left, top, width, height] (ints); from facerec's MTCNN box "
                   "through box_adapter",
            **({"box_adapter": box_adapter} if box_adapter else {}),
        },
        "normalisation": {"scale": 1.0, "mean": [0.0, 0.0, 0.0],
                          "note": "float BGR 0-255 as it is: no division by 255, no mean or std"},
        "output": "P(live) = softmax(logits)[1]",
        "weights_file": weights_file,
        "weights_sha256": sha,
        "weights_dtype": dtype,
        "weights_licence": "Apache-2.0 (LICENSE, copied from the original repository)",
        "training_data": "undisclosed by the authors (minivision-ai); NUAA may or may not have been part of it",
        "training_data_licence": "unknown (undisclosed training data)",
        "provenance": f"{SOURCE} commit {COMMIT}, resources/anti_spoof_models/{spec['file']} (sha256 "
                      f"{spec['sha256']}); converted by scripts/convert_minifasnet.py --dtype {dtype}: "
                      f"'module.' prefix stripped, num_batches_tracked dropped, values unchanged",
    }
    for key in KEPT:
        if key in old:
            card[key] = old[key]
    card.setdefault("threshold", 0.5)
    card.setdefault("threshold_provenance", "the original code's decision rule (argmax of 3 classes ~ 0.5); "
                                            "replaced by scripts/minifasnet_calibrate.py")
    (out / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"{out / weights_file}: {(out / weights_file).stat().st_size:,} bytes, sha256 {sha}")
    return card


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=str(REPO.parent / "shared" / "models" / "minifasnet"),
                        help="folder with the original .pth files and LICENSE")
    parser.add_argument("--out", default=str(REPO / "facerec" / "weights"), help="weights root")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    args = parser.parse_args()
    for folder in MODELS:
        convert(Path(args.models), folder, Path(args.out), args.dtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
