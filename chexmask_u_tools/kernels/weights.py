"""Pixel weight kernels: the formulas of ``select.weights`` in one pass over float32 maps.

``soft_weights`` computes ``floor + (1 - floor) * |2 p - 1| ** power`` per
pixel (and optionally combines the organ axis by min or mean) with the same
float32 operations as the numpy formula; ``band_weights`` maps a boolean band
to ``band_weight`` / 1.  numpy takes several passes (and temporaries) for the
same; these loops read each input once and vectorize.  The callers check
shapes, dtypes and parameters.
"""

from __future__ import annotations

import numba
import numpy as np

from chexmask_u_tools.kernels.jit import kernel

__all__ = ["REDUCE_MEAN", "REDUCE_MIN", "REDUCE_NONE", "band_weights", "soft_weights"]

REDUCE_NONE, REDUCE_MIN, REDUCE_MEAN = range(3)
_PLAIN, _SQUARE, _ROOT, _POW = range(4)  # how |2 p - 1| ** power is evaluated, as numpy's ``**`` does

# The pixel loop is inlined at numba's level with constant ``kind`` and
# ``combine``, so each combination compiles to its own branch-free loop that
# LLVM vectorizes (compiled and cached with the kernel that calls it).
_inline = numba.njit(inline="always", nogil=True)


@_inline
def _weight_loop(src, dst, w0, w1, power, kind, combine):
    for i in range(src.shape[0]):
        u = abs(np.float32(2.0) * src[i] - np.float32(1.0))
        if kind == _PLAIN:
            v = u
        elif kind == _SQUARE:
            v = u * u
        elif kind == _ROOT:
            v = np.sqrt(u)
        else:
            v = u**power
        w = w0 + w1 * v
        if combine == REDUCE_NONE:
            dst[i] = w
        elif combine == REDUCE_MIN:
            dst[i] = min(dst[i], w)
        else:
            dst[i] = dst[i] + w


@_inline
def _weights_of(src, dst, w0, w1, power, kind, combine):
    if kind == _PLAIN:
        _weight_loop(src, dst, w0, w1, power, _PLAIN, combine)
    elif kind == _SQUARE:
        _weight_loop(src, dst, w0, w1, power, _SQUARE, combine)
    elif kind == _ROOT:
        _weight_loop(src, dst, w0, w1, power, _ROOT, combine)
    else:
        _weight_loop(src, dst, w0, w1, power, _POW, combine)


@kernel
def soft_weights(soft, floor, power, reduce, out):
    """Weights of float32 ``soft`` (B, C, P) into float32 ``out``: (B, C, P), or (B, 1, P) when ``reduce`` combines
    the C maps (``REDUCE_MIN`` / ``REDUCE_MEAN``: the first map is written, the others folded in).

    ``power`` 1, 2 and 0.5 are the plain value, its square and its square root
    (as numpy's ``**`` evaluates them); other powers go through ``pow``.
    """
    w0 = np.float32(floor)
    w1 = np.float32(1.0 - floor)
    power32 = np.float32(power)
    kind = _PLAIN if power == 1.0 else _SQUARE if power == 2.0 else _ROOT if power == 0.5 else _POW
    batch, channels, pixels = soft.shape
    for b in range(batch):
        for c in range(channels):
            if reduce == REDUCE_NONE:
                _weights_of(soft[b, c], out[b, c], w0, w1, power32, kind, REDUCE_NONE)
            elif c == 0:
                _weights_of(soft[b, c], out[b, 0], w0, w1, power32, kind, REDUCE_NONE)
            elif reduce == REDUCE_MIN:
                _weights_of(soft[b, c], out[b, 0], w0, w1, power32, kind, REDUCE_MIN)
            else:
                _weights_of(soft[b, c], out[b, 0], w0, w1, power32, kind, REDUCE_MEAN)
        if reduce == REDUCE_MEAN:
            dst = out[b, 0]
            count = np.float32(channels)
            for i in range(pixels):
                dst[i] = np.divide(dst[i], count)  # np.divide: no zero-division check, so it vectorizes


@kernel
def band_weights(band, band_weight, out):
    """``band_weight`` where the uint8 (bool) ``band`` (P,) is set, 1 elsewhere, into float32 ``out`` (P,)."""
    inside = np.float32(band_weight)
    one = np.float32(1.0)
    for i in range(band.shape[0]):
        out[i] = inside if band[i] != 0 else one
