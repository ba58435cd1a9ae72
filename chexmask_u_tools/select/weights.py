"""Training weights from CheXmask-U uncertainty: per sample, per node, per pixel.

Every sample- and node-level formula is written once and works on numpy arrays
(float64 results, NaN where the input is NaN) and on polars expressions or
Series (Float64, null where the input is null), so the same weighting can be
computed inside a lazy scan or on a batch.  Sigma values are pixels of the
row's frame (SPEC section 5).

Sample weights, from an image-level sigma ``s`` (by default ``node_sigma_mean``):

=============  ==============================================================
``exp``        ``w = exp(-s / tau)``; ``tau`` px is the sigma at which the
               weight has fallen to ``1/e``
``inverse``    ``w = (tau / max(s, eps)) ** power``; ``tau`` px is the sigma
               that gets weight 1
``rank``       ``w = high - (high - low) * (r - 1) / (n - 1)``, ``r`` the
               average rank of ``s`` among the ``n`` rows (1 = most certain),
               so weights are spread evenly from ``high`` down to ``low``
               whatever the sigma scale; ``n = 1`` gives ``high``
=============  ==============================================================

then optionally clipped to ``[low, high]`` (:func:`clip_weight`) and divided
by their mean (:func:`normalize_weight`).  Rank weights depend on the whole
set of rows they are computed over (the whole table, or the whole scan).

Node weights (landmark regression losses), from ``sigma_i = (std_x + std_y) / 2``:
``exp`` and ``inverse`` as above per node, or ``inverse_variance``
``w_i = tau**2 / (tau**2 + sigma_i**2)`` (bounded heteroscedastic weighting,
1 for a certain node, 1/2 at ``sigma_i = tau``); normalised by default so the
120 weights of an image average 1 (the loss keeps its scale).

Pixel weight maps (segmentation losses), from the soft masks or uncertainty
bands of :mod:`chexmask_u_tools.masks.soft`; these take numpy arrays or torch tensors:

* :func:`soft_pixel_weights`: ``w = floor + (1 - floor) * |2 p - 1| ** power``
  for soft-mask probability ``p``: 1 where the organ is certainly in or out,
  ``floor`` on the 50 % contour (the formula of
  :func:`chexmask_u_tools.masks.soft.pixel_weight_map`, on soft masks already drawn);
* :func:`band_pixel_weights`: ``w = band_weight`` inside a boolean band, 1 elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import polars as pl

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.kernels.dispatch import resolve_method

__all__ = [
    "SampleWeighting",
    "band_pixel_weights",
    "clip_weight",
    "exp_weight",
    "inverse_weight",
    "node_weights",
    "node_weights_expr",
    "normalize_weight",
    "pixel_weights_method",
    "rank_weight",
    "sample_weights",
    "soft_pixel_weights",
    "soft_pixel_weights_reference",
]

V = TypeVar("V", np.ndarray, pl.Expr, pl.Series)
SampleMethod = Literal["exp", "inverse", "rank", "none"]
NodeMethod = Literal["exp", "inverse", "inverse_variance"]


def _is_polars(values: Any) -> bool:
    return isinstance(values, (pl.Expr, pl.Series))


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"{name} must be a positive finite number, got {value}")
    return value


def _as_float(values: Any) -> Any:
    if _is_polars(values):
        return values.cast(pl.Float64)
    return np.asarray(values, dtype=np.float64)


def exp_weight(sigma: V, tau: float = 8.0) -> V:
    """``w = exp(-sigma / tau)``.

    Parameters
    ----------
    sigma:
        Sigma in pixels (array of any shape, polars Expr or Series).
    tau:
        Decay scale in pixels (> 0): weight ``1/e`` at ``sigma = tau``.

    Examples
    --------
    >>> import numpy as np, polars as pl
    >>> from chexmask_u_tools.select.weights import exp_weight
    >>> exp_weight(np.array([0.0, 8.0, 16.0])).round(3).tolist()
    [1.0, 0.368, 0.135]
    >>> exp_weight(pl.Series([0.0, 8.0])).round(3).to_list()  # polars in, polars out
    [1.0, 0.368]
    """
    tau = _positive("tau", tau)
    sigma = _as_float(sigma)
    if _is_polars(sigma):
        return (-sigma / tau).exp()
    return np.exp(-sigma / tau)


def inverse_weight(sigma: V, tau: float = 8.0, *, power: float = 1.0, eps: float = 1e-3) -> V:
    """``w = (tau / max(sigma, eps)) ** power``: inverse-sigma weighting.

    Parameters
    ----------
    tau:
        Reference sigma in pixels (> 0) whose weight is 1.
    power:
        1 for inverse sigma, 2 for inverse variance.
    eps:
        Floor on sigma in pixels (> 0), so a zero sigma gives a finite weight;
        clip the result (:func:`clip_weight`) to bound it further.

    Examples
    --------
    >>> import numpy as np
    >>> from chexmask_u_tools.select.weights import inverse_weight
    >>> inverse_weight(np.array([0.0, 4.0, 8.0, 16.0])).tolist()  # 8 / max(sigma, 0.001)
    [8000.0, 2.0, 1.0, 0.5]
    >>> inverse_weight(np.array([4.0, 16.0]), power=2).tolist()
    [4.0, 0.25]
    """
    tau = _positive("tau", tau)
    power = _positive("power", power)
    eps = _positive("eps", eps)
    sigma = _as_float(sigma)
    if _is_polars(sigma):
        return (tau / sigma.clip(lower_bound=eps)).pow(power)
    return (tau / np.maximum(sigma, eps)) ** power


def rank_weight(sigma: V, low: float = 0.1, high: float = 1.0) -> V:
    """``w = high - (high - low) * (r - 1) / (n - 1)``, ``r`` the average rank of sigma.

    Ranks are ascending (the smallest sigma gets ``high``), ties share their
    average rank, missing values (NaN / null) get no rank and no weight and do
    not count in ``n``.  ``n = 1`` gives ``high``.  Requires ``0 <= low <= high``.

    Examples
    --------
    >>> import numpy as np
    >>> from chexmask_u_tools.select.weights import rank_weight
    >>> rank_weight(np.array([3.0, 1.0, 3.0, np.nan, 9.0])).round(3).tolist()  # tied 3s share a rank
    [0.55, 1.0, 0.55, nan, 0.1]
    """
    low, high = float(low), float(high)
    if not 0 <= low <= high:
        raise InputError(f"rank weights need 0 <= low <= high, got low={low}, high={high}")
    sigma = _as_float(sigma)
    if isinstance(sigma, pl.Series):
        return sigma.to_frame("s").select(rank_weight(pl.col("s"), low, high)).to_series().alias(sigma.name)
    if isinstance(sigma, pl.Expr):
        n = sigma.count()
        span = pl.when(n > 1).then((sigma.rank("average") - 1) / (n - 1)).otherwise(0.0)
        return high - (high - low) * span
    flat = sigma.reshape(-1)
    finite = ~np.isnan(flat)
    values = flat[finite]
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # Average rank of each run of equal values: (first + last) / 2, 1-based.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    run_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(run_rank, ends - starts)
    n = len(values)
    out = np.full(flat.shape, np.nan)
    out[finite] = high - (high - low) * ((ranks - 1) / (n - 1) if n > 1 else 0.0)
    return out.reshape(sigma.shape)


def clip_weight(weight: V, low: float = 0.0, high: float = 1.0) -> V:
    """Clip weights into ``[low, high]`` (``low <= high``); NaN / null stay missing.

    Examples
    --------
    >>> import numpy as np
    >>> from chexmask_u_tools.select.weights import clip_weight
    >>> clip_weight(np.array([-1.0, 0.5, 2.0, np.nan])).tolist()
    [0.0, 0.5, 1.0, nan]
    """
    low, high = float(low), float(high)
    if not low <= high:
        raise InputError(f"clip range needs low <= high, got ({low}, {high})")
    if _is_polars(weight):
        return weight.clip(low, high)
    return np.clip(np.asarray(weight, dtype=np.float64), low, high)


def normalize_weight(weight: V) -> V:
    """Divide by the mean weight (ignoring missing values), so the weights average 1.

    Examples
    --------
    >>> import numpy as np
    >>> from chexmask_u_tools.select.weights import normalize_weight
    >>> normalize_weight(np.array([1.0, 3.0, np.nan])).tolist()
    [0.5, 1.5, nan]
    """
    if _is_polars(weight):
        return weight / weight.mean()
    weight = np.asarray(weight, dtype=np.float64)
    mean = np.nanmean(weight) if weight.size else 1.0
    if not mean > 0:
        raise InputError("cannot normalise weights whose mean is not positive")
    return weight / mean


@dataclass(frozen=True)
class SampleWeighting:
    """A sample-weight recipe: method, the sigma it reads, clipping, normalisation.

    Parameters
    ----------
    method:
        ``"exp"``, ``"inverse"``, ``"rank"`` (module docstring) or ``"none"``
        (every weight 1).
    stat:
        Column holding the image-level sigma (``node_sigma_mean``,
        ``node_sigma_max``, ``latent_sigma_mean``, ``sigma_heart``...).
    tau, power:
        Parameters of ``exp`` / ``inverse`` (pixels for node sigmas).
    clip:
        ``(low, high)`` applied after the formula (and the bounds of ``rank``),
        or None.
    normalize:
        Divide by the mean weight over the rows the weights are computed on.
    missing:
        Weight given to rows whose ``stat`` is null (None: such rows raise).

    Examples
    --------
    >>> import numpy as np, polars as pl
    >>> import chexmask_u_tools as cxu
    >>> weighting = cxu.SampleWeighting("exp", tau=8.0)  # exp(-sigma / 8), clipped to [0.05, 1]
    >>> weighting.apply(np.array([0.0, 4.0, 8.0, 40.0])).round(3).tolist()
    [1.0, 0.607, 0.368, 0.05]
    >>> table = pl.DataFrame({"node_sigma_mean": [2.0, 8.0, None]})
    >>> table.select(cxu.SampleWeighting("inverse", tau=4.0, missing=0.0).expr())["sample_weight"].to_list()
    [1.0, 0.5, 0.0]
    """

    method: SampleMethod = "exp"
    stat: str = "node_sigma_mean"
    tau: float = 8.0
    power: float = 1.0
    clip: tuple[float, float] | None = (0.05, 1.0)
    normalize: bool = False
    missing: float | None = None

    def __post_init__(self) -> None:
        if self.method not in ("exp", "inverse", "rank", "none"):
            raise InputError(f"sample weighting method must be exp, inverse, rank or none, got {self.method!r}")
        _positive("tau", self.tau)
        _positive("power", self.power)
        if self.clip is not None:
            low, high = (float(v) for v in self.clip)
            if not 0 <= low <= high:
                raise InputError(f"weight clip range needs 0 <= low <= high, got {self.clip}")

    def apply(self, sigma: V) -> V:
        """The weights of ``sigma`` (numpy / polars) under this recipe, before ``missing``."""
        low, high = self.clip if self.clip is not None else (0.0, 1.0)
        if self.method == "none":
            weight = sigma * 0.0 + 1.0 if _is_polars(sigma) else np.ones(np.shape(sigma))
        elif self.method == "exp":
            weight = exp_weight(sigma, self.tau)
        elif self.method == "inverse":
            weight = inverse_weight(sigma, self.tau, power=self.power)
        else:
            weight = rank_weight(sigma, low, high)
        if self.clip is not None:
            weight = clip_weight(weight, low, high)
        if self.normalize:
            weight = normalize_weight(weight)
        return weight

    def expr(self) -> pl.Expr:
        """Polars expression of the weight (Float64, null for null ``stat`` unless ``missing`` is set)."""
        weight = self.apply(pl.col(self.stat))
        if self.missing is not None:
            weight = weight.fill_null(float(self.missing))
        return weight.alias("sample_weight")


def sample_weights(frame: pl.DataFrame | pl.LazyFrame, weighting: SampleWeighting | None = None) -> np.ndarray:
    """Evaluate a :class:`SampleWeighting` over a table: ``(N,)`` float32 array.

    If the table has a ``rule_weight`` column (:func:`~chexmask_u_tools.select.rules.apply_rules`),
    it is multiplied in.  Raises :class:`~chexmask_u_tools.errors.InputError`
    when ``stat`` is missing from the table or null on a row and ``missing`` is None.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> table = cxu.load_sample()
    >>> weights = cxu.sample_weights(table, cxu.SampleWeighting("exp", tau=8.0))
    >>> weights.shape, weights.dtype, [round(float(w), 3) for w in weights[:3]]
    ((200,), dtype('float32'), [0.206, 0.276, 0.42])
    >>> cxu.sample_weights(table.head(4), cxu.SampleWeighting("rank", clip=(0.1, 1.0))).tolist()
    [0.10000000149011612, 0.4000000059604645, 0.699999988079071, 1.0]
    """
    weighting = weighting or SampleWeighting()
    names = frame.collect_schema().names()
    if weighting.method != "none" and weighting.stat not in names:
        raise InputError(f"sample weighting reads column {weighting.stat!r}, which the table does not have")
    weight = weighting.expr() if weighting.method != "none" else pl.repeat(1.0, pl.len(), dtype=pl.Float64)
    if "rule_weight" in names:
        weight = weight * pl.col("rule_weight").cast(pl.Float64)
    values = frame.lazy().select(weight.alias("w")).collect()["w"]
    if values.null_count():
        raise InputError(
            f"{values.null_count()} rows have no {weighting.stat!r} for the sample weights; "
            "set SampleWeighting(missing=...) to give them a weight"
        )
    return values.to_numpy().astype(np.float32)


# --------------------------------------------------------------------------- nodes


def _node_formula(sigma: Any, method: str, tau: float, power: float) -> Any:
    if method == "exp":
        return exp_weight(sigma, tau)
    if method == "inverse":
        return inverse_weight(sigma, tau, power=power)
    if method == "inverse_variance":
        sigma = _as_float(sigma)
        return tau**2 / (tau**2 + sigma * sigma)
    raise InputError(f"node weighting method must be exp, inverse or inverse_variance, got {method!r}")


def node_weights(
    std: np.ndarray,
    method: NodeMethod = "inverse_variance",
    *,
    tau: float = 8.0,
    power: float = 1.0,
    clip: tuple[float, float] | None = None,
    normalize: bool = True,
) -> np.ndarray:
    """Per-node weights for a landmark loss.

    Parameters
    ----------
    std:
        ``(..., 120, 2)`` per-node std (x, y) in pixels, or ``(..., 120)`` node
        sigmas already averaged.
    method:
        ``"inverse_variance"`` (``tau**2 / (tau**2 + sigma**2)``), ``"exp"``
        (``exp(-sigma / tau)``) or ``"inverse"`` (``(tau / sigma) ** power``).
    tau, power:
        Formula parameters (tau in pixels).
    clip:
        ``(low, high)`` applied before normalisation, or None.
    normalize:
        Divide each image's weights by their mean over its nodes.

    Returns
    -------
    ``(..., 120)`` float32.

    Raises
    ------
    InputError
        ``std`` of another shape, a negative std, an unknown ``method`` or a
        non-positive ``tau`` / ``power``.

    Examples
    --------
    >>> import numpy as np
    >>> import chexmask_u_tools as cxu
    >>> std = np.full((120, 2), 4.0)  # px
    >>> std[94:] = 12.0  # an unsure heart
    >>> weights = cxu.node_weights(std)  # 64 / (64 + sigma**2), then mean 1 over the nodes
    >>> weights.shape, weights.dtype, weights[[0, 94]].astype(float).round(3).tolist()
    ((120,), dtype('float32'), [1.154, 0.444])
    >>> cxu.node_weights(std, normalize=False)[[0, 94]].astype(float).round(3).tolist()
    [0.8, 0.308]
    """
    std = np.asarray(std, dtype=np.float64)
    if std.ndim >= 2 and std.shape[-2:] == (120, 2):
        sigma = std.mean(axis=-1)
    elif std.ndim >= 1 and std.shape[-1] == 120:
        sigma = std
    else:
        raise InputError(f"node weights need std of shape (..., 120, 2) or sigmas (..., 120), got {std.shape}")
    if (sigma < 0).any():
        raise InputError("node std must be non-negative")
    weight = _node_formula(sigma, method, _positive("tau", tau), _positive("power", power))
    if clip is not None:
        weight = clip_weight(weight, *clip)
    if normalize:
        mean = weight.mean(axis=-1, keepdims=True)
        weight = weight / np.where(mean > 0, mean, 1.0)
    return weight.astype(np.float32)


def node_weights_expr(
    method: NodeMethod = "inverse_variance",
    *,
    tau: float = 8.0,
    power: float = 1.0,
    clip: tuple[float, float] | None = None,
    normalize: bool = True,
    std_column: str = "landmarks_std",
) -> pl.Expr:
    """Polars form of :func:`node_weights`: ``Array(Float64, 120)`` per row, null without std.

    Examples
    --------
    >>> import numpy as np, polars as pl
    >>> from chexmask_u_tools.select.weights import node_weights_expr
    >>> std = np.full((2, 120, 2), 4.0, dtype=np.float32)
    >>> std[1, 94:] = 12.0  # the second row is unsure of its heart
    >>> weights = pl.DataFrame({"landmarks_std": std}).select(node_weights_expr()).to_series().to_numpy()
    >>> weights.shape, weights[:, [0, 94]].round(3).tolist()  # nodes 0 (right lung) and 94 (heart)
    ((2, 120), [[1.0, 1.0], [1.154, 0.444]])
    """
    from chexmask_u_tools.select.uncertainty import node_sigma

    weight = _node_formula(pl.element(), method, _positive("tau", tau), _positive("power", power))
    if clip is not None:
        weight = clip_weight(weight, *clip)
    if normalize:
        weight = weight / weight.mean()
    return node_sigma(std_column).arr.eval(weight.cast(pl.Float64)).alias("node_weight")


# --------------------------------------------------------------------------- pixels


def soft_pixel_weights(soft: Any, *, floor: float = 0.1, power: float = 1.0, reduce: Literal["min", "mean"] | None = None) -> Any:
    """``w = floor + (1 - floor) * |2 p - 1| ** power`` from soft-mask probabilities.

    The formula of :func:`chexmask_u_tools.masks.soft.pixel_weight_map`, applied to
    soft masks already computed (so a dataset does not draw them twice).

    Parameters
    ----------
    soft:
        Soft masks ``p`` in [0, 1], numpy array or torch tensor of any shape,
        e.g. ``(3, H, W)`` (organ channels) or ``(B, 3, H, W)``.
    floor:
        Weight on the 50 % contour (``p = 0.5``), in [0, 1]; pixels certainly in
        or out (``p`` 0 or 1) get 1.
    power:
        > 0; below 1 the weight recovers faster away from the contour
        (``power = 2`` gives ``1 - (1 - floor) * 4 p (1 - p)``).
    reduce:
        None: one map per channel (same shape as ``soft``); ``"min"`` / ``"mean"``:
        combine the organ axis (``-3``) into one ``(..., H, W)`` map.

    Returns
    -------
    Same type as ``soft``; float32 for numpy input.

    Examples
    --------
    >>> import numpy as np
    >>> import chexmask_u_tools as cxu
    >>> soft = np.array([[[0.0, 0.5, 1.0]], [[0.0, 0.0, 0.75]]], dtype=np.float32)  # 2 organs, 1 x 3 pixels
    >>> cxu.soft_pixel_weights(soft).astype(float).round(3).tolist()
    [[[1.0, 0.1, 1.0]], [[1.0, 1.0, 0.55]]]
    >>> cxu.soft_pixel_weights(soft, reduce="min").astype(float).round(3).tolist()
    [[1.0, 0.1, 0.55]]
    """
    floor, power = float(floor), float(power)
    if not 0 <= floor <= 1:
        raise InputError(f"floor must lie in [0, 1], got {floor}")
    _positive("power", power)
    if reduce not in (None, "min", "mean"):
        raise InputError(f"reduce must be None, 'min' or 'mean', got {reduce!r}")
    if isinstance(soft, (list, tuple)) or (isinstance(soft, np.ndarray) and soft.dtype != np.float32):
        soft = np.asarray(soft, dtype=np.float32)
    if reduce is not None and soft.ndim < 3:
        raise InputError(f"reduce={reduce!r} needs an organ axis (..., C, H, W), got shape {tuple(soft.shape)}")
    if isinstance(soft, np.ndarray) and soft.size and pixel_weights_method(power) == "kernel":
        return _soft_weights_kernel(soft, floor, power, reduce)
    return soft_pixel_weights_reference(soft, floor=floor, power=power, reduce=reduce)


def soft_pixel_weights_reference(soft: Any, *, floor: float = 0.1, power: float = 1.0,
                                 reduce: Literal["min", "mean"] | None = None) -> Any:
    """:func:`soft_pixel_weights` in numpy / torch operations: the reference of its kernel, and its torch path.

    ``soft``: a float32 numpy array or a torch tensor; arguments already checked.

    Examples
    --------
    >>> import numpy as np
    >>> soft = np.array([[[0.0, 0.5, 1.0]], [[0.0, 0.0, 0.75]]], dtype=np.float32)
    >>> soft_pixel_weights_reference(soft, reduce="min").astype(float).round(3).tolist()
    [[1.0, 0.1, 0.55]]
    """
    weight = floor + (1.0 - floor) * abs(2.0 * soft - 1.0) ** power
    if reduce is None:
        return weight
    if reduce == "min":
        return weight.min(-3) if isinstance(weight, np.ndarray) else weight.amin(-3)
    return weight.mean(-3)


def pixel_weights_method(power: float = 1.0) -> str:
    """What :func:`soft_pixel_weights` (with this ``power``) and :func:`band_pixel_weights` use on numpy input.

    ``"kernel"``: one compiled pass, 4-9x faster than numpy on (3, 512, 512)
    maps for ``power`` 1, 2 and 0.5 (8x for the band weights);
    ``"numpy"`` for any other ``power`` (numpy's vectorized ``pow`` beats the
    kernel's per-pixel call, 1.3 against 3.6 ms) and where numba's JIT is
    disabled (``NUMBA_DISABLE_JIT=1``).  ``scripts/bench_soft.py`` prints
    both.  Torch tensors always take torch operations.

    Examples
    --------
    >>> pixel_weights_method(), pixel_weights_method(2.0), pixel_weights_method(1.5)
    ('kernel', 'kernel', 'numpy')
    """
    if float(power) not in (1.0, 2.0, 0.5):
        return "numpy"
    return resolve_method("auto")  # numba loads here, at the first weight map (not at import)


def _soft_weights_kernel(soft: np.ndarray, floor: float, power: float, reduce: str | None) -> np.ndarray:
    """:func:`soft_pixel_weights` of a float32 numpy array with the compiled kernel."""
    from chexmask_u_tools.kernels import weights as kernels

    soft = np.ascontiguousarray(soft)
    if reduce is None:
        shape, batch, channels = soft.shape, 1, 1
    else:
        shape = soft.shape[:-3] + soft.shape[-2:]
        channels = soft.shape[-3]
        batch = int(np.prod(soft.shape[:-3], dtype=np.int64))
    pixels = soft.size // (batch * channels)
    out = np.empty(shape, dtype=np.float32)
    mode = {None: kernels.REDUCE_NONE, "min": kernels.REDUCE_MIN, "mean": kernels.REDUCE_MEAN}[reduce]
    kernels.soft_weights(soft.reshape(batch, channels, pixels), floor, power, mode,
                         out.reshape(batch, 1 if reduce else channels, pixels))
    return out


def band_pixel_weights(band: Any, band_weight: float = 0.2) -> Any:
    """``w = band_weight`` inside a boolean uncertainty band, 1 elsewhere (numpy or torch, float32).

    Examples
    --------
    >>> from chexmask_u_tools.select.weights import band_pixel_weights
    >>> weights = band_pixel_weights([[True, False, False]], band_weight=0.25)
    >>> weights.dtype, weights.tolist()
    (dtype('float32'), [[0.25, 1.0, 1.0]])
    """
    band_weight = float(band_weight)
    if not 0 <= band_weight <= 1:
        raise InputError(f"band_weight must lie in [0, 1], got {band_weight}")
    if isinstance(band, (list, tuple, np.ndarray)):
        band = np.ascontiguousarray(band, dtype=bool)
        if not band.size or pixel_weights_method() == "numpy":
            return np.where(band, np.float32(band_weight), np.float32(1.0))
        from chexmask_u_tools.kernels import weights as kernels

        out = np.empty(band.shape, dtype=np.float32)
        kernels.band_weights(band.reshape(-1).view(np.uint8), band_weight, out.reshape(-1))
        return out
    return 1.0 - (1.0 - band_weight) * band.float()
