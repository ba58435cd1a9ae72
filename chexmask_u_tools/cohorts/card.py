"""A Markdown dataset card for a cohort, and the citation block.

:func:`describe` writes what a reader of a paper needs to know about a
cohort cut from CheXmask-U: how many rows each selection step removed, counts
per source, split and view, where the patient ids came from, patients per
split with the leakage check, the
Dice RCA and node-sigma distributions per source (quantile tables and, when
written to a file, two box-plot figures next to it), and the BibTeX of the
works to cite.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import polars as pl

from chexmask_u_tools.analysis.plots import plot_sigma_by_source
from chexmask_u_tools.cohorts.splits import PATIENT, PATIENT_ID_FROM, add_patient_ids, check_leakage
from chexmask_u_tools.citation import cite
from chexmask_u_tools.errors import InputError
from chexmask_u_tools.schema import as_polars
from chexmask_u_tools.select.rules import Rule, apply_rules, parse_rules

__all__ = ["describe", "select_cohort"]

def select_cohort(
    table: pl.DataFrame | pl.LazyFrame,
    filters: Mapping[str, pl.Expr] | None = None,
    rules: Iterable[Rule | str] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Apply named filters, then rules, in order; return ``(kept rows, steps)``.

    ``steps`` has one row per step: ``step`` (the filter's name or the rule's
    text), ``rows_before``, ``removed``, ``rows_after``.  Each rule runs with
    :func:`~chexmask_u_tools.select.rules.apply_rules` on the rows the
    previous steps kept (only ``drop_image`` rules remove rows).

    Examples
    --------
    >>> import polars as pl
    >>> import chexmask_u_tools as cxu
    >>> kept, steps = cxu.select_cohort(cxu.load_sample(), {"CheXpert only": pl.col("source") == "CheXpert"}, ["image.mean<=8"])
    >>> steps["step"].to_list(), steps["rows_before"][0]
    (['CheXpert only', 'image.mean<=8.0'], 200)
    >>> kept.height == steps["rows_after"][-1]
    True
    """
    frame = table.collect() if isinstance(table, pl.LazyFrame) else table
    steps = []
    for name, expression in (filters or {}).items():
        if not isinstance(expression, pl.Expr):
            raise InputError(f"filter {name!r} must be a polars expression, got {type(expression).__name__}")
        before = frame.height
        frame = frame.filter(expression)
        steps.append((str(name), before, before - frame.height, frame.height))
    for rule in parse_rules(rules or ()):
        before = frame.height
        frame = apply_rules(frame, [rule])
        steps.append((rule.name, before, before - frame.height, frame.height))
    schema = {"step": pl.String, "rows_before": pl.Int64, "removed": pl.Int64, "rows_after": pl.Int64}
    return frame, pl.DataFrame(steps, schema=schema, orient="row")


# ----------------------------------------------------------------------------
# Markdown


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value).replace("|", "\\|")


def markdown_table(frame: pl.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a small DataFrame (nulls as ``-``).

    Examples
    --------
    >>> import polars as pl
    >>> print(markdown_table(pl.DataFrame({"source": ["CheXpert"], "rows": [3]})))
    | source | rows |
    |---|---:|
    | CheXpert | 3 |
    """
    align = ["---:" if dtype.is_numeric() else "---" for dtype in frame.dtypes]
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)


def _counts(frame: pl.DataFrame, by: str, label: str) -> pl.DataFrame:
    """Rows per source (rows) and value of ``by`` (columns), with a total column."""
    values = frame.with_columns(pl.col(by).cast(pl.String).fill_null(f"(no {label})").alias("__by"))
    order = sorted(values["__by"].unique().to_list(), key=lambda v: (v.startswith("(no "), v))
    wide = values.group_by("source", "__by").len().pivot(on="__by", index="source", values="len")
    wide = wide.select("source", *order).fill_null(0).sort("source")
    return wide.with_columns(pl.sum_horizontal(order).alias("total"))


def _quantiles(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    value = pl.col(column).cast(pl.Float64)
    finite = value.filter(value.is_finite())
    return (
        frame.group_by("source")
        .agg(
            finite.len().cast(pl.Int64).alias("n"),
            (pl.len() - finite.len()).cast(pl.Int64).alias("missing"),
            finite.min().alias("min"),
            *(finite.quantile(q, "linear").alias(f"q{int(q * 100):02d}") for q in (0.05, 0.25, 0.5, 0.75, 0.95)),
            finite.max().alias("max"),
        )
        .sort("source")
    )


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def describe(
    table: pl.DataFrame | pl.LazyFrame,
    rules: Iterable[Rule | str] | None = None,
    *,
    filters: Mapping[str, pl.Expr] | None = None,
    title: str = "CheXmask-U cohort",
    out: str | os.PathLike | None = None,
    provenance: Mapping[str, str] | None = None,
) -> str:
    """A Markdown dataset card of the cohort that ``filters`` then ``rules`` cut from ``table``.

    Parameters
    ----------
    table:
        Canonical table, ideally with metadata attached
        (:func:`~chexmask_u_tools.cohorts.join.attach_metadata`) and a split
        (:func:`~chexmask_u_tools.cohorts.splits.patient_split`); sections whose
        columns are missing say so.  The split column is ``split``, else
        ``official_split``.
    rules:
        Rules (objects or text) applied after ``filters``; each one's removed
        rows are listed (:func:`select_cohort`).
    filters:
        Named polars expressions applied first, in order (``{"PA only": pl.col("view") == "PA"}``).
    title:
        The card's heading.
    out:
        When given, the card is written there (atomically) with two figures
        beside it, ``<stem>_dice_rca.png`` and ``<stem>_node_sigma.png``
        (box plots per source), linked from the card.
    provenance:
        For a table of predictions, what produced them
        (:func:`~chexmask_u_tools.io.provenance.read_provenance` of the file):
        a "Predictions" section lists it, and untrained weights are said in bold.

    Returns
    -------
    str
        The card.

    Raises
    ------
    InputError
        When no row is left, naming the step that removed the last ones.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> card = cxu.describe(cxu.load_sample(), rules=["dice.mean>=0.7;missing=keep"])
    >>> card.splitlines()[0]
    '# CheXmask-U cohort'
    >>> "## Citation" in card and "| dice.mean>=0.7;missing=keep | 200 |" in card
    True
    """
    table = as_polars(table, argument="table")
    kept, steps = select_cohort(table, filters, rules)
    if kept.height == 0:
        emptied = steps.filter(pl.col("rows_after") == 0)["step"]
        cause = f"step {emptied[0]!r} removed the last rows" if emptied.len() and steps["rows_before"][0] else "the table has no rows"
        raise InputError(f"nothing to describe: {cause} (steps: {steps.rows()})")
    names = kept.columns
    rows_in = steps["rows_before"][0] if steps.height else kept.height
    lines = [f"# {title}", "", f"{kept.height} images from {kept['source'].n_unique()} sources.", ""]
    if provenance:
        lines += ["## Predictions", ""]
        if provenance.get("weights") == "random":
            lines += [
                f"**Made with untrained random weights (seed {provenance.get('weights.seed', '?')}): the landmarks "
                "and uncertainties are meaningless, for testing the pipeline only.**",
                "",
            ]
        lines += ["| what | value |", "|---|---|", *(f"| {key} | {value} |" for key, value in provenance.items()), ""]
    lines += ["## Selection", ""]
    if steps.height:
        lines += [f"Starting from {rows_in} rows, in order:", "", markdown_table(steps), ""]
    else:
        lines += ["No filter or rule was applied.", ""]
    split_column = "split" if "split" in names else "official_split" if "official_split" in names else None
    lines += ["## Counts", ""]
    if split_column is not None:
        lines += [f"Images per source and split (`{split_column}`):", "", markdown_table(_counts(kept, split_column, "split")), ""]
    else:
        lines += ["No split column (run patient_split or attach metadata with an official split).", ""]
    if "view" in names:
        lines += ["Images per source and view:", "", markdown_table(_counts(kept, "view", "view")), ""]
    else:
        lines += ["No view column (attach the source metadata to count views).", ""]
    lines += ["## Patients", ""]
    known = kept if PATIENT_ID_FROM in names else add_patient_ids(kept)
    if known["patient_id"].drop_nulls().len():
        lines += _patient_origins(known)
        if split_column is not None:
            patients = known.drop_nulls("patient_id").unique(subset=[*PATIENT, split_column]).rename({split_column: "__split"})
            lines += ["Patients per source and split:", "", markdown_table(_counts(patients, "__split", "split")), ""]
            leaks = check_leakage(known, split_column)
            if leaks.height:
                lines += [
                    f"**Leakage: {leaks.height} patients appear in more than one split.** First ones:",
                    "",
                    markdown_table(leaks.head(10)),
                    "",
                ]
            else:
                lines += ["Leakage check: no patient appears in more than one split.", ""]
        else:
            n = known.drop_nulls("patient_id").select(pl.struct(PATIENT).n_unique()).item()
            lines += [f"{n} patients; no split column to check for leakage.", ""]
        missing = known["patient_id"].null_count()
        if missing:
            lines += [f"{missing} rows have no patient id.", ""]
    else:
        lines += ["No patient ids (attach the source metadata with read_metadata and attach_metadata to count patients).", ""]
    lines += ["## Segmentation quality", ""]
    figures = _figures(kept, Path(out)) if out is not None else {}
    for column, label in (("dice_rca_mean", "Dice RCA (Mean)"), ("node_sigma_mean", "Mean node sigma (px, 1024 frame)")):
        if column not in names:
            lines += [f"No `{column}` column.", ""]
            continue
        lines += [f"{label} per source:", "", markdown_table(_quantiles(kept, column)), ""]
        if column in figures:
            lines += [f"![{label} per source]({figures[column]})", ""]
    lines += ["## Citation", "", "Cite the works this cohort builds on:", "", "```bibtex", cite().rstrip(), "```", ""]
    card = "\n".join(lines)
    if out is not None:
        _write_text(Path(out), card)
    return card


_ORIGINS = {
    "table": "the table's patient_id (source metadata)",
    "image_id": "read from the image id",
    "image": "none published: each image is its own patient",
}


def _patient_origins(known: pl.DataFrame) -> list[str]:
    """Where the patient ids came from, per source (``patient_id_from``), and the per-image caveat."""
    origins = (
        known.group_by("source", PATIENT_ID_FROM)
        .len()
        .sort("source", PATIENT_ID_FROM, nulls_last=True)
        .select(
            "source",
            pl.col(PATIENT_ID_FROM).replace_strict(_ORIGINS, default=None).fill_null("none (no patient id)").alias("patient ids"),
            pl.col("len").cast(pl.Int64).alias("rows"),
        )
    )
    lines = ["Where the patient ids come from:", "", markdown_table(origins), ""]
    per_image = known.filter(pl.col(PATIENT_ID_FROM) == "image")
    if per_image.height:
        sources = ", ".join(sorted(set(per_image["source"])))
        lines += [
            f"**{sources}: no patient ids are published, so each of its {per_image.height} images counts as its own "
            "patient: its split and patient counts are per image, and images of one person may be in different splits.**",
            "",
        ]
    return lines


def _figures(kept: pl.DataFrame, out: Path) -> dict[str, str]:
    written = {}
    for column, suffix, unit in (("dice_rca_mean", "dice_rca", ""), ("node_sigma_mean", "node_sigma", "px")):
        if column not in kept.columns or kept.filter(pl.col(column).cast(pl.Float64).is_finite()).height == 0:
            continue
        name = f"{out.stem}_{suffix}.png"
        plot_sigma_by_source(kept, column, kind="box", unit=unit, path=out.parent / name)
        written[column] = name
    return written
