"""Uncertainty summaries of the canonical table, as composable polars expressions.

Definitions (SPEC section 5): a node's scalar uncertainty is
``sigma_node = (std_x + std_y) / 2`` in pixels of the row's frame; an image's is
the mean of ``sigma_node`` over its 120 nodes.  The latent uncertainty of an
image is the mean of its 64 posterior sigmas.

Every function here returns a ``polars.Expr``, so the summaries work the same
on an eager ``DataFrame`` and on a ``LazyFrame`` (where filters on them are
pushed into the scan), e.g.::

    lf.filter(cxu.node_sigma_mean() < 8.0)
"""

from __future__ import annotations

import numpy as np
import polars as pl

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.layout import N_NODES, ORGAN_SLICES, ORGANS
from chexmask_u_tools.schema import ORGAN_SIGMA_COLUMNS


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
    """Per-node sigma ``(std_x + std_y) / 2``: ``Array(Float32, 120)``, null without std."""
    return _node_sigma_list(std_column).list.to_array(N_NODES).cast(pl.Array(pl.Float32, N_NODES))


def node_sigma_mean(std_column: str = "landmarks_std") -> pl.Expr:
    """Image-level sigma: mean node sigma over the 120 nodes (Float32, pixels).

    Equal to the mean of all 240 stds, which is how it is computed.
    """
    return pl.col(std_column).reshape((-1, 2 * N_NODES)).arr.mean().cast(pl.Float32)


def node_sigma_max(std_column: str = "landmarks_std") -> pl.Expr:
    """Largest node sigma of the image (Float32, pixels)."""
    return _node_sigma_list(std_column).list.max().cast(pl.Float32)


def node_sigma_quantile(q: float, std_column: str = "landmarks_std") -> pl.Expr:
    """The ``q`` quantile (linear interpolation) of the image's 120 node sigmas."""
    if not 0.0 <= q <= 1.0:
        raise InputError(f"quantile must lie in [0, 1], got {q}")
    return (
        _node_sigma_list(std_column)
        .list.eval(pl.element().quantile(q, interpolation="linear"))
        .list.first()
        .cast(pl.Float32)
    )


def organ_sigma_mean(organ: str, std_column: str = "landmarks_std") -> pl.Expr:
    """Mean node sigma over one organ's nodes (Float32, pixels)."""
    if organ not in ORGAN_SLICES:
        raise InputError(f"unknown organ {organ!r}; expected one of {ORGANS}")
    part = ORGAN_SLICES[organ]
    return (
        _flat_std(std_column).list.slice(2 * part.start, 2 * (part.stop - part.start)).list.mean().cast(pl.Float32)
    )


def latent_sigma_mean(latent_column: str = "latent_sigma") -> pl.Expr:
    """Mean of the 64 latent posterior sigmas (Float32), null when not released."""
    return pl.col(latent_column).arr.mean().cast(pl.Float32)


def summary_expressions() -> list[pl.Expr]:
    """The derived summary columns of the canonical schema, named as there."""
    return [
        node_sigma_mean().alias("node_sigma_mean"),
        node_sigma_max().alias("node_sigma_max"),
        *(organ_sigma_mean(organ).alias(ORGAN_SIGMA_COLUMNS[organ]) for organ in ORGANS),
        latent_sigma_mean().alias("latent_sigma_mean"),
    ]


def add_summaries(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame | pl.LazyFrame:
    """(Re)compute the summary columns from ``landmarks_std`` and ``latent_sigma``."""
    return frame.with_columns(summary_expressions())


def node_sigma_array(std: np.ndarray) -> np.ndarray:
    """NumPy form of :func:`node_sigma`: ``(..., 120, 2) -> (..., 120)`` float32."""
    return np.asarray(std, dtype=np.float32).mean(axis=-1)


def summary_by_source(table: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Per-source uncertainty and quality summary of a canonical table.

    Columns: ``source``, ``rows``, ``with_std`` (rows that carry node stds),
    median / 90th percentile of image-level node sigma (px), median of the
    per-image max node sigma (px), median latent sigma, median ``dice_rca_mean``
    and the fraction of rows with ``dice_rca_mean >= 0.7`` (the parent
    dataset's advised quality cut).
    """
    return (
        table.lazy()
        .group_by("source")
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
        .sort("source")
        .collect()
    )
