"""HEIC photos through the one image loader (facerec.io, pillow-heif: the `heic` extra, in the test extra).

The HEIC files are written by pillow-heif's own encoder (libheif + x265) from a real LFW photo; they decode to
the JPEG's pixels up to the codec's loss, enroll and scan like a JPEG, and a truncated one is refused with a
one-line error, as an oversized one is, from its header.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pillow_heif
import pytest
from PIL import Image

from facerec.api import FaceRec, Settings
from facerec.batch.pipeline import ScanOptions
from facerec.batch.service import BatchService
from facerec.errors import ImageError
from facerec.io import load_image
from tests.conftest import lfw_image


@pytest.fixture(scope="module")
def photos(lfw: Path, tmp_path_factory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("heic")
    jpeg = folder / "Aaron_Peirsol_0001.jpg"
    shutil.copy(lfw_image(lfw, "Aaron_Peirsol", 1), jpeg)
    heif = pillow_heif.from_pillow(Image.open(jpeg))
    heic = folder / "Aaron_Peirsol_0001.heic"
    heif.save(heic, quality=90)
    truncated = folder / "cut.heic"
    truncated.write_bytes(heic.read_bytes()[: heic.stat().st_size // 2])
    return jpeg, heic, truncated


def test_heic_decodes_to_the_jpeg_pixels(photos):
    jpeg, heic, _ = photos
    a, b = load_image(jpeg), load_image(heic)
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() < 3


def test_truncated_or_oversized_heic_is_refused(photos):
    _, heic, truncated = photos
    with pytest.raises(ImageError) as err:
        load_image(truncated)
    assert "corrupt or truncated" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ImageError, match="too large"):
        load_image(heic, max_pixels=100 * 100)  # 176x176: refused from the header


def test_heic_enrolls_and_scans_like_the_jpeg(photos, tmp_path):
    jpeg, heic, truncated = photos
    fr = FaceRec(Settings.resolve(db=str(tmp_path / "f.db")))
    fr.enroll("Aaron Peirsol", [heic])
    match = fr.identify(jpeg).faces[0]
    assert match.name == "Aaron Peirsol" and match.score > 0.95
    service = BatchService(Settings.resolve(db=str(tmp_path / "b.db")))
    report = service.scan([str(heic.parent)], "heic", ScanOptions(workers=0))
    assert report.scanned == 3 and report.faces == 2 and report.errors == 1
    assert "cut.heic" in report.error_samples[0] and "corrupt or truncated" in report.error_samples[0]
