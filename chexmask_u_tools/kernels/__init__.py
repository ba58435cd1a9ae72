"""Compiled kernels (numba) for the hot loops of ``io``, ``masks`` and ``select``.

The lowest layer of the package: it imports only numpy and numba, never
another subpackage, so every layer above can use it.  Each kernel is a plain
function over arrays that trusts its inputs: the public functions above
validate runs, offsets and coordinates before any kernel writes (numba does
not check bounds).  The numpy implementations in the calling modules stay as
the references the tests and benchmarks compare against.

Kernels are compiled lazily, at their first call, into numba's on-disk cache
(:mod:`chexmask_u_tools.kernels.jit`), never at import.
"""

from chexmask_u_tools.kernels.jit import CACHE_NOTE, KernelCacheWarning, auto_method, caching_enabled, compiled, kernel

__all__ = ["CACHE_NOTE", "KernelCacheWarning", "auto_method", "caching_enabled", "compiled", "kernel"]
