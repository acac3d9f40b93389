"""The part every torch-based embedder shares: lazy load on the best device, batched inference."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from facerec.models.base import EmbeddingModel
from facerec.models.runtime import configure_torch


class TorchEmbedder(EmbeddingModel):
    """Subclasses build their network with weights loaded, turn uint8 crops into its input tensor, and
    declare the input normalisation the network was trained with, which `model.json` must repeat."""

    batch_size = 64
    input_mean: tuple[float, float, float]
    input_scale: float

    def _load(self) -> None:
        configure_torch()
        import torch

        norm = self.card.normalisation
        mean = tuple(float(m) for m in norm.get("mean", ()))
        if mean != tuple(self.input_mean) or float(norm.get("scale", 0)) != self.input_scale:
            raise ValueError(f"{self.id}: model.json normalisation {norm} differs from the network's input "
                             f"(x - {self.input_mean}) / {self.input_scale}")
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.module = self._build().to(self.device).eval()

    @abstractmethod
    def _build(self):
        """The torch module with this model's weights loaded."""

    @abstractmethod
    def _preprocess(self, crops: np.ndarray):
        """uint8 N x H x W x 3 RGB crops → the network's input tensor on `self.device`."""

    def _embed(self, crops: np.ndarray) -> np.ndarray:
        import torch

        outputs = []
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                x = self._preprocess(crops[start : start + self.batch_size])
                outputs.append(self.module(x).float().cpu().numpy())
        return np.concatenate(outputs).astype(np.float32, copy=False)
