"""Which embedding models exist: every folder under `facerec/weights/` with a `model.json`.

A model's runtime (the code that runs its weights) is declared in its card (`extra.runtime`); fine-tuned
weights of a known architecture need only a new folder. Nothing is loaded until a model is used.
"""

from __future__ import annotations

import importlib
import json
from functools import lru_cache

from facerec.errors import ModelError
from facerec.models.base import WEIGHTS_ROOT, EmbeddingModel, ModelCard

RUNTIMES = {
    "dlib_resnet": "facerec.models.dlib_resnet:DlibResNetEmbedder",
    "eigenfaces": "facerec.models.classical:EigenfacesEmbedder",
    "fisherfaces": "facerec.models.classical:FisherfacesEmbedder",
    "lbp_histogram": "facerec.models.classical:LBPEmbedder",
    "mobilefacenet": "facerec.models.mobilefacenet:MobileFaceNetEmbedder",
    "onnx": "facerec.models.onnx_embedder:OnnxEmbedder",
}


def available_models() -> list[str]:
    """Embedding models only: other networks (liveness) declare another `kind` in their card."""
    return sorted(
        p.name for p in WEIGHTS_ROOT.iterdir()
        if (p / "model.json").is_file() and json.loads((p / "model.json").read_text()).get("kind", "embedding") == "embedding"
    )


def model_card(model_id: str) -> ModelCard:
    folder = WEIGHTS_ROOT / model_id
    if model_id not in available_models():
        known = ", ".join(available_models()) or "none"
        raise ModelError(f"unknown model {model_id!r} (available: {known})")
    return ModelCard.load(folder)


@lru_cache(maxsize=None)
def get_model(model_id: str) -> EmbeddingModel:
    """The model object (weights still unloaded until its first `embed`)."""
    card = model_card(model_id)
    runtime = card.extra.get("runtime", "")
    if runtime not in RUNTIMES:
        raise ModelError(f"model {model_id!r} declares unknown runtime {runtime!r}")
    module_name, class_name = RUNTIMES[runtime].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(WEIGHTS_ROOT / model_id)
