"""Files that hold biometric data (databases, indexes, key files) are created private to their owner."""

from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: str | os.PathLike) -> Path:
    """Create `path` and any missing parents 0700 (folders that already exist are left as they are)."""
    path = Path(path)
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # another process made it meanwhile
            pass
    return Path(path if not missing else missing[0])


def private_file(path: str | os.PathLike) -> None:
    """Create an empty file 0600 unless it exists (the umask cannot widen it)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
