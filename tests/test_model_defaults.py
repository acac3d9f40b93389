"""The two recommended models (facerec/data/model_defaults.json) agree with the measurements they cite."""

from __future__ import annotations

import json
import re

import pytest

from facerec.errors import ModelError
from facerec.models.defaults import DEFAULTS_FILE, recommended_models, roles_of
from facerec.models.registry import model_card

DEEP_MODELS = ("mobilefacenet", "dlib_resnet29", "sface_2021dec", "edgeface_s_gamma05")
COMMERCIAL_CANDIDATES = ("sface_2021dec", "dlib_resnet29")  # weights Apache-2.0 and CC0


def devtrain_frr(model_id: str) -> float:
    """FRR at FAR 1e-3 on LFW View 1 DevTrain, as scripts/default_threshold.py recorded it in the card."""
    match = re.search(r"FRR there ([0-9.]+)", model_card(model_id).threshold_provenance)
    assert match, f"{model_id}: no DevTrain FRR in its threshold provenance"
    return float(match.group(1))


def test_both_roles_name_shipped_models_with_matching_terms():
    chosen = recommended_models()
    assert set(chosen) == {"most_accurate", "commercial_use"}
    commercial = model_card(chosen["commercial_use"]["model"])
    assert commercial.extra["commercial_use"].startswith("yes")
    assert chosen["commercial_use"]["commercial_use"] is True
    most = model_card(chosen["most_accurate"]["model"])
    assert chosen["most_accurate"]["commercial_use"] == most.extra["commercial_use"].startswith("yes")
    assert roles_of(chosen["commercial_use"]["model"]) == ["commercial_use"]


def test_choices_are_the_lowest_error_on_the_selection_data():
    chosen = recommended_models()
    frr = {m: devtrain_frr(m) for m in DEEP_MODELS}
    assert frr[chosen["most_accurate"]["model"]] == min(frr.values())
    assert frr[chosen["commercial_use"]["model"]] == min(frr[m] for m in COMMERCIAL_CANDIDATES)


def test_a_file_naming_an_unknown_model_is_refused(tmp_path):
    data = json.loads(DEFAULTS_FILE.read_text())
    data["commercial_use"]["model"] = "no_such_model"
    bad = tmp_path / "model_defaults.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="commercial_use"):
        recommended_models(bad)
