"""Decode an image file into an RGB uint8 array, or fail with a one-line `ImageError`.

Why so defensive: one enrollment photo decides a person's template, so a silently truncated JPEG or a
decompression bomb must be refused, never half-decoded.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from facerec.errors import ImageError, InputPathError

# A path, encoded file bytes (an upload), a decoded array or a PIL image.
ImageInput = Union[str, os.PathLike, bytes, np.ndarray, Image.Image]

try:  # HEIC/HEIF (phone photos): the optional `heic` extra, pillow-heif (its wheels bundle libheif)
    from pillow_heif import register_heif_opener
except ImportError:
    HEIF_SUFFIXES: frozenset[str] = frozenset()
else:
    register_heif_opener()  # Pillow then opens HEIF like any format: size from the header, decode on load()
    HEIF_SUFFIXES = frozenset({".heic", ".heif"})

# File suffixes treated as photos when scanning folders (decoding still checks the real format).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm"}) | HEIF_SUFFIXES
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "BMP", "WEBP", "TIFF", "GIF", "PPM", "MPO", "HEIF"})
DEFAULT_MAX_PIXELS = 50_000_000  # 50 MP: larger than any camera frame, far below a bomb (evaluation tools)
# What the engine accepts for enroll / verify / identify / uploads (Settings.max_pixels, FACEREC_MAX_PIXELS):
# detection on a 49 MP frame took 52 s and 3.1 GB here (SECURITY.md); 16 MP holds a 12 MP phone photo
# (4032x3024) and a 4K frame (8.3 MP) and keeps one request near 1 GB. Refused from the header, before decoding.
FACE_MAX_PIXELS = 16_000_000

ImageFile.LOAD_TRUNCATED_IMAGES = False


def check_file(path: str | os.PathLike) -> Path:
    """Fail with a clear message unless `path` is an existing, readable, non-empty regular file."""
    p = Path(path)
    if not p.exists():
        raise InputPathError(f"{p}: no such file")
    if p.is_dir():
        raise InputPathError(f"{p}: is a directory, expected an image file")
    if not p.is_file():
        raise InputPathError(f"{p}: not a regular file")
    if not os.access(p, os.R_OK):
        raise InputPathError(f"{p}: permission denied (file is not readable)")
    if p.stat().st_size == 0:
        raise ImageError(f"{p}: empty file (0 bytes)")
    return p


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def image_files(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Photos in a folder by suffix, sorted (hidden files skipped)."""
    entries = Path(folder).rglob("*") if recursive else Path(folder).iterdir()
    return sorted(p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def load_image(source: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Return an HxWx3 RGB uint8 array from a path, encoded bytes, a PIL image or an array.

    Files and bytes are decoded fully (truncation is an error), size-limited before decoding, EXIF-rotated
    and converted to RGB from any mode (grayscale, palette, RGBA over white, 16-bit scaled to 8-bit).
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, max_pixels)
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source, name="<image>")
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError("<upload>: empty image (0 bytes)")
        return _decode(io.BytesIO(bytes(source)), "<upload>", max_pixels)
    path = check_file(source)
    return _decode(path, str(path), max_pixels)


def check_image(source: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse an unsupported format or too many pixels from the file's header alone (no decoding): cheap
    enough to run on every photo before a face model is even loaded."""
    if isinstance(source, (np.ndarray, Image.Image)):
        return
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError("<upload>: empty image (0 bytes)")
        return _decode(io.BytesIO(bytes(source)), "<upload>", max_pixels, header_only=True)
    path = check_file(source)
    _decode(path, str(path), max_pixels, header_only=True)


def _decode(fp, name: str, limit: int, header_only: bool = False) -> np.ndarray | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as im:
                if im.format not in SUPPORTED_FORMATS:
                    raise ImageError(f"{name}: unsupported image format {im.format}")
                width, height = im.size
                if width * height > limit:
                    raise ImageError(
                        f"{name}: image too large ({width}x{height} = {width * height:,} pixels > "
                        f"{limit:,}; raise FACEREC_MAX_PIXELS if this is intended)"
                    )
                if header_only:
                    return None
                im.load()
                return _pil_to_rgb(im, name=name)
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image, or an unsupported or corrupt format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: image too large, refused as a possible decompression bomb ({exc})") from None
    except PermissionError:
        raise InputPathError(f"{name}: permission denied (file is not readable)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).split("\n")[0] or type(exc).__name__
        raise ImageError(f"{name}: corrupt or truncated image ({reason})") from None


def _pil_to_rgb(im: Image.Image, name: str) -> np.ndarray:
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # a malformed EXIF block must not hide a usable image
        pass
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _array_to_rgb(np.asarray(im))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode != "RGB":
        im = im.convert("RGB")
    arr = np.asarray(im)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.size == 0:
        raise ImageError(f"{name}: could not convert image to RGB")
    return np.ascontiguousarray(arr)


def _array_to_rgb(arr: np.ndarray, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Accept HxW, HxWx1, HxWx3 or HxWx4 arrays of any integer/float depth."""
    a = np.asarray(arr)
    if a.ndim not in (2, 3) or a.size == 0 or min(a.shape[:2]) < 1:
        raise ImageError(f"array of shape {a.shape} is not an image")
    if a.shape[0] * a.shape[1] > max_pixels:
        raise ImageError(f"array image too large ({a.shape[1]}x{a.shape[0]})")
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):
            top = 1.0 if float(np.nanmax(a)) <= 1.0 else 255.0
            a = np.clip(np.nan_to_num(a) / top * 255.0, 0, 255).astype(np.uint8)
        else:
            top = int(a.max()) if a.size else 0
            shift = max(0, top.bit_length() - 8)
            a = (a.astype(np.int64) >> shift).clip(0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    elif a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        a = (a[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    elif a.shape[2] != 3:
        raise ImageError(f"array with {a.shape[2]} channels is not an image")
    return np.ascontiguousarray(a)
