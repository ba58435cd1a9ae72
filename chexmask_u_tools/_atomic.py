"""Atomic file output: write to a temporary name beside the target, flush to disk, then rename over it.

A reader never sees a half-written file: until :func:`os.replace` the target is
either absent or the previous complete version.  A run killed mid-write leaves a
temporary named ``.<name>.tmp-<pid>-<random>`` beside the target; the next write
of the same target removes such leftovers (:func:`remove_stale_temporaries`).

Examples
--------
>>> import tempfile, pathlib
>>> target = pathlib.Path(tempfile.mkdtemp()) / "table.csv"
>>> with atomic_path(target) as temporary:
...     _ = temporary.write_text("a,b\\n1,2\\n")
>>> target.read_text()
'a,b\\n1,2\\n'
>>> atomic_write_bytes(target, b"x")
>>> target.read_bytes()
b'x'
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "fsync_directory",
    "process_alive",
    "remove_stale_temporaries",
    "temporary_name",
]

_TEMP_MARK = ".tmp-"


def temporary_name(target: str | os.PathLike) -> Path:
    """A fresh temporary path in the target's directory: ``.<name>.tmp-<pid>-<random>``."""
    target = Path(target)
    return target.with_name(f".{target.name}{_TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Delete temporaries of ``target`` left by runs that are no longer alive; returns what was removed.

    A temporary whose process id is still running (another writer right now) is kept.
    """
    target = Path(target)
    removed = []
    prefix = f".{target.name}{_TEMP_MARK}"
    if not target.parent.is_dir():
        return removed
    for candidate in target.parent.iterdir():
        if not candidate.name.startswith(prefix):
            continue
        pid_text = candidate.name[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and process_alive(int(pid_text)):
            continue
        with contextlib.suppress(FileNotFoundError):
            if candidate.is_dir():
                shutil.rmtree(candidate)
            else:
                candidate.unlink()
            removed.append(candidate)
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process with this id is running (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_directory(directory: str | os.PathLike) -> None:
    """Flush a directory entry (a completed rename) to disk, where the platform allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write ``target`` to; on success it is synced and renamed over ``target``.

    On any exception the temporary is removed and ``target`` is left as it was.
    Stale temporaries of earlier killed runs are removed first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    temporary = temporary_name(target)
    try:
        yield temporary
        if fsync and temporary.is_file():
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, target)
        if fsync:
            fsync_directory(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


def atomic_write_bytes(target: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``target`` atomically (see :func:`atomic_path`)."""
    with atomic_path(target, fsync=fsync) as temporary:
        temporary.write_bytes(data)
