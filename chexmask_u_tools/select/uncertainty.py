"""Uncertainty summaries of the canonical table, as composable polars expressions.

Definitions (SPEC section 5): a node's scalar uncertainty is
``sigma_node = (std_x + std_y) / 2`` in pixels of the row's frame; an image's is
the mean of ``sigma_node`` over its 120 nodes.  The latent uncertainty of an
image is the mean of its 64 posterior sigmas.

Every summary function here returns a ``polars.Expr``, so the summaries work
the same on an eager ``DataFrame`` and on a ``LazyFrame`` (where filters on
them are pushed into the scan), e.g.::

    lf.filter(cxu.node_sigma_mean() < 8.0)

Rows without the data: an expression is null on a row whose ``landmarks_std``
(or ``latent_sigma``) is null, as in the parent CheXmask files, which carry no
std.  A comparison with null is null, and ``filter`` drops those rows, so the
line above keeps *no* row of a file without std and says nothing: an
expression cannot raise on its own.  Check the data first with
:func:`require_uncertainty` (``cxu.require_uncertainty(table, "std")``), which
raises a :class:`~chexmask_u_tools.errors.RecordError` saying how many rows
lack it, or drops them when asked (``missing="drop"``); the rules and filters
(:func:`~chexmask_u_tools.select.rules.apply_rules`,
:func:`~chexmask_u_tools.select.filtering.apply_filters`) do this themselves.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import numpy as np
import polars as pl

from chexmask_u_tools.errors import InputError, RecordError
from chexmask_u_tools.layout import N_NODES, ORGAN_SLICES, ORGANS
from chexmask_u_tools.schema import ORGAN_SIGMA_COLUMNS, as_polars

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)

#: What :func:`require_uncertainty` checks: kind -> the column holding it.
UNCERTAINTY_COLUMNS: dict[str, str] = {"std": "landmarks_std", "latent": "latent_sigma"}


def _flat_std(std_column: str) -> pl.Expr:
    """``(120, 2)`` stds as one 240-value list ``x0, y0, x1, y1, ...``.

    Summaries are computed on this flat view with slices and strides, which
    polars vectorizes; a per-row ``arr.eval`` would be two orders slower.
    """
    return pl.col(std_column).reshape((-1, 2 * N_NODES)).arr.to_list()


def _node_sigma_list(std_column: str) -> pl.Expr:
    flat = _flat_std(std_column)
    return (flat.list.gather_every(2, 0) + flat.list.gather_every(2, 1)) / 2


def node_sigma(std_column: str = "landmarks_std") -> pl.Expr:
    """Per-node sigma ``(std_x + std_y) / 2``: ``Array(Float32, 120)``, null without std.

    Examples
    --------
    >>> import numpy as np, polars as pl
    >>> import chexmask_u_tools as cxu
    >>> std = np.full((2, 120, 2), 4.0, dtype=np.float32)  # 2 rows, std_x and std_y of each node
    >>> std[1, 94:] = (10.0, 6.0)  # the second row is unsure of its heart (nodes 94..119)
    >>> table = pl.DataFrame({"landmarks_std": std})
    >>> sigma = table.select(cxu.node_sigma()).to_series().to_numpy()
    >>> sigma.shape, sigma[1, 93:96].tolist()
    ((2, 120), [4.0, 8.0, 8.0])
    """
    return _node_sigma_list(std_column).list.to_array(N_NODES).cast(pl.Array(pl.Float32, N_NODES))


def node_sigma_mean(std_column: str = "landmarks_std") -> pl.Expr:
    """Image-level sigma: mean node sigma over the 120 nodes (Float32, pixels).

    Equal to the mean of all 240 stds, which is how it is computed.  Null on
    rows without std: check with :func:`require_uncertainty` before filtering
    on it (a filter silently drops null rows).

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> table = cxu.load_sample()
    >>> sigma = table.select(cxu.node_sigma_mean())["landmarks_std"]
    >>> [round(value, 2) for value in sigma.head(2)]
    [12.63, 10.3]
    >>> cxu.require_uncertainty(table, "std").filter(cxu.node_sigma_mean() < 8.0).height
    104
    """
    return pl.col(std_column).reshape((-1, 2 * N_NODES)).arr.mean().cast(pl.Float32)


def node_sigma_max(std_column: str = "landmarks_std") -> pl.Expr:
    """Largest node sigma of the image (Float32, pixels), null without std.

    Examples
    --------
    >>> import numpy as np, polars as pl
    >>> import chexmask_u_tools as cxu
    >>> std = np.full((2, 120, 2), 4.0, dtype=np.float32)  # 2 rows, std_x and std_y of each node
    >>> std[1, 94:] = (10.0, 6.0)  # the second row is unsure of its heart (nodes 94..119)
    >>> table = pl.DataFrame({"landmarks_std": std})
    >>> table.select(cxu.node_sigma_max()).to_series().to_list()
    [4.0, 8.0]
    """
    # max over nodes of (x + y) / 2 is max(x + y) / 2 (halving is exact and keeps the order); the per-node
    # sums of the (120, 2) array are one vectorized pass, several times faster than a list round trip.
    return (pl.col(std_column).arr.eval(pl.element().arr.sum()).arr.max() / 2).cast(pl.Float32)


def node_sigma_quantile(q: float, std_column: str = "landmarks_std") -> pl.Expr:
    """The ``q`` quantile (linear interpolation) of the image's 120 node sigmas.

    Raises
    ------
    InputError
        ``q`` outside [0, 1].

    Examples
    --------
    >>> import numpy as np, polars as pl
    >>> import chexmask_u_tools as cxu
    >>> std = np.full((2, 120, 2), 4.0, dtype=np.float32)  # 2 rows, std_x and std_y of each node
    >>> std[1, 94:] = (10.0, 6.0)  # the second row is unsure of its heart (nodes 94..119)
    >>> table = pl.DataFrame({"landmarks_std": std})
    >>> table.select(median=cxu.node_sigma_quantile(0.5), p90=cxu.node_sigma_quantile(0.9)).rows()
    [(4.0, 4.0), (4.0, 8.0)]
    """
    if not 0.0 <= q <= 1.0:
        raise InputError(f"quantile must lie in [0, 1], got {q}")
    return (
        _node_sigma_list(std_column)
        .list.eval(pl.element().quantile(q, interpolation="linear"))
        .list.first()
        .cast(pl.Float32)
    )


def organ_sigma_mean(organ: str, std_column: str = "landmarks_std") -> pl.Expr:
    """Mean node sigma over one organ's nodes (Float32, pixels).

    Raises
    ------
    InputError
        An unknown organ (expected one of ``right_lung``, ``left_lung``, ``heart``).

    Examples
    --------
    >>> import numpy as np, polars as pl
    >>> import chexmask_u_tools as cxu
    >>> std = np.full((2, 120, 2), 4.0, dtype=np.float32)  # 2 rows, std_x and std_y of each node
    >>> std[1, 94:] = (10.0, 6.0)  # the second row is unsure of its heart (nodes 94..119)
    >>> table = pl.DataFrame({"landmarks_std": std})
    >>> table.select(heart=cxu.organ_sigma_mean("heart"), lung=cxu.organ_sigma_mean("right_lung")).rows()
    [(4.0, 4.0), (8.0, 4.0)]
    """
    if organ not in ORGAN_SLICES:
        raise InputError(f"unknown organ {organ!r}; expected one of {ORGANS}")
    part = ORGAN_SLICES[organ]
    return (
        _flat_std(std_column).list.slice(2 * part.start, 2 * (part.stop - part.start)).list.mean().cast(pl.Float32)
    )


def latent_sigma_mean(latent_column: str = "latent_sigma") -> pl.Expr:
    """Mean of the 64 latent posterior sigmas (Float32), null when not released.

    Examples
    --------
    >>> import numpy as np, polars as pl
    >>> import chexmask_u_tools as cxu
    >>> latent = np.array([[0.5] * 64, [1.0] * 32 + [2.0] * 32], dtype=np.float32)
    >>> table = pl.DataFrame({"latent_sigma": latent})
    >>> table.select(cxu.latent_sigma_mean()).to_series().to_list()
    [0.5, 1.5]
    """
    return pl.col(latent_column).arr.mean().cast(pl.Float32)


def summary_expressions() -> list[pl.Expr]:
    """The derived summary columns of the canonical schema, named as there.

    Examples
    --------
    >>> from chexmask_u_tools.select.uncertainty import summary_expressions
    >>> [expr.meta.output_name() for expr in summary_expressions()]
    ['node_sigma_mean', 'node_sigma_max', 'sigma_right_lung', 'sigma_left_lung', 'sigma_heart', 'latent_sigma_mean']
    """
    return [
        node_sigma_mean().alias("node_sigma_mean"),
        node_sigma_max().alias("node_sigma_max"),
        *(organ_sigma_mean(organ).alias(ORGAN_SIGMA_COLUMNS[organ]) for organ in ORGANS),
        latent_sigma_mean().alias("latent_sigma_mean"),
    ]


def add_summaries(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame | pl.LazyFrame:
    """(Re)compute the summary columns from ``landmarks_std`` and ``latent_sigma``.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> table = cxu.load_sample().head(2).drop("node_sigma_mean", "sigma_heart")
    >>> summary = cxu.add_summaries(table).select("node_sigma_mean", "sigma_heart")
    >>> [tuple(round(value, 2) for value in row) for row in summary.rows()]
    [(12.63, 13.05), (10.3, 10.37)]
    """
    frame = as_polars(frame, argument="frame")
    return frame.with_columns(summary_expressions())


def node_sigma_array(std: np.ndarray) -> np.ndarray:
    """NumPy form of :func:`node_sigma`: ``(..., 120, 2) -> (..., 120)`` float32.

    Examples
    --------
    >>> from chexmask_u_tools.select.uncertainty import node_sigma_array
    >>> std = np.zeros((3, 120, 2), dtype=np.float32)
    >>> std[..., 0], std[..., 1] = 2.0, 4.0  # std_x, std_y in px
    >>> sigma = node_sigma_array(std)
    >>> sigma.shape, sigma.dtype, float(sigma[0, 0])
    ((3, 120), dtype('float32'), 3.0)
    """
    return np.asarray(std, dtype=np.float32).mean(axis=-1)


def summary_by_source(table: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Per-source and per-frame uncertainty and quality summary of a canonical table.

    Sigmas are pixels of a row's frame, so rows of the preprocessed and the
    original frame are summarised apart (one line per source and frame).

    Columns: ``source``, ``frame``, ``rows``, ``with_std`` (rows that carry node stds),
    median / 90th percentile of image-level node sigma (px), median of the
    per-image max node sigma (px), median latent sigma, median ``dice_rca_mean``
    and the fraction of rows with ``dice_rca_mean >= 0.7`` (the parent
    dataset's advised quality cut).  Sigma statistics are over the rows that
    have std (null for a source without any).

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> summary = cxu.summary_by_source(cxu.load_sample())
    >>> summary.select("source", "frame", "rows", "with_std").rows()[:2]
    [('CheXpert', 'preprocessed', 40, 40), ('ChestX-ray8', 'preprocessed', 40, 40)]
    """
    table = as_polars(table, argument="table")
    return (
        table.lazy()
        .group_by("source", "frame")
        .agg(
            rows=pl.len(),
            with_std=pl.col("landmarks_std").is_not_null().sum(),
            node_sigma_median=pl.col("node_sigma_mean").median(),
            node_sigma_p90=pl.col("node_sigma_mean").quantile(0.9, interpolation="linear"),
            node_sigma_max_median=pl.col("node_sigma_max").median(),
            latent_sigma_median=pl.col("latent_sigma_mean").median(),
            dice_rca_mean_median=pl.col("dice_rca_mean").median(),
            dice_ok_fraction=(pl.col("dice_rca_mean") >= 0.7).mean(),
        )
        .sort("source", "frame")
        .collect()
    )


def require_uncertainty(
    table: Frame,
    kind: Literal["std", "latent"] = "std",
    *,
    missing: Literal["raise", "drop", "keep"] = "raise",
    what: str = "this computation",
    fix: str | None = None,
) -> Frame:
    """Check that the rows carry the uncertainty an expression, plot or experiment reads.

    Parameters
    ----------
    table:
        Canonical table or scan.
    kind:
        ``"std"`` (column ``landmarks_std``: node sigmas and everything built on
        them) or ``"latent"`` (column ``latent_sigma``).
    missing:
        ``"raise"`` (default): raise :class:`~chexmask_u_tools.errors.RecordError`
        when any row lacks it, saying how many and the first image id;
        ``"drop"``: return only the rows that have it (still an error when no
        row has it: an empty result is never what was asked);
        ``"keep"``: return ``table`` unchanged.
    what:
        Who needs it, for the message (``"experiment ood"``, ``"plot-stats"``).
    fix:
        The advice ending the message (default: ``missing='drop'`` or a filter);
        a command names its flag here.

    Returns
    -------
    ``table`` (or its rows with the data, for ``"drop"``), of the same kind; a
    ``LazyFrame`` stays lazy (one small aggregate is collected for the check).

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> table = cxu.load_sample()
    >>> cxu.require_uncertainty(table, "std").height
    200
    >>> parent = table.with_columns(landmarks_std=None)  # the parent CheXmask files carry no std
    >>> cxu.require_uncertainty(parent, "std", what="node_sigma_mean()")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.RecordError: node_sigma_mean() needs landmarks_std, but 200 of 200 rows have none; ...
    """
    if kind not in UNCERTAINTY_COLUMNS:
        raise InputError(f"kind must be one of {tuple(UNCERTAINTY_COLUMNS)}, got {kind!r}")
    if missing not in ("raise", "drop", "keep"):
        raise InputError(f"missing must be 'raise', 'drop' or 'keep', got {missing!r}")
    column = UNCERTAINTY_COLUMNS[kind]
    names = table.collect_schema().names()
    if column not in names:
        raise InputError(f"{what} needs column {column!r}, which the table does not have (is it a canonical table?)")
    if missing == "keep":
        return table
    aggregates = [pl.len().alias("rows"), pl.col(column).is_null().sum().alias("lacking")]
    if "image_id" in names:
        aggregates.append(pl.col("image_id").filter(pl.col(column).is_null()).first().alias("first"))
    stats = table.lazy().select(aggregates).collect().row(0, named=True)
    if not stats["lacking"]:
        return table
    advice = fix or (
        f"pass missing='drop' to use only the rows that have it, or filter first: "
        f"table.filter(pl.col({column!r}).is_not_null())"
    )
    if missing == "raise" or stats["lacking"] == stats["rows"]:
        raise RecordError(
            f"{what} needs {column}, but {stats['lacking']} of {stats['rows']} rows have none; "
            + (advice if missing == "raise" else "no row is left"),
            image_id=stats.get("first"),
            column=column,
        )
    return table.filter(pl.col(column).is_not_null())
