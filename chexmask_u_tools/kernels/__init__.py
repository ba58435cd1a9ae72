"""Compiled kernels (numba) for the hot loops of ``io``, ``masks`` and ``select``.

The lowest layer of the package: it imports only numpy and numba, never
another subpackage, so every layer above can use it.  Each kernel is a plain
function over arrays that trusts its inputs: the public functions above
validate runs, offsets and coordinates before any kernel writes (numba does
not check bounds).  The numpy implementations in the calling modules stay as
the references the tests and benchmarks compare against.

Kernels are compiled lazily, at their first call, into numba's on-disk cache
(:mod:`chexmask_u_tools.kernels.jit`), never at import.  Importing this
package does not load numba either (:mod:`chexmask_u_tools.kernels.dispatch`
is read at the package's import); the names of :mod:`~chexmask_u_tools.kernels.jit`
below load it at their first use, and so does each kernel module, imported at
its first use as an attribute (``kernels.parse.split_records``).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["CACHE_NOTE", "KernelCacheWarning", "auto_method", "caching_enabled", "compiled", "kernel"]

KERNEL_MODULES = ("fill", "parse", "rle", "soft", "weights")
"""The kernel modules, each imported (with numba) at its first use as an attribute of this package."""


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("chexmask_u_tools.kernels.jit"), name)
    if name in KERNEL_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
