"""One decorator for every kernel: compiled lazily, cached on disk where possible, GIL released.

numba looks for a cache folder in ``NUMBA_CACHE_DIR``, then in the package's
``__pycache__``, then in the user's cache folder, and raises ``cannot cache
function ... no locator available`` at decoration time (that is, at import)
when none is writable: read-only installs, containers and clusters.  The
package must import and run there, so :func:`kernel` then compiles without a
cache (each new process compiles its kernels at their first call) and says
so once, with :class:`KernelCacheWarning`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import TypeVar

import numba

__all__ = ["CACHE_NOTE", "KernelCacheWarning", "auto_method", "caching_enabled", "compiled", "kernel"]

F = TypeVar("F", bound=Callable)

CACHE_NOTE = (
    "chexmask-u-tools: numba found no writable cache folder (NUMBA_CACHE_DIR, the package's __pycache__, "
    "the user's cache folder), so compiled kernels are not cached: each new process compiles them at their "
    "first call (a few seconds). Set NUMBA_CACHE_DIR to a writable folder to keep them."
)

_state = {"caching": True, "warned": False}


class KernelCacheWarning(UserWarning):
    """Compiled kernels cannot be cached on this machine; they still run."""


def caching_enabled() -> bool:
    """Whether kernels defined so far are cached on disk (False once a definition found no cache folder)."""
    return _state["caching"]


def compiled() -> bool:
    """Whether kernels run compiled: False under ``NUMBA_DISABLE_JIT=1``, where they would run as plain Python."""
    return not numba.config.DISABLE_JIT


@functools.cache
def auto_method() -> str:
    """What ``method="auto"`` of a kernel-backed function means here, when no input size favours numpy.

    ``"kernel"``, or ``"numpy"`` where the kernels would run as plain Python
    (``NUMBA_DISABLE_JIT=1``, read once per process as numba does).
    """
    return "kernel" if compiled() else "numpy"


def _no_locator(error: RuntimeError) -> bool:
    return "no locator available" in str(error)


def kernel(function: F) -> F:
    """``numba.njit(cache=True, nogil=True)``, or without ``cache`` where no cache folder is writable.

    No signature is given, so nothing compiles here: the first call compiles
    (or loads from the cache) the specialisation for its argument types.
    """
    if _state["caching"]:
        try:
            return numba.njit(cache=True, nogil=True)(function)
        except RuntimeError as error:
            if not _no_locator(error):
                raise
            _state["caching"] = False
    if not _state["warned"]:
        _state["warned"] = True
        warnings.warn(CACHE_NOTE, KernelCacheWarning, stacklevel=2)
    return numba.njit(nogil=True)(function)
