"""Image decoding: every mode becomes RGB uint8, EXIF is honoured, damage is refused with one line."""

from __future__ import annotations

import io
import zlib
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facerec.errors import ImageError, InputPathError
from facerec.io import load_image


def _save(tmp_path: Path, name: str, im: Image.Image, **kw) -> Path:
    path = tmp_path / name
    im.save(path, **kw)
    return path


def test_rgb_grey_palette_rgba_16bit(tmp_path):
    base = np.zeros((40, 60, 3), np.uint8)
    base[:, :30] = (200, 10, 10)
    rgb = Image.fromarray(base)
    assert load_image(_save(tmp_path, "a.png", rgb)).shape == (40, 60, 3)
    grey = load_image(_save(tmp_path, "g.png", rgb.convert("L")))
    assert grey.shape == (40, 60, 3) and np.all(grey[..., 0] == grey[..., 1])
    pal = load_image(_save(tmp_path, "p.png", rgb.convert("P")))
    assert pal.shape == (40, 60, 3) and abs(int(pal[0, 0, 0]) - 200) < 10
    rgba = rgb.convert("RGBA")
    rgba.putalpha(0)  # fully transparent → composited over white
    assert np.all(load_image(_save(tmp_path, "t.png", rgba)) == 255)
    sixteen = Image.fromarray((np.arange(40 * 60).reshape(40, 60) * 20).astype(np.uint16))
    out = load_image(_save(tmp_path, "i16.png", sixteen))
    assert out.dtype == np.uint8 and out.max() == (40 * 60 - 1) * 20 >> 8  # scaled by its bit depth


def test_exif_orientation_is_applied(tmp_path):
    im = Image.fromarray(np.zeros((20, 50, 3), np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = _save(tmp_path, "rot.jpg", im, exif=exif.tobytes())
    assert load_image(path).shape == (50, 20, 3)


def test_missing_directory_empty(tmp_path):
    with pytest.raises(InputPathError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(InputPathError, match="is a directory"):
        load_image(tmp_path)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        load_image(tmp_path / "empty.jpg")


def test_truncated_and_corrupt_and_not_an_image(tmp_path, lfw):
    data = (lfw / "AJ_Cook" / "AJ_Cook_0001.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        load_image(tmp_path / "trunc.jpg")
    corrupt = bytearray(data)
    corrupt[200:4000] = bytes(3800)
    (tmp_path / "corrupt.jpg").write_bytes(bytes(corrupt))
    with pytest.raises(ImageError):
        load_image(tmp_path / "corrupt.jpg")
    (tmp_path / "text.jpg").write_text("this is not a picture\n" * 10)
    with pytest.raises(ImageError, match="not an image"):
        load_image(tmp_path / "text.jpg")


def test_unsupported_format(tmp_path):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "icon.ico")
    with pytest.raises(ImageError, match="unsupported image format ICO"):
        load_image(tmp_path / "icon.ico")


def huge_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring huge dimensions, with a tiny compressed body (a bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = zlib.compress(b"\x00" * (width + 1) * 64)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def test_huge_dimensions_and_bombs_are_refused(tmp_path):
    (tmp_path / "huge.png").write_bytes(huge_png(30000, 30000))
    with pytest.raises(ImageError, match="too large|bomb"):
        load_image(tmp_path / "huge.png")
    with pytest.raises(ImageError, match="too large|bomb"):
        load_image((tmp_path / "huge.png").read_bytes())  # the same limits for uploads
    with pytest.raises(ImageError, match="too large"):
        load_image(_save(tmp_path, "small.png", Image.fromarray(np.zeros((40, 40, 3), np.uint8))), max_pixels=1000)


def test_uploaded_bytes_decode_like_files(tmp_path):
    path = _save(tmp_path, "a.png", Image.fromarray(np.full((30, 40, 3), 7, np.uint8)))
    assert np.array_equal(load_image(path.read_bytes()), load_image(path))
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    with pytest.raises(ImageError, match="corrupt|not an image"):
        load_image(path.read_bytes()[:60])


def test_arrays_are_accepted(tmp_path):
    assert load_image(np.zeros((5, 6), np.uint8)).shape == (5, 6, 3)
    assert load_image(np.ones((5, 6, 4), np.float32)).dtype == np.uint8
    with pytest.raises(ImageError):
        load_image(np.zeros((0, 3, 3), np.uint8))
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    assert load_image(Image.open(io.BytesIO(buf.getvalue()))).shape == (8, 8, 3)
