"""Carrying a selection out of the viewer: the equivalent command line and Python, and exporting the kept rows."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import polars as pl

from chexmask_u_tools._atomic import atomic_path, remove_stale_temporaries
from chexmask_u_tools.cli.viewer.data import Browse, ViewerData, metadata_spec
from chexmask_u_tools.errors import FileReadError, InputError
from chexmask_u_tools.schema import CANONICAL_SCHEMA

__all__ = ["EXPORT_SUFFIXES", "cli_command", "export_rows", "export_target", "python_snippet"]

EXPORT_SUFFIXES: tuple[str, ...] = (".parquet", ".csv")
"""What an export path may end with: the canonical table as parquet, or the released CSV layout."""


def _input_options(data: ViewerData) -> list[str]:
    options = []
    if data.options.get("revision"):
        options += ["--revision", data.options["revision"]]
    if data.options.get("cache_dir"):
        options += ["--cache-dir", data.options["cache_dir"]]
    for theirs, known in (data.options.get("columns") or {}).items():
        options += ["--column", f"{theirs}={known}"]
    return options


def cli_command(data: ViewerData, browse: Browse) -> str:
    """The ``chexmask-u`` command writing the rows ``browse`` keeps.

    ``chexmask-u filter`` (a parquet file), or ``chexmask-u export`` (a folder
    whose ``subset.parquet`` holds them) when metadata is joined or a rule marks
    organs or weights rows, which ``filter`` does not do.

    Examples
    --------
    >>> data = ViewerData.open("sample")
    >>> print(cli_command(data, data.browse("image.mean<6", sources=["CheXpert"])))
    chexmask-u filter sample --rule 'image.mean<6.0' --sources CheXpert --out kept.parquet
    """
    rules = [str(rule) for rule in browse.rules]
    plain = not data.metadata and all(rule.action == "drop_image" for rule in browse.rules)
    words = ["chexmask-u", "filter" if plain else "export", data.spec, *_input_options(data)]
    for spec in data.metadata:
        words += ["--metadata", spec]
    for rule in rules:
        words += ["--rule", rule]
    if browse.sources:
        words += ["--sources", *browse.sources]
    words += ["--out", "kept.parquet" if plain else "kept"]
    return shlex.join(words)


def python_snippet(data: ViewerData, browse: Browse, sort: str = "sigma", seed: int = 0) -> str:
    """Python that builds the same kept rows in the same order as the page.

    Examples
    --------
    >>> data = ViewerData.open("sample")
    >>> print(python_snippet(data, data.browse("image.mean<6")))
    import chexmask_u_tools as cxu
    <BLANKLINE>
    table = cxu.open_table('sample')
    kept = cxu.apply_rules(table, ['image.mean<6.0']).collect()
    kept = kept.sort('node_sigma_mean', descending=True, nulls_last=True, maintain_order=True)
    """
    options = []
    if browse.sources:
        options.append(f"sources={list(browse.sources)!r}")
    for name in ("revision", "cache_dir", "columns"):
        if data.options.get(name):
            options.append(f"{name}={data.options[name]!r}")
    lines = ["import chexmask_u_tools as cxu", "", f"table = cxu.open_table({', '.join([repr(data.spec), *options])})"]
    if data.metadata:
        tables = []
        for spec in data.metadata:
            source, path = metadata_spec(spec)
            tables.append(f"cxu.read_metadata({source!r}, {path!r})")
        lines.append(f"table = cxu.attach_metadata(table, [{', '.join(tables)}])")
    lines.append(f"kept = cxu.apply_rules(table, {[str(rule) for rule in browse.rules]!r}).collect()")
    if sort == "sigma":
        lines.append("kept = kept.sort('node_sigma_mean', descending=True, nulls_last=True, maintain_order=True)")
    elif sort == "dice":
        lines.append("kept = kept.sort('dice_rca_mean', descending=True, nulls_last=True, maintain_order=True)")
    elif sort == "random":
        lines.append(f"kept = kept.sample(fraction=1.0, shuffle=True, seed={int(seed)})")
    return "\n".join(lines)


def export_target(path: str, folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Where an export typed as ``path`` goes: inside ``folder`` (``--export-dir``), ending in ``.parquet`` or ``.csv``.

    A relative path is relative to ``folder``; an absolute one must lie inside it.

    Raises
    ------
    InputError
        An empty path, another suffix, a path outside ``folder`` (``..`` or
        elsewhere), a missing parent folder, or an existing file without
        ``overwrite`` (the rule of ``chexmask-u filter --out``).
    """
    text = (path or "").strip()
    if not text:
        raise InputError("type the path to export to, e.g. kept.parquet or kept.csv")
    if not text.lower().endswith(EXPORT_SUFFIXES):
        raise InputError(f"the export path must end with .parquet or .csv, got {text!r}")
    root = Path(folder).resolve()
    target = (root / text).resolve()
    if root not in target.parents:
        raise InputError(f"exports go inside {root} (--export-dir); {text!r} is outside it")
    if not target.parent.is_dir():
        raise InputError(f"folder {target.parent} does not exist; create it or type another path")
    if target.exists() and not overwrite:
        raise InputError(f"{target} exists; tick 'overwrite' to replace it")
    return target


def export_rows(data: ViewerData, browse: Browse, target: Path) -> int:
    """Write the rows ``browse`` keeps to ``target`` (from :func:`export_target`); returns the rows written.

    ``.parquet``: the canonical columns, as ``chexmask-u filter`` writes them.
    ``.csv``: the released CheXmask-U layout with ``Image ID`` and ``Dataset``
    columns (:func:`~chexmask_u_tools.io.released.to_released`), which
    ``cxu.read_table`` reads back to the same canonical rows.  Written through a
    temporary file renamed into place, one input part (cache shard) at a time.

    Raises
    ------
    FileReadError
        The written parquet file does not hold the rows counted (the input changed).
    """
    import pyarrow.parquet as pq

    from chexmask_u_tools.io.released import to_released

    remove_stale_temporaries(target)
    written = 0
    with atomic_path(target) as temporary:
        if target.suffix.lower() == ".parquet":
            schema = pl.DataFrame(schema=CANONICAL_SCHEMA).to_arrow().schema
            with pq.ParquetWriter(temporary, schema, compression="zstd") as writer:
                for _, rows in data.rows_of(browse.kept):
                    chunk = rows.collect()
                    writer.write_table(chunk.to_arrow())
                    written += chunk.height
            if pq.read_metadata(temporary).num_rows != browse.kept.height or written != browse.kept.height:
                raise FileReadError(f"{data.spec!r} changed while exporting: {written} rows read, {browse.kept.height} expected")
        else:
            with open(temporary, "wb") as handle:
                header = True
                for _, rows in data.rows_of(browse.kept):
                    chunk = rows.collect()
                    to_released(chunk, id_column="Image ID", dataset_column=True).write_csv(handle, include_header=header)
                    header = False
                    written += chunk.height
                if header:  # nothing kept: a header-only file still reads back as an empty table
                    to_released(pl.DataFrame(schema=CANONICAL_SCHEMA), id_column="Image ID", dataset_column=True).write_csv(handle)
            if written != browse.kept.height:
                raise FileReadError(f"{data.spec!r} changed while exporting: {written} rows read, {browse.kept.height} expected")
    return written
