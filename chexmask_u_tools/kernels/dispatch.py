"""What a kernel-backed function's ``method=`` argument means, without loading numba.

The functions backed by a kernel (the RLE decoders and encoders, the exact
fill) take ``method="auto" | "kernel" | "numpy"``; this module resolves the
value once per process for all of them.  It imports no numba, so the modules
above can import it at their own import: numba loads only when ``"auto"`` is
first resolved (:func:`chexmask_u_tools.kernels.jit.auto_method`).
"""

from __future__ import annotations

import functools

__all__ = ["METHODS", "resolve_method"]

METHODS = ("auto", "kernel", "numpy")
"""Values of the ``method=`` argument of the kernel-backed functions."""


def resolve_method(method: object) -> str | None:
    """``"kernel"`` or ``"numpy"`` for a value of :data:`METHODS`; None for any other (the caller raises its error).

    Examples
    --------
    >>> resolve_method("numpy"), resolve_method("fast")
    ('numpy', None)
    """
    if type(method) is str and method in METHODS:
        return _resolved(method)
    return None


@functools.cache
def _resolved(method: str) -> str:
    if method != "auto":
        return method
    from chexmask_u_tools.kernels.jit import auto_method  # numba loads here, at the first call

    return auto_method()
