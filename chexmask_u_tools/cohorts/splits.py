"""Patient-level splits without leakage, and one image per patient.

A patient is the pair ``(source, patient_id)`` (``patient_id`` comes from
:func:`~chexmask_u_tools.cohorts.join.attach_metadata`); every function here
refuses rows without one rather than guessing.

:func:`patient_split` draws each patient's split from
``sha256(f"{seed}|{source}|{patient_id}")`` read as a number in [0, 1): the
split of a patient depends on nothing else, so adding or removing rows never
moves an existing patient, all images of a patient share one split, and the
fraction of patients in each split converges to ``fractions`` (within 1% from
about 10,000 patients on).  With ``stratify=COLUMN`` the patients of each
stratum (a patient's most frequent value of the column) are ranked by the
same number and cut at the exact fractions: exact per stratum, but adding
patients can move a patient lying at a cut to the next split.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import numpy as np
import polars as pl

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.schema import as_polars

__all__ = ["DEFAULT_FRACTIONS", "check_leakage", "patient_split", "unique_patients"]

DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}
PATIENT = ["source", "patient_id"]
_KEEP = {"first": None, "best_dice": ("dice_rca_mean", True), "lowest_sigma": ("node_sigma_mean", False)}


def _require_patients(table: pl.DataFrame | pl.LazyFrame, what: str) -> None:
    names = table.collect_schema().names()
    missing = [c for c in PATIENT if c not in names]
    if missing:
        raise InputError(f"{what} needs the columns {missing}: join the source metadata first (attach_metadata)")


def _check_no_null_patients(frame: pl.DataFrame, what: str) -> None:
    nulls = frame.filter(pl.col("patient_id").is_null())
    if nulls.height:
        example = nulls.row(0, named=True)
        raise InputError(
            f"{what}: {nulls.height} rows have no patient_id (e.g. {example['source']} {example.get('image_id')!r}), "
            "usually rows the metadata did not match; drop them (attach_metadata(..., how='inner')) or attach metadata that covers them"
        )


def _fractions(fractions: Mapping[str, float] | None) -> dict[str, float]:
    fractions = dict(DEFAULT_FRACTIONS if fractions is None else fractions)
    if not fractions:
        raise InputError("fractions must name at least one split")
    for name, value in fractions.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"split names must be non-empty strings, got {name!r}")
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise InputError(f"fraction of split {name!r} must be a positive number, got {value!r}")
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise InputError(f"fractions must sum to 1, got {total:g} ({fractions})")
    return fractions


def patient_hash(seed: int, sources: list[str], patients: list[str]) -> np.ndarray:
    """Per patient, a number in [0, 1) from ``sha256(f"{seed}|{source}|{patient_id}")`` (stable across runs and versions).

    Examples
    --------
    >>> patient_hash(0, ["CheXpert", "CheXpert"], ["patient00001", "patient00001"]).tolist() == [patient_hash(0, ["CheXpert"], ["patient00001"])[0]] * 2
    True
    """
    digests = [hashlib.sha256(f"{seed}|{s}|{p}".encode()).digest()[:8] for s, p in zip(sources, patients, strict=True)]
    return np.array([int.from_bytes(d, "big") for d in digests], dtype=np.float64) / 2.0**64


def _assign(u: np.ndarray, fractions: dict[str, float]) -> np.ndarray:
    names = np.array(list(fractions), dtype=object)
    edges = np.cumsum(list(fractions.values()))[:-1]
    return names[np.searchsorted(edges, u, side="right")]


def patient_split(
    table: pl.DataFrame | pl.LazyFrame,
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
    stratify: str | None = None,
    official_split: bool = False,
    *,
    column: str = "split",
) -> pl.DataFrame | pl.LazyFrame:
    """Add a patient-level ``split`` column (module docstring); every other column is unchanged.

    Parameters
    ----------
    table:
        Table with ``source`` and ``patient_id`` (eager or lazy; a lazy table
        stays lazy, only its patient columns are collected).
    fractions:
        Split name -> fraction of patients, summing to 1 (default
        ``{"train": 0.8, "val": 0.1, "test": 0.1}``).
    seed:
        Any integer; the same seed gives the same split.
    stratify:
        Optional column: cut each stratum at the exact fractions (module docstring).
    official_split:
        Keep the source's official split (column ``official_split``, from
        :func:`~chexmask_u_tools.cohorts.join.attach_metadata`) where a row has
        one; a row without one takes its patient's official split when the
        patient has exactly one, else the drawn split.
    column:
        Name of the column written (an existing column of that name is replaced).

    Examples
    --------
    >>> import polars as pl
    >>> import chexmask_u_tools as cxu
    >>> table = pl.DataFrame({"source": ["CheXpert"] * 4, "patient_id": ["p1", "p1", "p2", "p3"], "image_id": list("abcd")})
    >>> split = cxu.patient_split(table, {"train": 0.5, "test": 0.5}, seed=1)
    >>> split["split"].to_list()
    ['test', 'test', 'train', 'test']
    >>> cxu.check_leakage(split).height
    0
    """
    table = as_polars(table, argument="table")
    fractions = _fractions(fractions)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise InputError(f"seed must be an integer, got {seed!r}")
    _require_patients(table, "patient_split")
    names = table.collect_schema().names()
    extra = []
    if stratify is not None:
        if stratify not in names:
            raise InputError(f"stratify column {stratify!r} is not in the table")
        extra.append(stratify)
    if official_split:
        if "official_split" not in names:
            raise InputError("official_split=True needs the column 'official_split': attach_metadata writes it from the source's split")
        extra.append("official_split")
    ids = ["image_id"] if "image_id" in names else []
    rows = table.lazy().select(*PATIENT, *ids, *dict.fromkeys(extra)).collect()
    _check_no_null_patients(rows, "patient_split")
    patients = rows.select(PATIENT).unique(maintain_order=True)
    u = patient_hash(int(seed), patients["source"].to_list(), patients["patient_id"].cast(pl.String).to_list())
    if stratify is None:
        drawn = _assign(u, fractions)
    else:
        strata = (
            rows.group_by([*PATIENT, stratify])
            .len()
            .sort(["len", stratify], descending=[True, False], nulls_last=True)
            .unique(subset=PATIENT, keep="first")
        )
        stratum = patients.join(strata, on=PATIENT, how="left", maintain_order="left")[stratify]
        drawn = np.empty(len(u), dtype=object)
        keys = stratum.cast(pl.String).fill_null("\x00null").to_numpy()
        for key in np.unique(keys):
            members = np.flatnonzero(keys == key)
            order = members[np.argsort(u[members], kind="stable")]
            drawn[order] = _assign((np.arange(len(order)) + 0.5) / len(order), fractions)
    assignment = patients.with_columns(pl.Series("__drawn", drawn.tolist(), pl.String))
    split = pl.col("__drawn")
    if official_split:
        single = (
            rows.drop_nulls("official_split")
            .group_by(PATIENT)
            .agg(pl.col("official_split").unique().alias("__official"))
            .filter(pl.col("__official").list.len() == 1)
            .with_columns(pl.col("__official").list.first())
        )
        assignment = assignment.join(single, on=PATIENT, how="left", maintain_order="left")
        split = pl.coalesce(pl.col("official_split"), pl.col("__official"), pl.col("__drawn"))
    base = table.drop(column) if column in names else table
    joined = base.lazy().join(assignment.lazy(), on=PATIENT, how="left", maintain_order="left")
    result = joined.with_columns(split.alias(column)).drop([c for c in ("__drawn", "__official") if c in assignment.columns])
    return result if isinstance(table, pl.LazyFrame) else result.collect()


def check_leakage(table: pl.DataFrame | pl.LazyFrame, column: str = "split") -> pl.DataFrame:
    """Patients found in more than one split: ``source``, ``patient_id``, ``splits`` (sorted), ``rows``; empty when clean.

    Rows with a null split are ignored.

    Examples
    --------
    >>> import polars as pl
    >>> import chexmask_u_tools as cxu
    >>> table = pl.DataFrame({"source": ["VinDr-CXR"] * 3, "patient_id": ["a", "a", "b"], "split": ["train", "test", "test"]})
    >>> cxu.check_leakage(table).rows()
    [('VinDr-CXR', 'a', ['test', 'train'], 2)]
    """
    _require_patients(table, "check_leakage")
    if column not in table.collect_schema().names():
        raise InputError(f"the table has no split column {column!r} (patient_split writes one)")
    return (
        table.lazy()
        .filter(pl.col(column).is_not_null() & pl.col("patient_id").is_not_null())
        .group_by(PATIENT)
        .agg(pl.col(column).unique().sort().alias("splits"), pl.len().cast(pl.Int64).alias("rows"))
        .filter(pl.col("splits").list.len() > 1)
        .sort(PATIENT)
        .collect()
    )


def unique_patients(table: pl.DataFrame | pl.LazyFrame, keep: str = "first") -> pl.DataFrame | pl.LazyFrame:
    """One row per patient, in the table's order: the first, the highest ``dice_rca_mean`` or the lowest ``node_sigma_mean``.

    A patient whose rows all lack the statistic keeps its first row; ties keep the earlier row.

    Examples
    --------
    >>> import polars as pl
    >>> import chexmask_u_tools as cxu
    >>> table = pl.DataFrame({"source": ["CheXpert"] * 3, "patient_id": ["p1", "p1", "p2"], "image_id": ["a", "b", "c"],
    ...                       "dice_rca_mean": [0.80, 0.95, None], "node_sigma_mean": [5.0, 9.0, 7.0]})
    >>> cxu.unique_patients(table, keep="best_dice")["image_id"].to_list()
    ['b', 'c']
    >>> cxu.unique_patients(table, keep="lowest_sigma")["image_id"].to_list()
    ['a', 'c']
    """
    if keep not in _KEEP:
        raise InputError(f"keep must be one of {list(_KEEP)}, got {keep!r}")
    _require_patients(table, "unique_patients")
    if isinstance(table, pl.DataFrame):
        _check_no_null_patients(table, "unique_patients")
    frame = table.lazy().with_row_index("__order")
    if _KEEP[keep] is not None:
        stat, highest = _KEEP[keep]
        if stat not in table.collect_schema().names():
            raise InputError(f"keep={keep!r} needs the column {stat!r}")
        frame = frame.sort([stat, "__order"], descending=[highest, False], nulls_last=True)
    result = frame.unique(subset=PATIENT, keep="first").sort("__order").drop("__order")
    return result if isinstance(table, pl.LazyFrame) else result.collect()
