"""Training embedding and liveness networks; nothing in the runtime path imports this package.

Embedding networks (triplet / ArcFace) are trained or fine-tuned on identity-labelled face crops:

    python -m facerec.train cache --source ../shared/data/faces/celeba_wild --out .cache/crops/dlib_resnet29
    python -m facerec.train fit --cache .cache/crops/dlib_resnet29 --out out/train/run1

Modules: `losses` (TripletLoss + miners, ArcFaceHead, CombinedLoss), `sampler` (PKSampler), `data` (crop cache,
augmentation, identity split, validation pairs), `backbones` (chosen by the base model's id: dlib ResNet-29,
or `onnx_port` for an ONNX embedder such as SFace; a tiny CNN; freezing, export),
`loop` (`train(TrainConfig) -> TrainResult`), `cli` (`main(argv)`). Importing this package loads nothing heavy;
only building the crop cache needs OpenCV and facenet-pytorch, and an ONNX base model the `onnx` package
(the `train` extra).
"""

from __future__ import annotations

__all__ = ["TrainConfig", "TrainResult", "train", "main"]


def __getattr__(name: str):
    if name in ("TrainConfig", "TrainResult", "train"):
        from facerec.train import loop

        return getattr(loop, name)
    if name == "main":
        from facerec.train.cli import main

        return main
    raise AttributeError(name)
