"""Finding photos under folders, and reading one photo in a worker process (hash, decode, resize).

The walk never fails on one bad entry: symlink loops, unreadable folders and files, broken links and files of
other types are counted and the walk goes on. The worker side imports no torch (it runs in spawned processes).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from facerec.errors import FacerecError
from facerec.io.images import HEIF_SUFFIXES, load_image

# What a batch scan reads (decoding still checks the real format); HEIC/HEIF with the `heic` extra installed.
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}) | HEIF_SUFFIXES
DEFAULT_MAX_SIDE = 1600  # photos are shrunk to this longer side before detection (faces >= 20 px still found)


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    mtime_ns: int


@dataclass
class Walk:
    files: list[FileEntry] = field(default_factory=list)
    other_types: int = 0  # files that are not photos by suffix
    unreadable: int = 0  # folders or files that could not be listed, stat'ed or opened; broken links
    loops: int = 0  # folders reached again through a symlink (loops and aliases), not walked twice
    duplicates: int = 0  # one file reached by two paths (links): read once

    def counts(self) -> dict:
        return {"photos": len(self.files), "other_types": self.other_types, "unreadable": self.unreadable,
                "symlink_loops": self.loops, "duplicate_paths": self.duplicates}


def walk(roots: list[str | os.PathLike]) -> Walk:
    """Every photo under `roots` (files or folders), sorted by path, each file once."""
    result = Walk()
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    found: list[FileEntry] = []

    def add_file(path: str, st: os.stat_result) -> None:
        if Path(path).suffix.lower() not in PHOTO_SUFFIXES:
            result.other_types += 1
            return
        key = (st.st_dev, st.st_ino)
        if key in seen_files:
            result.duplicates += 1
            return
        if not os.access(path, os.R_OK):
            result.unreadable += 1
            return
        seen_files.add(key)
        found.append(FileEntry(path, st.st_size, st.st_mtime_ns))

    stack = []
    for root in roots:
        path = os.path.abspath(root)
        try:
            st = os.stat(path)
        except OSError:
            raise FacerecError(f"{root}: no such file or directory") from None
        if stat.S_ISDIR(st.st_mode):
            stack.append(path)
        else:
            add_file(path, st)
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:
                result.loops += 1
                continue
            seen_dirs.add(key)
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            result.unreadable += 1
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                st = os.stat(entry.path)  # follows links: a broken link is unreadable
            except OSError:
                result.unreadable += 1
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
            elif stat.S_ISREG(st.st_mode):
                add_file(entry.path, st)
            else:
                result.other_types += 1
    result.files = sorted(found, key=lambda f: f.path)
    return result


@dataclass(frozen=True)
class ReadPhoto:
    """What a worker sends back: the hash always; pixels unless the content is already known or unreadable."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    rgb: np.ndarray | None = None
    width: int = 0  # original size (boxes are given in its pixels)
    height: int = 0
    scale: float = 1.0  # rgb = original * scale
    error: str | None = None
    unchanged: bool = False  # same SHA-256 as the last scan of this path: nothing to do
    faces: tuple | None = None  # the faces, when a worker analysed the photo itself (then no pixels)


def read_photo(entry: FileEntry, known_sha256: str | None, max_side: int, max_pixels: int) -> ReadPhoto:
    """Hash, decode (EXIF-rotated, any colour mode) and shrink one photo; errors are returned, not raised."""
    try:
        with open(entry.path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return ReadPhoto(entry.path, entry.size, entry.mtime_ns, "", error=f"cannot read ({exc.strerror})")
    digest = hashlib.sha256(data).hexdigest()
    if digest == known_sha256:
        return ReadPhoto(entry.path, len(data), entry.mtime_ns, digest, unchanged=True)
    try:
        rgb = load_image(data, max_pixels=max_pixels)
    except FacerecError as exc:
        return ReadPhoto(entry.path, len(data), entry.mtime_ns, digest, error=str(exc).replace("<upload>: ", ""))
    height, width = rgb.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0))
    return ReadPhoto(entry.path, len(data), entry.mtime_ns, digest, rgb, width, height, scale)
