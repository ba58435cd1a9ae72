"""Image corruptions of the CheXmask-U robustness experiments (SPEC section 5), in NumPy.

All functions take a 2-D grayscale image and return a new array of the same
shape; the input is never modified.  Each has a severity parameter (noise std,
square side, blur sigma; severity 0 returns an unchanged copy) and, where
randomness is involved, a ``seed`` so that runs repeat exactly.

* :func:`gaussian_noise` - the paper's noise: ``N(0, std^2)`` on the 0..255 scale
  added to the uint8 image, rounded and clipped back to uint8 (std 0..190 in the paper).
* :func:`occlude` - black (zero) squares centred on chosen landmarks.
* :func:`gaussian_blur` - separable Gaussian blur with half-sample symmetric padding,
  which keeps the image's mean (exactly, before any rounding to uint8).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.layout import N_NODES, ORGAN_SLICES, ORGANS

__all__ = ["CORRUPTIONS", "corrupt", "gaussian_blur", "gaussian_kernel", "gaussian_noise", "occlude", "occlusion_nodes"]

CORRUPTIONS: tuple[str, ...] = ("noise", "occlusion", "blur")
"""Names accepted by :func:`corrupt`."""


def _image(image: object, *, uint8: bool) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"image must be a non-empty 2-D grayscale array, got shape {arr.shape}")
    if uint8 and arr.dtype != np.uint8:
        raise InputError(f"image must be uint8 (0..255), got dtype {arr.dtype}")
    if not uint8 and not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"image must hold real numbers, got dtype {arr.dtype}")
    return arr


def _severity(value: float, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(value) or value < 0:
        raise InputError(f"{name} must be finite and >= 0, got {value}")
    return value


def gaussian_noise(image: np.ndarray, std: float, seed: int | np.random.Generator | None = None) -> np.ndarray:
    """Add zero-mean Gaussian noise to a uint8 image, round and clip to 0..255.

    Parameters
    ----------
    image:
        (H, W) uint8.
    std:
        Noise standard deviation on the 0..255 scale (the paper uses 0..190).
    seed:
        Seed or generator of ``numpy.random.default_rng``.

    Returns
    -------
    (H, W) uint8 ``clip(rint(image + N(0, std^2)), 0, 255)``.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> image = np.full((4, 6), 100, dtype=np.uint8)
    >>> noisy = cxu.gaussian_noise(image, 20.0, seed=0)
    >>> noisy.dtype, noisy[0].tolist()
    (dtype('uint8'), [103, 97, 113, 102, 89, 107])
    >>> bool((cxu.gaussian_noise(image, 20.0, seed=0) == noisy).all())  # the same seed, the same noise
    True
    >>> int(cxu.gaussian_noise(image, 500.0, seed=1).max())  # clipped to 0..255
    255
    """
    image = _image(image, uint8=True)
    std = _severity(std, "noise std")
    if std == 0:
        return image.copy()
    rng = np.random.default_rng(seed)
    noisy = image + rng.normal(0.0, std, size=image.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def occlusion_nodes(
    nodes: int | str | Sequence[int] | None = None, seed: int | np.random.Generator | None = None
) -> np.ndarray:
    """Resolve a node choice to sorted unique node indices (int64).

    ``None``: all 120 nodes; an organ name: its nodes; an int ``k``: ``k`` distinct
    nodes drawn at random with ``seed``; a sequence: those indices (0..119).

    Examples
    --------
    >>> from chexmask_u_tools.analysis.corruptions import occlusion_nodes
    >>> heart = occlusion_nodes("heart")
    >>> len(heart), int(heart[0]), int(heart[-1])
    (26, 94, 119)
    >>> occlusion_nodes([5, 3, 5]).tolist()
    [3, 5]
    >>> len(occlusion_nodes(10, seed=0)), len(occlusion_nodes())
    (10, 120)
    """
    if nodes is None:
        return np.arange(N_NODES)
    if isinstance(nodes, str):
        if nodes not in ORGAN_SLICES:
            raise InputError(f"unknown organ {nodes!r}; expected one of {ORGANS}")
        part = ORGAN_SLICES[nodes]
        return np.arange(part.start, part.stop)
    if isinstance(nodes, (int, np.integer)) and not isinstance(nodes, bool):
        if not 0 <= nodes <= N_NODES:
            raise InputError(f"number of occluded nodes must be in 0..{N_NODES}, got {nodes}")
        return np.sort(np.random.default_rng(seed).choice(N_NODES, size=int(nodes), replace=False))
    index = np.asarray(nodes)
    if index.ndim != 1 or (index.size and not np.issubdtype(index.dtype, np.integer)):
        raise InputError("nodes must be None, an organ name, a count, or a 1-D sequence of node indices")
    if index.size and (index.min() < 0 or index.max() >= N_NODES):
        raise InputError(f"node indices must lie in 0..{N_NODES - 1}")
    return np.unique(index.astype(np.int64))


def occlude(
    image: np.ndarray,
    landmarks: np.ndarray,
    size: float,
    nodes: int | str | Sequence[int] | None = None,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Black out squares of side ``size`` pixels centred on chosen landmarks.

    Parameters
    ----------
    image:
        (H, W) array of any real dtype; occluded pixels become exactly 0.
    landmarks:
        (120, 2) x, y in pixels of ``image`` (x = column, y = row, origin at the
        top-left pixel centre).  Points off the image occlude only the part of
        their square that is on it.
    size:
        Square side in pixels (the severity, rounded to whole pixels).  Along
        each axis a square covers the ``round(size)`` pixels from
        ``ceil(c - size / 2)`` on, i.e. those whose centres lie in
        ``[c - size/2, c + size/2)`` for a whole ``size``; size 1 blacks out the
        pixel nearest the landmark.
    nodes, seed:
        Which landmarks (see :func:`occlusion_nodes`; default all).

    Returns
    -------
    A copy of ``image`` with the squares set to 0.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> image = np.full((4, 6), 100, dtype=np.uint8)
    >>> landmarks = np.full((120, 2), -100.0)  # off the image: nothing to black out
    >>> landmarks[94] = (2.0, 1.0)  # the first heart node at x = 2, y = 1
    >>> cxu.occlude(image, landmarks, 2, nodes=[94])
    array([[100,   0,   0, 100, 100, 100],
           [100,   0,   0, 100, 100, 100],
           [100, 100, 100, 100, 100, 100],
           [100, 100, 100, 100, 100, 100]], dtype=uint8)
    >>> int((cxu.occlude(image, landmarks, 3, nodes="heart") == 0).sum())  # a 3 x 3 square
    9
    """
    image = _image(image, uint8=False)
    size = _severity(size, "square size")
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (N_NODES, 2):
        raise InputError(f"landmarks must have shape ({N_NODES}, 2), got {points.shape}")
    chosen = occlusion_nodes(nodes, seed)
    out = image.copy()
    if size == 0 or chosen.size == 0:
        return out
    centres = points[chosen]
    if not np.isfinite(centres).all():
        raise InputError("the chosen landmarks contain NaN or infinite coordinates")
    height, width = image.shape
    low = np.ceil(centres - size / 2).astype(np.int64)
    high = low + int(round(size))
    low = np.clip(low, 0, [width, height])
    high = np.clip(high, 0, [width, height])
    for (c0, r0), (c1, r1) in zip(low, high):
        out[r0:r1, c0:c1] = 0
    return out


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """1-D Gaussian weights (float64, odd length ``2 * ceil(truncate * sigma) + 1``) summing to 1.

    Examples
    --------
    >>> from chexmask_u_tools.analysis.corruptions import gaussian_kernel
    >>> gaussian_kernel(1.0, truncate=2.0).round(3).tolist()
    [0.054, 0.244, 0.403, 0.244, 0.054]
    >>> gaussian_kernel(0.0).tolist()  # no blur
    [1.0]
    """
    sigma = _severity(sigma, "blur sigma")
    radius = int(np.ceil(truncate * sigma))
    if sigma == 0 or radius == 0:
        return np.ones(1)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def _blur_axis(values: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    radius = len(kernel) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (radius, radius)
    # numpy "symmetric" repeats the edge sample (scipy's "reflect"): every input sample then keeps
    # total weight 1, so the sum (and the mean) of the image is preserved.
    padded = np.pad(values, pad, mode="symmetric")
    out = np.zeros_like(values)
    length = values.shape[axis]
    for k, weight in enumerate(kernel):
        out += weight * (padded[k : k + length] if axis == 0 else padded[:, k : k + length])
    return out


def gaussian_blur(image: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Separable Gaussian blur with half-sample symmetric ("reflect") padding.

    Parameters
    ----------
    image:
        (H, W) uint8, integer or float array.
    sigma:
        Standard deviation in pixels (the severity); 0 returns a copy.
    truncate:
        Kernel radius in sigmas.

    Returns
    -------
    Same shape and dtype as ``image``: float images are returned blurred as
    float64 sums cast back (the mean is preserved up to float rounding);
    integer images are rounded and clipped to their dtype's range.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> line = np.array([[0, 0, 0, 255, 0, 0, 0]], dtype=np.uint8)
    >>> cxu.gaussian_blur(line, 1.0)
    array([[  1,  14,  62, 102,  62,  14,   1]], dtype=uint8)
    >>> spot = np.zeros((5, 5))
    >>> spot[2, 2] = 1.0
    >>> blurred = cxu.gaussian_blur(spot, 1.0)
    >>> round(float(blurred[2, 2]), 3), round(float(blurred.sum()), 6)  # the mean is kept
    (0.159, 1.0)
    """
    image = _image(image, uint8=False)
    kernel = gaussian_kernel(sigma, truncate)
    if len(kernel) == 1:
        return image.copy()
    blurred = _blur_axis(_blur_axis(image.astype(np.float64), kernel, 0), kernel, 1)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return np.clip(np.rint(blurred), info.min, info.max).astype(image.dtype)
    return blurred.astype(image.dtype)


def corrupt(
    image: np.ndarray,
    kind: str,
    severity: float,
    *,
    landmarks: np.ndarray | None = None,
    nodes: int | str | Sequence[int] | None = None,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Apply one corruption by name: ``"noise"`` (std), ``"occlusion"`` (square side; needs
    ``landmarks``) or ``"blur"`` (sigma) to a uint8 image.

    Examples
    --------
    >>> from chexmask_u_tools.analysis.corruptions import corrupt
    >>> image = np.full((4, 6), 100, dtype=np.uint8)
    >>> corrupt(image, "blur", 1.0).dtype, corrupt(image, "noise", 10.0, seed=0).shape
    (dtype('uint8'), (4, 6))
    >>> corrupt(image, "jpeg", 2)
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.InputError: unknown corruption 'jpeg'; expected one of ('noise', 'occlusion', 'blur')
    """
    if kind == "noise":
        return gaussian_noise(image, severity, seed)
    if kind == "occlusion":
        if landmarks is None:
            raise InputError("occlusion needs the landmarks to centre the squares on")
        return occlude(image, landmarks, severity, nodes, seed)
    if kind == "blur":
        return gaussian_blur(image, severity)
    raise InputError(f"unknown corruption {kind!r}; expected one of {CORRUPTIONS}")
