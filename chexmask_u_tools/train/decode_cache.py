"""An on-disk cache of decoded images, shared by DataLoader workers.

The first read of an image stores its decoded pixels (reduced, with
``fast_decode``) as ``.npz``; later epochs load them instead of decoding.
Entries are keyed by the file's absolute path, modification time and size and
the decoding mode, so an edited image or other dataset options never read a
stale entry.  They are written atomically (other workers see a whole entry or
none) and never evicted: delete the folder to reclaim the space.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from chexmask_u_tools._atomic import atomic_path

__all__ = ["DecodeCache", "Decoded"]

Decoded = tuple[np.ndarray, int, tuple[int, int]]
"""``(pixels, k, (H, W))``: uint8 pixels decoded at ``1 / k`` of the image's full ``(H, W)``."""


class DecodeCache:
    """Decoded images under ``directory``, one ``.npz`` per (file, mode).

    Parameters
    ----------
    directory:
        The cache folder (created on the first write).

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> image = Path(folder) / "image.raw"
    >>> _ = image.write_bytes(b"stand-in")
    >>> cache = DecodeCache(Path(folder) / "cache")
    >>> decode = lambda path: (np.full((2, 3), 7, dtype=np.uint8), 1, (2, 3))
    >>> cache.get(image, "full", decode)[0].tolist()
    [[7, 7, 7], [7, 7, 7]]
    >>> cache.get(image, "full", lambda path: 1 / 0)[2]  # a hit: the decoder is not called
    (2, 3)
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def entry(self, path: str | os.PathLike, mode: str) -> Path:
        """Where the decoded pixels of ``path`` under ``mode`` are stored."""
        stat = os.stat(path)
        key = hashlib.sha256(f"{os.path.abspath(path)}\0{stat.st_mtime_ns}\0{stat.st_size}\0{mode}".encode()).hexdigest()
        return self.directory / key[:2] / f"{key}.npz"

    def get(self, path: str | os.PathLike, mode: str, decode: Callable[[str | os.PathLike], Decoded]) -> Decoded:
        """The cached decoding of ``path``, or ``decode(path)`` stored for next time."""
        entry = self.entry(path, mode)
        try:
            with np.load(entry, allow_pickle=False) as stored:
                k, height, width = (int(v) for v in stored["meta"])
                return stored["pixels"], k, (height, width)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # absent or unreadable: decode again
            pass
        decoded = decode(path)
        pixels, k, (height, width) = decoded
        # Atomic, so other workers see the whole entry or none; no fsync: a lost entry is decoded again.
        with atomic_path(entry, fsync=False) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, pixels=pixels, meta=np.array([k, height, width], dtype=np.int64))
        return decoded
