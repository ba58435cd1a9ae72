"""Named row filters on the canonical table, pushed into the scan.

:func:`filter_criteria` turns keyword thresholds into named *keep* conditions
(polars expressions over canonical columns); :func:`apply_filters` combines
them into one ``LazyFrame.filter`` so polars pushes the predicate into the
parquet / CSV scan (row groups of the cache are skipped by their statistics);
:func:`filter_report` counts what each criterion removes.

Missing values: a row whose filtered quantity is null (no Dice RCA, no std,
no latents) does not satisfy a threshold on it and is removed by that
criterion - a threshold asks for evidence that the row is good.

Thresholds are inclusive: ``min_*`` keeps ``value >= min``, ``max_*`` keeps
``value <= max``.  Sigmas are in pixels of the row's frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import polars as pl

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.select.selection import normalize_frames, normalize_sources
from chexmask_u_tools.layout import ORGANS
from chexmask_u_tools.schema import ORGAN_SIGMA_COLUMNS


def _threshold(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name} must be a number, got {value!r}") from error
    if number != number:
        raise InputError(f"{name} must not be NaN")
    return number


def filter_criteria(
    *,
    sources: Sequence[str] | str | None = None,
    frames: Sequence[str] | str | None = None,
    min_dice_rca_mean: float | None = None,
    min_dice_rca_max: float | None = None,
    max_node_sigma_mean: float | None = None,
    max_node_sigma_max: float | None = None,
    max_organ_sigma: float | Mapping[str, float] | None = None,
    max_latent_sigma_mean: float | None = None,
    image_ids: Iterable[str] | None = None,
) -> dict[str, pl.Expr]:
    """Named keep-conditions, in a fixed order (the order used by :func:`filter_report`).

    Parameters
    ----------
    sources, frames:
        Keep these parent databases (any spelling) / frames.
    min_dice_rca_mean, min_dice_rca_max:
        Keep ``dice_rca_mean >= x`` / ``dice_rca_max >= x`` (the parent
        dataset advises ``dice_rca_mean >= 0.7``).
    max_node_sigma_mean, max_node_sigma_max:
        Keep images whose mean / largest node sigma is ``<= x`` pixels.
    max_organ_sigma:
        One threshold for all three organs' mean node sigma, or a mapping
        ``{"right_lung": x, "heart": y}``; one criterion per organ.
    max_latent_sigma_mean:
        Keep ``latent_sigma_mean <= x``.
    image_ids:
        Keep only these image ids.

    Returns
    -------
    ``{name: expression}``; names are the parameter names, with
    ``max_organ_sigma[<organ>]`` per organ.  Unset criteria are absent.
    """
    criteria: dict[str, pl.Expr] = {}
    wanted_sources = normalize_sources(sources)
    if wanted_sources is not None:
        criteria["sources"] = pl.col("source").is_in(sorted(wanted_sources))
    wanted_frames = normalize_frames(frames)
    if wanted_frames is not None:
        criteria["frames"] = pl.col("frame").is_in(sorted(wanted_frames))
    bounds = [
        ("min_dice_rca_mean", "dice_rca_mean", min_dice_rca_mean, ">="),
        ("min_dice_rca_max", "dice_rca_max", min_dice_rca_max, ">="),
        ("max_node_sigma_mean", "node_sigma_mean", max_node_sigma_mean, "<="),
        ("max_node_sigma_max", "node_sigma_max", max_node_sigma_max, "<="),
    ]
    if max_organ_sigma is not None:
        per_organ = (
            dict(max_organ_sigma) if isinstance(max_organ_sigma, Mapping) else dict.fromkeys(ORGANS, max_organ_sigma)
        )
        for organ, value in per_organ.items():
            if organ not in ORGAN_SIGMA_COLUMNS:
                raise InputError(f"unknown organ {organ!r} in max_organ_sigma; expected one of {ORGANS}")
            bounds.append((f"max_organ_sigma[{organ}]", ORGAN_SIGMA_COLUMNS[organ], value, "<="))
    bounds.append(("max_latent_sigma_mean", "latent_sigma_mean", max_latent_sigma_mean, "<="))
    for name, column, value, op in bounds:
        number = _threshold(name, value)
        if number is None:
            continue
        condition = pl.col(column) >= number if op == ">=" else pl.col(column) <= number
        criteria[name] = condition.fill_null(False)
    if image_ids is not None:
        ids = [image_ids] if isinstance(image_ids, str) else list(image_ids)
        criteria["image_ids"] = pl.col("image_id").is_in(ids)
    return criteria


def apply_filters(lf: pl.LazyFrame | pl.DataFrame, **criteria) -> pl.LazyFrame | pl.DataFrame:
    """Keep the rows meeting every criterion (keywords of :func:`filter_criteria`), as one pushed-down filter."""
    conditions = filter_criteria(**criteria)
    if not conditions:
        return lf
    return lf.filter(pl.all_horizontal(list(conditions.values())))


def filter_report(lf: pl.LazyFrame | pl.DataFrame, **criteria) -> pl.DataFrame:
    """How many rows each criterion removes, in one pass over the needed columns.

    Returns
    -------
    ``DataFrame`` with one row per criterion (in :func:`filter_criteria`
    order) preceded by a ``(input)`` row:

    ``criterion``
        the criterion's name;
    ``removed``
        rows removed by this criterion after the criteria above it were
        applied (sequential; these add up to input minus kept);
    ``removed_alone``
        rows this criterion would remove on its own;
    ``remaining``
        rows left after this criterion and the ones above it.
    """
    conditions = filter_criteria(**criteria)
    names = list(conditions)
    keep = list(conditions.values())
    aggregates = [pl.len().alias("__total")]
    for index, name in enumerate(names):
        before = pl.all_horizontal(keep[:index]) if index else pl.lit(True)
        aggregates.append((before & ~keep[index]).sum().alias(f"seq:{name}"))
        aggregates.append((~keep[index]).sum().alias(f"alone:{name}"))
    counts = lf.lazy().select(aggregates).collect().row(0, named=True)
    remaining = int(counts["__total"])
    rows = [("(input)", None, None, remaining)]
    for name in names:
        removed = int(counts[f"seq:{name}"])
        remaining -= removed
        rows.append((name, removed, int(counts[f"alone:{name}"]), remaining))
    return pl.DataFrame(
        rows,
        schema={"criterion": pl.String, "removed": pl.Int64, "removed_alone": pl.Int64, "remaining": pl.Int64},
        orient="row",
    )
