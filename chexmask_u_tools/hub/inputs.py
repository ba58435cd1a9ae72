"""One way to name an input: :func:`open_table` turns any input spec into a lazy canonical table.

Every command of the CLI and every reader that takes "an input" goes through
here, so they all accept the same things:

==================  ===================================================================
spec                read as
==================  ===================================================================
``"sample"``        the embedded synthetic sample (:func:`~chexmask_u_tools.io.sample.load_sample`),
                    unless a file or folder of that name exists
a file              :func:`~chexmask_u_tools.io.table.scan_table` (csv, csv.gz, csv.xz, csv.zst, csv.bz2, parquet)
a cache folder      a folder holding ``manifest.json`` of :mod:`chexmask_u_tools.hub.cache`
a Hub-ready folder  a folder written by :func:`~chexmask_u_tools.publish.save_hub_folder` (it holds
                    ``chexmask-u.json``): its shards, checked against that record
                    (:func:`~chexmask_u_tools.io.hub_folder.scan_hub_folder`)
any other folder    a local mirror of the dataset repo (:class:`~chexmask_u_tools.hub.location.LocalMirror`):
                    every data file under it, classified by its path
a Hub id            ``owner/name``, ``hf://datasets/owner/name[@rev]``: the dataset repo,
                    cache-first (:func:`~chexmask_u_tools.hub.read.scan`)
a ``datasets``      a ``datasets.Dataset`` or ``IterableDataset`` holding the canonical columns
object              (:func:`~chexmask_u_tools.io.hf.from_hf_dataset`)
a pandas DataFrame  holding the canonical columns (:func:`~chexmask_u_tools.schema.as_polars`)
==================  ===================================================================
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import polars as pl

from chexmask_u_tools.errors import FileReadError, InputError
from chexmask_u_tools.hub.cache import MANIFEST, open_cache
from chexmask_u_tools.hub.location import open_location
from chexmask_u_tools.hub.read import scan
from chexmask_u_tools.io.hf import from_hf_dataset
from chexmask_u_tools.io.hub_folder import is_hub_folder, scan_hub_folder
from chexmask_u_tools.io.sample import load_sample
from chexmask_u_tools.io.table import scan_table
from chexmask_u_tools.schema import CANONICAL_SCHEMA, as_polars, is_pandas_frame
from chexmask_u_tools.select.selection import normalize_frames, normalize_sources, row_filter

__all__ = ["INPUT_SPEC_HELP", "input_kind", "open_table"]

INPUT_SPEC_HELP = (
    "'sample' (the embedded sample), a .csv/.csv.gz/.csv.xz/.csv.zst/.csv.bz2/.parquet file, a cache folder, "
    "a folder written by save_hub_folder / export --hub-folder, a folder of data files (a local mirror), "
    "or a Hub dataset id (owner/name[@revision])"
)
"""How the CLI describes an input spec in ``--help``."""

InputKind = Literal["sample", "file", "cache", "hub-folder", "mirror", "hub", "dataset", "pandas"]


def _is_hf_dataset(spec: object) -> bool:
    return type(spec).__module__.startswith("datasets.") and type(spec).__name__ in ("Dataset", "IterableDataset")


def input_kind(spec: str | os.PathLike | Any) -> InputKind:
    """What :func:`open_table` will read ``spec`` as, without reading it.

    Examples
    --------
    >>> input_kind("sample")
    'sample'
    >>> input_kind("mcosarinsky/CheXmask-U")
    'hub'
    """
    if _is_hf_dataset(spec):
        return "dataset"
    if is_pandas_frame(spec):
        return "pandas"
    text = os.fspath(spec)
    path = Path(text)
    if text == "sample" and not path.exists():
        return "sample"
    if path.is_file():
        return "file"
    if path.is_dir():
        if (path / MANIFEST).is_file():
            return "cache"
        return "hub-folder" if is_hub_folder(path) else "mirror"
    looks_like_repo_id = text.count("/") == 1 and not text.startswith((".", "/", "~")) and not path.suffix
    # A missing path inside an existing local folder is a typo, not a Hub repo.
    if text.startswith("hf://") or (looks_like_repo_id and not path.parent.is_dir()):
        return "hub"
    raise FileReadError(f"file not found: {text!r}; an input is {INPUT_SPEC_HELP}")


def _name(spec: object) -> str:
    return type(spec).__name__ if _is_hf_dataset(spec) or is_pandas_frame(spec) else os.fspath(spec)


def open_table(
    spec: str | os.PathLike | Any,
    *,
    sources: Sequence[str] | str | None = None,
    frames: Sequence[str] | str | None = None,
    source: str | None = None,
    frame: str | None = None,
    revision: str | None = None,
    masks: Literal["released", "mean"] = "released",
    on_error: Literal["raise", "skip"] = "raise",
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    columns: dict[str, str] | None = None,
) -> pl.LazyFrame:
    """A lazy canonical table for any input spec (see the module docstring for what a spec can be).

    Parameters
    ----------
    spec:
        ``"sample"``, a file, a cache folder, a folder written by
        ``save_hub_folder``, a mirror folder, a Hub dataset id,
        a ``datasets`` object or a pandas DataFrame with the canonical columns.
    sources, frames:
        Keep only rows of these sources (any accepted spelling) / frames.
    source, frame:
        For a single file whose name or folder does not say which database or
        frame it holds (CLI ``--source`` / ``--frame``); refused for other inputs.
    revision:
        Branch, tag or commit of a Hub dataset repo.
    masks, on_error:
        As in :func:`~chexmask_u_tools.io.table.scan_table`.
    cache_dir, use_cache:
        Where the parquet cache lives, and whether a complete cache of the same
        revision is read instead of the files (mirrors and Hub ids).
    columns:
        ``{"their name": "known name"}`` (CLI ``--column THEIRS=KNOWN``) for
        data files whose column names no reader knows (see
        :func:`~chexmask_u_tools.io.table.map_columns`): a file, a mirror or a
        Hub id; a cache is used only when built with the same mapping.
        Refused for ``sample``, a cache folder and a ``datasets`` object,
        which are already canonical.

    Returns
    -------
    ``LazyFrame`` with :data:`~chexmask_u_tools.schema.CANONICAL_SCHEMA`.

    Raises
    ------
    FileReadError
        The spec is neither an existing file or folder, ``sample``, nor a Hub id.
    InputError
        ``source=``/``frame=`` given for an input that is not a single file,
        ``columns=`` for an input already canonical, or an unknown source or
        frame name.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> lf = cxu.open_table("sample", sources="CheXpert")
    >>> lf.select("source").unique().collect()["source"].to_list()
    ['CheXpert']
    """
    kind = input_kind(spec)
    if (source is not None or frame is not None) and kind != "file":
        raise InputError(
            f"source=/frame= (--source/--frame) apply to a single file, but {_name(spec)!r} is a {kind}; "
            "use sources=/frames= (--sources/--frames) to select rows"
        )
    if revision is not None and kind != "hub":
        raise InputError(f"revision= (--revision) applies to a Hub dataset id, but {_name(spec)!r} is a {kind}")
    if columns and kind in ("sample", "dataset", "pandas", "cache", "hub-folder"):
        raise InputError(
            f"columns= (--column) renames the columns of data files, but {_name(spec)!r} is a {kind}, "
            "already in the canonical layout; drop it"
        )
    condition = row_filter(normalize_sources(sources), normalize_frames(frames))
    if kind == "sample":
        lf = load_sample().lazy()
    elif kind == "dataset":
        lf = from_hf_dataset(spec).lazy()
    elif kind == "pandas":
        lf = as_polars(spec, argument="spec").lazy()
    elif kind == "file":
        # Exactly the canonical columns, as for every other input (read_table keeps a canonical file's extras).
        lf = scan_table(spec, source=source, frame=frame, masks=masks, on_error=on_error, columns=columns).select(
            *CANONICAL_SCHEMA
        )
    elif kind == "cache":
        lf = open_cache(spec)
    elif kind == "hub-folder":
        lf = scan_hub_folder(spec, with_split=False)
    else:
        place = open_location(spec, revision=revision)
        return scan(
            place,
            sources=sources,
            frames=frames,
            masks=masks,
            on_error=on_error,
            cache_dir=cache_dir,
            use_cache=use_cache,
            columns=columns,
        )
    return lf if condition is None else lf.filter(condition)
