"""LFW pair lists: the real files (when present) and the parser's strictness on small hand-made ones."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from facerec.evaluation.lfw_protocol import (
    Pair,
    image_path,
    labels_and_folds,
    read_pairs,
    view1_pairs,
    view2_pairs,
)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEREC_DATA", REPO / ".." / "shared" / "data"))
LFW = DATA / "faces" / "lfw"


@pytest.fixture(scope="module")
def lfw_root() -> Path:
    if not (LFW / "pairs.txt").is_file():
        message = f"LFW not found at {LFW} (set FACEREC_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return LFW


def test_view2_has_ten_folds_of_300_plus_300(lfw_root: Path) -> None:
    pairs = view2_pairs(lfw_root)
    assert len(pairs) == 6000
    assert sum(p.same for p in pairs) == 3000
    labels, folds = labels_and_folds(pairs)
    assert sorted(set(folds.tolist())) == list(range(10))
    for fold in range(10):
        assert np.count_nonzero(folds == fold) == 600
        assert labels[folds == fold].sum() == 300
    # First line of pairs.txt after the header: "Abel_Pacheco 1 4".
    assert pairs[0] == Pair(
        lfw_root / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg",
        lfw_root / "Abel_Pacheco" / "Abel_Pacheco_0004.jpg",
        same=True,
        fold=0,
    )
    assert all(p.path_a.parent != p.path_b.parent for p in pairs if not p.same)


def test_view1_sizes(lfw_root: Path) -> None:
    train, test = view1_pairs(lfw_root, "train"), view1_pairs(lfw_root, "test")
    assert (len(train), sum(p.same for p in train)) == (2200, 1100)
    assert (len(test), sum(p.same for p in test)) == (1000, 500)
    assert {p.fold for p in train + test} == {0}


def test_every_referenced_image_exists(lfw_root: Path) -> None:
    pairs = view2_pairs(lfw_root) + view1_pairs(lfw_root, "train") + view1_pairs(lfw_root, "test")
    referenced = {p.path_a for p in pairs} | {p.path_b for p in pairs}
    # 9,200 pairs make 18,400 references (the data README's "14,400" is a miscount) to 9,056 images.
    assert (len(pairs), len(referenced)) == (9_200, 9_056)
    missing = sorted(str(path) for path in referenced if not path.is_file())
    assert not missing, f"{len(missing)} missing, e.g. {missing[:3]}"


def test_image_path_layout() -> None:
    assert image_path("/lfw", "Zico", 3) == Path("/lfw/Zico/Zico_0003.jpg")


def test_read_pairs_small_view2_file(tmp_path: Path) -> None:
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text("2\t1\nA_B\t1\t2\nA_B\t1\tC_D\t3\nE\t2\t3\nE\t1\tF\t1\n")
    pairs = read_pairs(pairs_file)  # images default to the file's folder
    assert pairs == [
        Pair(tmp_path / "A_B/A_B_0001.jpg", tmp_path / "A_B/A_B_0002.jpg", True, 0),
        Pair(tmp_path / "A_B/A_B_0001.jpg", tmp_path / "C_D/C_D_0003.jpg", False, 0),
        Pair(tmp_path / "E/E_0002.jpg", tmp_path / "E/E_0003.jpg", True, 1),
        Pair(tmp_path / "E/E_0001.jpg", tmp_path / "F/F_0001.jpg", False, 1),
    ]
    labels, folds = labels_and_folds(pairs)
    np.testing.assert_array_equal(labels, [1, 0, 1, 0])
    np.testing.assert_array_equal(folds, [0, 0, 1, 1])


def test_read_pairs_view1_header_and_other_root(tmp_path: Path) -> None:
    pairs_file = tmp_path / "pairsDevTest.txt"
    pairs_file.write_text("1\nA 1 2\nA 1 B 1\n\n")  # a trailing blank line is harmless
    pairs = read_pairs(pairs_file, root="/images")
    assert [(p.same, p.fold) for p in pairs] == [(True, 0), (False, 0)]
    assert pairs[1].path_b == Path("/images/B/B_0001.jpg")


@pytest.mark.parametrize(
    "text",
    [
        "",  # empty
        "x 300\n",  # header not numeric
        "2\nA 1 2\nA 1 B 1\n",  # fewer lines than the header promises
        "1\nA 1 B 1\nA 1 2\n",  # mismatched line where a matched one belongs
        "1\nA 1 2\nA 1 B\n",  # short mismatched line
        "1\nA 0 2\nA 1 B 1\n",  # image numbers are 1-based
    ],
)
def test_read_pairs_refuses_malformed_files(tmp_path: Path, text: str) -> None:
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text(text)
    with pytest.raises(ValueError):
        read_pairs(pairs_file)


def test_view1_refuses_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        view1_pairs(tmp_path, "validation")  # type: ignore[arg-type]
