"""Patient-level splits without leakage, and one image per patient.

A patient is the pair ``(source, patient_id)``.  Where the patient ids come
from (each row's origin goes into the column ``patient_id_from`` whenever not
all of them are the table's own):

* ``"table"``: the table's ``patient_id`` column, from
  :func:`~chexmask_u_tools.cohorts.join.attach_metadata` (the source's
  metadata) or your own.  Where a row has one, it is the authority.
* ``"image_id"``: read from the image id, for the databases whose ids name the
  patient (the registry's :attr:`~chexmask_u_tools.sources.SourceInfo.patient_in_id`):
  ChestX-ray8 file names are ``<patient>_<follow-up>.png`` (``00000001_000.png``
  is patient ``1``, as its ``Patient ID`` column writes it) and CheXpert paths
  hold ``patientNNNNN``.  The metadata gives the same ids, so the two agree.
* ``"image"``: VinDr-CXR publishes no patient ids, so each image is its own
  patient (also when ``read_metadata`` wrote ``patient_id = image_id``).
  Splitting such rows per image is a choice you make explicitly:
  ``patient_split(..., per_image=True)`` (and ``unique_patients``); the
  dataset card states it.

Rows with none of these (MIMIC-CXR-JPG dicom ids and Padchest ids do not name
the patient) are refused, naming :func:`~chexmask_u_tools.cohorts.metadata.read_metadata`
and :func:`~chexmask_u_tools.cohorts.join.attach_metadata`, rather than guessed.

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

from chexmask_u_tools.cohorts.join import metadata_key
from chexmask_u_tools.errors import InputError
from chexmask_u_tools.schema import as_polars
from chexmask_u_tools.sources import REGISTRY

__all__ = ["DEFAULT_FRACTIONS", "PATIENT_ID_FROM", "add_patient_ids", "check_leakage", "patient_split", "unique_patients"]

DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}
PATIENT = ["source", "patient_id"]
_KEEP = {"first": None, "best_dice": ("dice_rca_mean", True), "lowest_sigma": ("node_sigma_mean", False)}


PATIENT_ID_FROM = "patient_id_from"
"""The column saying where each row's ``patient_id`` came from: ``"table"``, ``"image_id"`` or ``"image"`` (module docstring)."""


def _require_source(table: pl.DataFrame | pl.LazyFrame, what: str) -> list[str]:
    names = table.collect_schema().names()
    if "source" not in names:
        raise InputError(f"{what} needs the column 'source' (the canonical table has it)")
    return names


def _patient_columns(names: list[str]) -> tuple[pl.Expr, pl.Expr]:
    """Row-wise ``patient_id`` and ``patient_id_from`` expressions for a table with these columns (module docstring)."""
    given = pl.col("patient_id").cast(pl.String) if "patient_id" in names else pl.lit(None, pl.String)
    image_id = pl.col("image_id") if "image_id" in names else pl.lit(None, pl.String)
    source = pl.col("source")
    from_id = pl.lit(None, pl.String)
    for info in REGISTRY.values():
        if info.patient_in_id is not None:
            from_id = pl.when(source == info.name).then(image_id.str.extract(info.patient_in_id, 1)).otherwise(from_id)
    without_patients = [info.name for info in REGISTRY.values() if not info.publishes_patients]
    # read_metadata writes patient_id = image_id (normalised) for them: still one patient per image
    own_image = given.is_null() | (given == image_id) | (given == metadata_key(image_id, source))
    per_image = source.is_in(without_patients) & image_id.is_not_null() & own_image
    origin = (
        pl.when(per_image)
        .then(pl.lit("image"))
        .when(given.is_not_null())
        .then(pl.lit("table"))
        .when(from_id.is_not_null())
        .then(pl.lit("image_id"))
        .otherwise(pl.lit(None, pl.String))
    )
    patient = pl.when(per_image).then(pl.coalesce(given, image_id)).otherwise(pl.coalesce(given, from_id))
    return patient.alias("patient_id"), origin.alias(PATIENT_ID_FROM)


def add_patient_ids(table: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame | pl.LazyFrame:
    """The table with ``patient_id`` filled where the image id names the patient, and ``patient_id_from`` (module docstring).

    The table's own ``patient_id`` (from
    :func:`~chexmask_u_tools.cohorts.join.attach_metadata`) is kept where a row
    has one; rows whose patient cannot be known stay null.  Eager or lazy (a
    lazy table stays lazy).

    Examples
    --------
    >>> import polars as pl
    >>> import chexmask_u_tools as cxu
    >>> table = pl.DataFrame({"source": ["ChestX-ray8", "CheXpert", "VinDr-CXR", "MIMIC-CXR-JPG"],
    ...                       "image_id": ["00000017_001.png", "train/patient00042/study1/view1_frontal.jpg", "9a5094b2", "d1"]})
    >>> cxu.add_patient_ids(table).select("patient_id", "patient_id_from").rows()
    [('17', 'image_id'), ('patient00042', 'image_id'), ('9a5094b2', 'image'), (None, None)]
    """
    table = as_polars(table, argument="table")
    names = _require_source(table, "add_patient_ids")
    patient, origin = _patient_columns(names)
    return table.with_columns(patient, origin)


def _with_patients(table: pl.DataFrame | pl.LazyFrame, what: str, extra: list[str], per_image: bool, drawn: pl.Expr | None = None):
    """``(table, rows)``: the table (with the patient columns when not all are the table's own) and its collected patient rows.

    ``rows`` holds ``source``, ``patient_id``, ``patient_id_from``, ``image_id``
    (when present) and ``extra``.  Raises when a row has no patient, or when
    one is its own patient (``"image"``) without ``per_image=True`` (for
    :func:`patient_split`: only rows whose split is drawn, ``drawn``).
    """
    names = _require_source(table, what)
    patient, origin = _patient_columns(names)
    ids = ["image_id"] if "image_id" in names else []
    keep = [c for c in dict.fromkeys(["source", *ids, *extra]) if c not in ("patient_id", PATIENT_ID_FROM)]
    rows = table.lazy().select(patient, origin, *keep).collect()
    missing = rows.filter(pl.col("patient_id").is_null())
    if missing.height:
        example = missing.row(0, named=True)
        source = example["source"]
        had = "patient_id" in names
        cause = (
            "the metadata did not match them, and their image ids do not name the patient"
            if had
            else "their image ids do not name the patient"
        )
        counts = ", ".join(f"{n} {name}" for name, n in missing.group_by("source", maintain_order=True).len().iter_rows())
        raise InputError(
            f"{what}: {missing.height} rows have no patient_id ({counts}; e.g. {source} {example.get('image_id')!r}): {cause}. "
            f"Read the database's metadata with read_metadata({source!r}, files) and join it with "
            "attach_metadata(table, metadata)" + ("; or keep only the matched rows (attach_metadata(..., how='inner'))" if had else "")
        )
    if not per_image:
        own = rows.filter(pl.col(PATIENT_ID_FROM) == "image")
        if drawn is not None:
            own = own.filter(drawn)
        if own.height:
            sources = sorted(set(own["source"]))
            raise InputError(
                f"{what}: {own.height} {'/'.join(sources)} rows have no patient id ({'/'.join(sources)} publishes none), so they "
                "can only be taken per image, each image its own patient; images of one patient may then land in "
                "different splits. Pass per_image=True to accept that (the dataset card states it)"
            )
    if (rows[PATIENT_ID_FROM] == "table").all():
        return table, rows
    return table.with_columns(patient, origin), rows


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
    per_image: bool = False,
) -> pl.DataFrame | pl.LazyFrame:
    """Add a patient-level ``split`` column (module docstring); every other column is unchanged.

    When not every patient id is the table's own (some were read from the
    image ids, or a row is its own patient), ``patient_id`` is filled and
    ``patient_id_from`` says where each came from.

    Parameters
    ----------
    table:
        Table with ``source``, and ``patient_id`` from
        :func:`~chexmask_u_tools.cohorts.join.attach_metadata` or ``image_id``
        values that name the patient (ChestX-ray8, CheXpert; module
        docstring).  Eager or lazy (a lazy table stays lazy, only its patient
        columns are collected).
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
    per_image:
        Rows of a database that publishes no patient ids (VinDr-CXR) can only
        be split per image, each image its own patient, so that images of one
        person may land in different splits: True accepts that, False (default)
        raises :class:`~chexmask_u_tools.errors.InputError` for such rows whose
        split would be drawn.

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

    ChestX-ray8 file names name the patient, so no metadata is needed:

    >>> nih = pl.DataFrame({"source": "ChestX-ray8", "image_id": ["00000001_000.png", "00000001_001.png", "00000002_000.png"]})
    >>> cxu.patient_split(nih, seed=1).select("patient_id", "patient_id_from", "split").rows()
    [('1', 'image_id', 'train'), ('1', 'image_id', 'train'), ('2', 'image_id', 'train')]
    """
    table = as_polars(table, argument="table")
    fractions = _fractions(fractions)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise InputError(f"seed must be an integer, got {seed!r}")
    names = _require_source(table, "patient_split")
    extra = []
    if stratify is not None:
        if stratify not in names:
            raise InputError(f"stratify column {stratify!r} is not in the table")
        extra.append(stratify)
    if official_split:
        if "official_split" not in names:
            raise InputError("official_split=True needs the column 'official_split': attach_metadata writes it from the source's split")
        extra.append("official_split")
    drawn_rows = pl.col("official_split").is_null() if official_split else None
    table, rows = _with_patients(table, "patient_split", extra, per_image, drawn_rows)
    names = table.collect_schema().names()
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
    names = _require_source(table, "check_leakage")
    if column not in names:
        raise InputError(f"the table has no split column {column!r} (patient_split writes one)")
    patient, _origin = _patient_columns(names)
    return (
        table.lazy()
        .with_columns(patient)
        .filter(pl.col(column).is_not_null() & pl.col("patient_id").is_not_null())
        .group_by(PATIENT)
        .agg(pl.col(column).unique().sort().alias("splits"), pl.len().cast(pl.Int64).alias("rows"))
        .filter(pl.col("splits").list.len() > 1)
        .sort(PATIENT)
        .collect()
    )


def unique_patients(
    table: pl.DataFrame | pl.LazyFrame, keep: str = "first", *, per_image: bool = False
) -> pl.DataFrame | pl.LazyFrame:
    """One row per patient, in the table's order: the first, the highest ``dice_rca_mean`` or the lowest ``node_sigma_mean``.

    A patient whose rows all lack the statistic keeps its first row; ties keep the earlier row.
    Patient ids as in :func:`patient_split` (module docstring), ``per_image``
    too: without it, rows that are their own patient (VinDr-CXR) raise.

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
    table, _rows = _with_patients(table, "unique_patients", [], per_image)
    frame = table.lazy().with_row_index("__order")
    if _KEEP[keep] is not None:
        stat, highest = _KEEP[keep]
        if stat not in table.collect_schema().names():
            raise InputError(f"keep={keep!r} needs the column {stat!r}")
        frame = frame.sort([stat, "__order"], descending=[highest, False], nulls_last=True)
    result = frame.unique(subset=PATIENT, keep="first").sort("__order").drop("__order")
    return result if isinstance(table, pl.LazyFrame) else result.collect()
