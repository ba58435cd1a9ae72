"""``cxu.save_hub_folder``: a curated subset as a folder ready for ``huggingface_hub.upload_folder``.

Layout::

    OUT/README.md                            dataset card: YAML header (configs, features, split sizes, license) + text
    OUT/chexmask-u.json                      record of the shards: split, rows, bytes, sha256 of each
    OUT/data/<split>-00000-of-0000N.parquet  parquet shards in ``datasets``' layout (features in the schema)

The YAML header declares one ``default`` config whose ``data_files`` name one
split per value of a ``split`` column (``train`` alone when the table has
none), the features and each split's row count, so that the Hub's viewer and
``datasets.load_dataset(OUT)`` read the same typed columns, and
``load_dataset`` refuses a folder that lost a shard.  The record
(:mod:`chexmask_u_tools.io.hub_folder`) is what the toolkit's readers check
when they read the folder back (``cxu.read_table(OUT)``,
``cxu.open_table(OUT)``, ``cxu.hub.scan(OUT)``, ``cxu.hub.load(OUT)``).

The table is converted :data:`~chexmask_u_tools.io.hf.BATCH_ROWS` rows at a time
(:func:`~chexmask_u_tools.io.hf.hf_record_batches`), so memory stays bounded
whatever its size, and a lazy table (``cxu.open_cache(...)`` filtered) is
read once for its small columns (the split counts and the card), then streamed
once per split.  A shard is closed once it holds ``max_shard_bytes``
of parquet, in row groups of ``row_group_rows`` rows (small groups keep the
viewer's random access cheap); shards are zstd-compressed with page checksums,
and use ``datasets``' content-defined chunking (so that re-uploading an edited
subset to the Hub moves only the changed pages).  The folder is written to a
temporary sibling and renamed into place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from chexmask_u_tools._atomic import remove_stale_temporaries, temporary_name
from chexmask_u_tools.citation import cite
from chexmask_u_tools.cohorts import describe
from chexmask_u_tools.errors import InputError
from chexmask_u_tools.io import hf
from chexmask_u_tools.io.hub_folder import FOLDER_RECORD, SPLIT_COLUMN, FolderRecord, FolderShard, sha256_file
from chexmask_u_tools.schema import CANONICAL_SCHEMA, RLE_COLUMNS, as_polars

__all__ = ["save_hub_folder"]

DEFAULT_SHARD_BYTES = 300_000_000
"""Parquet bytes per shard (the Hub serves files of a few hundred MB well)."""

_SPLIT_NAME = re.compile(r"\w+(\.\w+)*")  # what ``datasets`` accepts as a split name (and a safe file name)
_HEAVY = ("landmarks", "landmarks_std", "latent_sigma", *RLE_COLUMNS.values())


def _split_counts(light: pl.DataFrame) -> dict[str, int]:
    if SPLIT_COLUMN not in light.columns:
        return {"train": light.height}
    nulls = light[SPLIT_COLUMN].null_count()
    if nulls:
        raise InputError(
            f"{nulls} rows have a null split; assign every row (e.g. cxu.patient_split) or drop the split column"
        )
    counts = dict(light.group_by(SPLIT_COLUMN).len().sort(SPLIT_COLUMN).iter_rows())
    bad = [name for name in counts if not _SPLIT_NAME.fullmatch(str(name))]
    if bad:
        raise InputError(
            f"split names must be letters, digits and underscores (dots between), as datasets requires; got {bad[:5]}: "
            "rename them in the split column"
        )
    return {str(name): rows for name, rows in counts.items()}


def _card(name: str, features: Any, splits: dict[str, int], license: str, body: str) -> str:
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
            # Row counts per split: datasets.load_dataset(folder) checks them (NonMatchingSplitsSizesError).
            "splits": [{"name": split, "num_examples": rows} for split, rows in splits.items()],
        },
    )
    header = data.to_yaml() + "\n"
    title = "" if body.lstrip().startswith("# ") else f"# {name}\n\n"
    citation = "" if "```bibtex" in body else f"\n\n## Citation\n\n```bibtex\n{cite()}```\n"
    card = DatasetCard(f"---\n{header}---\n\n{title}{body.rstrip()}\n\n## License\n\n{license}\n{citation}")
    return str(card)


class _ShardWriter:
    """One split's parquet shards: row groups appended until a shard reaches ``max_bytes``, then the next shard."""

    def __init__(self, data: Path, split: str, schema: Any, max_bytes: int, group_rows: int) -> None:
        self.data, self.split, self.schema = data, split, schema
        self.max_bytes, self.group_rows = max_bytes, group_rows
        self.done: list[tuple[Path, int]] = []
        self._writer = self._sink = None
        self._rows = 0

    def _open(self) -> None:
        import datasets
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.data / f".{self.split}-part-{len(self.done):05d}.parquet"
        self._cdc = dict(datasets.config.DEFAULT_CDC_OPTIONS)
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pq.ParquetWriter(
            self._sink,
            self.schema,
            compression="zstd",
            write_page_checksum=True,
            write_page_index=True,
            use_content_defined_chunking=self._cdc,
        )
        self._path, self._rows = path, 0

    def _close(self) -> None:
        # As datasets' own parquet writer records it.
        self._writer.add_key_value_metadata({"content_defined_chunking": json.dumps(self._cdc)})
        self._writer.close()
        self._sink.close()
        self.done.append((self._path, self._rows))
        self._writer = self._sink = None

    def write(self, batch: Any) -> None:
        for start in range(0, batch.num_rows, self.group_rows):
            if self._writer is None:
                self._open()
            group = batch.slice(start, self.group_rows)
            self._writer.write_batch(group, row_group_size=self.group_rows)
            self._rows += group.num_rows
            if self._sink.tell() >= self.max_bytes:
                self._close()

    def finish(self) -> list[FolderShard]:
        """Close the last shard (an empty split still gets one) and give each its final name and record."""
        if self._writer is not None or not self.done:
            if self._writer is None:
                self._open()
            self._close()
        shards = []
        for index, (path, rows) in enumerate(self.done):
            final = self.data / f"{self.split}-{index:05d}-of-{len(self.done):05d}.parquet"
            os.replace(path, final)
            relative = f"{self.data.name}/{final.name}"
            shards.append(FolderShard(relative, self.split, rows, final.stat().st_size, sha256_file(final)))
        return shards


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
    progress: bool = True,
) -> Path:
    """Write a Hub-ready folder of parquet shards, their record and a dataset card; returns ``out_dir``.

    Parameters
    ----------
    table:
        Canonical table, eager or lazy (streamed, never collected whole); a
        ``split`` column (from ``cxu.patient_split``) makes one Hub split per value.
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
        Parquet bytes at which a shard is closed, and rows per parquet row group.
    progress:
        Show one tqdm bar of the rows written (CLI: ``--no-progress`` turns it off).

    Notes
    -----
    Upload with ``huggingface_hub.upload_folder(folder_path=out_dir, repo_id="you/name", repo_type="dataset")``.
    Read it back with ``cxu.open_table(out_dir)`` or ``cxu.read_table(out_dir)``
    (checked against ``chexmask-u.json``) or ``datasets.load_dataset(out_dir)``.

    Examples
    --------
    >>> import tempfile, datasets, chexmask_u_tools as cxu
    >>> table = cxu.load_sample().head(6)
    >>> work = tempfile.mkdtemp()
    >>> folder = cxu.save_hub_folder(table, work + "/subset", progress=False)
    >>> cxu.open_table(folder).collect().equals(table)  # shards checked against chexmask-u.json
    True
    >>> loaded = datasets.load_dataset(str(folder), split="train", cache_dir=work + "/hf-cache")
    >>> loaded.num_rows, loaded.features["landmarks"]
    (6, Array2D(shape=(120, 2), dtype='float32'))
    """
    from tqdm.auto import tqdm

    table = as_polars(table, argument="table")
    lf = table.lazy()
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise InputError(f"{out} exists and is not empty; pass overwrite=True (CLI: --overwrite) to replace it")
    if max_shard_bytes < 1 or row_group_rows < 1:
        raise InputError("max_shard_bytes and row_group_rows must be positive")
    names = lf.collect_schema().names()
    missing = [column for column in CANONICAL_SCHEMA if column not in names]
    if missing:
        raise InputError(f"the table lacks canonical columns {missing}; read it with cxu.read_table or cxu.open_table")
    # Everything but the arrays and mask strings: the split counts and the card's figures, small at any size.
    light = lf.select(column for column in names if column not in _HEAVY).collect()
    splits = _split_counts(light)
    features = hf.hf_features()
    remove_stale_temporaries(out)
    staging = temporary_name(out)
    try:
        (staging / "data").mkdir(parents=True)
        shards: list[FolderShard] = []
        with tqdm(total=light.height, desc="hub folder", unit="rows", unit_scale=True, disable=not progress) as bar:
            for split in splits:
                part = lf.filter(pl.col(SPLIT_COLUMN) == split) if SPLIT_COLUMN in names else lf
                writer = _ShardWriter(staging / "data", split, features.arrow_schema, max_shard_bytes, row_group_rows)
                for batch in hf.hf_record_batches(part):
                    writer.write(batch)
                    bar.update(batch.num_rows)
                shards += writer.finish()
        record = FolderRecord(tuple(shards), split_column=SPLIT_COLUMN in names)
        if record.splits != {split: rows for split, rows in splits.items()}:
            raise InputError(f"the table changed while it was written: {record.splits} rows per split, {splits} before")
        (staging / FOLDER_RECORD).write_text(record.to_json(), encoding="utf-8")
        if card is not False:
            body = card if isinstance(card, str) else describe(light, title=name)
            (staging / "README.md").write_text(_card(name, features, splits, license, body), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
