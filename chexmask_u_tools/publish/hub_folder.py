"""``cxu.save_hub_folder``: a curated subset as a folder ready for ``huggingface_hub.upload_folder``.

Layout::

    OUT/README.md                          dataset card: YAML header (configs, features, license) + text
    OUT/data/<split>-00000-of-0000N.parquet  parquet shards, written by ``datasets`` (features in the schema)

The YAML header declares one ``default`` config whose ``data_files`` name one
split per value of a ``split`` column (``train`` alone when the table has
none), and the features, so that the Hub's viewer and
``datasets.load_dataset(OUT)`` read the same typed columns.  Shards hold at most
``max_shard_bytes`` of parquet each, in row groups of ``row_group_rows`` rows (small
groups keep the viewer's random access cheap).  The folder is written to a
temporary sibling and renamed into place.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from chexmask_u_tools._atomic import remove_stale_temporaries, temporary_name
from chexmask_u_tools.citation import cite
from chexmask_u_tools.cohorts import describe
from chexmask_u_tools.errors import InputError
from chexmask_u_tools.io import hf
from chexmask_u_tools.schema import CANONICAL_SCHEMA, as_polars

__all__ = ["save_hub_folder"]

DEFAULT_SHARD_BYTES = 300_000_000
"""Parquet bytes per shard (the Hub serves files of a few hundred MB well)."""


def _splits(frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    if "split" not in frame.columns:
        return {"train": frame}
    if frame["split"].null_count():
        raise InputError(
            f"{frame['split'].null_count()} rows have a null split; assign every row "
            "(e.g. cxu.patient_split) or drop the split column"
        )
    return {name: frame.filter(pl.col("split") == name) for name in sorted(frame["split"].unique().to_list())}


def _card(name: str, features: Any, splits: dict[str, pl.DataFrame], license: str, body: str) -> str:
    from huggingface_hub import DatasetCard, DatasetCardData

    data = DatasetCardData(
        license=license,
        pretty_name=name,
        tags=["chest-x-ray", "segmentation", "landmarks", "uncertainty", "chexmask-u"],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": f"data/{split}-*.parquet"} for split in splits],
            }
        ],
        dataset_info={
            # datasets' own YAML form of the features, as the Hub writes it for uploaded datasets.
            "features": features._to_yaml_list(),
        },
    )
    header = data.to_yaml() + "\n"
    title = "" if body.lstrip().startswith("# ") else f"# {name}\n\n"
    citation = "" if "```bibtex" in body else f"\n\n## Citation\n\n```bibtex\n{cite()}```\n"
    card = DatasetCard(f"---\n{header}---\n\n{title}{body.rstrip()}\n\n## License\n\n{license}\n{citation}")
    return str(card)


def save_hub_folder(
    table: pl.DataFrame | pl.LazyFrame,
    out_dir: str | os.PathLike,
    *,
    name: str = "CheXmask-U subset",
    card: bool | str = True,
    license: str = "other",
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    row_group_rows: int = 100,
) -> Path:
    """Write a Hub-ready folder of parquet shards and a dataset card; returns ``out_dir``.

    Parameters
    ----------
    table:
        Canonical table; a ``split`` column (from ``cxu.patient_split``) makes one Hub split per value.
    out_dir:
        The folder to create.  A non-empty folder is refused unless ``overwrite=True``.
    name:
        The card's title.
    card:
        True: the dataset card of :func:`~chexmask_u_tools.cohorts.describe`
        (counts per source, split and view, patients, quality, citation); a
        string: your own Markdown body, placed under the YAML header, with the
        license (and the citation when it has none) appended; False: no
        README.md (the Hub then shows no features or splits).
    license:
        The card's license field.  CheXmask-U rows inherit the terms of the
        CheXmask dataset and of each source database; ``"other"`` unless you know better.
    max_shard_bytes, row_group_rows:
        Shard size and parquet row-group size.

    Notes
    -----
    Upload with ``huggingface_hub.upload_folder(folder_path=out_dir, repo_id="you/name", repo_type="dataset")``.

    Examples
    --------
    >>> import tempfile, datasets, chexmask_u_tools as cxu
    >>> table = cxu.load_sample().head(6)
    >>> work = tempfile.mkdtemp()
    >>> folder = cxu.save_hub_folder(table, work + "/subset")
    >>> loaded = datasets.load_dataset(str(folder), split="train", cache_dir=work + "/hf-cache")
    >>> cxu.from_hf_dataset(loaded).equals(table)
    True
    """
    table = as_polars(table, argument="table")
    out = Path(out_dir)
    frame = table.collect() if isinstance(table, pl.LazyFrame) else table
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise InputError(f"{out} exists and is not empty; pass overwrite=True (CLI: --overwrite) to replace it")
    if max_shard_bytes < 1 or row_group_rows < 1:
        raise InputError("max_shard_bytes and row_group_rows must be positive")
    splits = _splits(frame)
    features = hf.hf_features()
    remove_stale_temporaries(out)
    staging = temporary_name(out)
    try:
        (staging / "data").mkdir(parents=True)
        bytes_per_row = max(1, frame.select(list(CANONICAL_SCHEMA)).estimated_size() // max(frame.height, 1))
        for split, part in splits.items():
            shards = max(1, math.ceil(part.height * bytes_per_row / max_shard_bytes))
            dataset = hf.to_hf_dataset(part)
            for index in range(shards):
                shard = dataset.shard(num_shards=shards, index=index, contiguous=True)
                shard.to_parquet(str(staging / "data" / f"{split}-{index:05d}-of-{shards:05d}.parquet"), batch_size=row_group_rows)
        if card is not False:
            body = card if isinstance(card, str) else describe(frame, title=name)
            (staging / "README.md").write_text(_card(name, features, splits, license, body), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
