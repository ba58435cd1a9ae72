"""A local directory laid out like the CheXmask-U dataset repo, built from the embedded sample.

It holds every released column variant in every container (csv, csv.gz,
csv.xz, parquet), both frames, a physician file whose rows name their source,
and non-data files that discovery must ignore: what the Hub tests, the cache
tests and the benchmarks read instead of the real repo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from chexmask_u_tools._atomic import atomic_path
from chexmask_u_tools.io.released import to_released, write_released
from chexmask_u_tools.io.sample import load_sample
from chexmask_u_tools.schema import RLE_COLUMNS

__all__ = ["MIRROR_LAYOUT", "RELEASE_ROWS", "build_mirror", "build_scaled_mirror", "scaled_rows"]

#: repo path -> (sources in it, released variant, points format)
MIRROR_LAYOUT = {
    "Preprocessed/CheXpert.csv": (["CheXpert"], "chexmask-u", "flat"),
    "Preprocessed/Padchest.csv.gz": (["Padchest"], "short", "flat"),
    "Preprocessed/MIMIC-CXR-JPG.csv.xz": (["MIMIC-CXR-JPG"], "chexmask-u", "numpy"),
    "Preprocessed/ChestX-ray8.parquet": (["ChestX-ray8"], "short", "flat"),
    "OriginalResolution/VinDr-CXR.csv": (["VinDr-CXR"], "chexmask", "flat"),
    "Physician/annotations.csv": (["CheXpert", "VinDr-CXR"], "physician", "flat"),
}


def build_mirror(root: Path, rows_per_source: int = 40) -> Path:
    """Write the Hub-shaped mirror under ``root`` and return it."""
    sample = load_sample()
    for path, (sources, variant, points) in MIRROR_LAYOUT.items():
        table = sample.filter(pl.col("source").is_in(sources))
        table = table.group_by("source", maintain_order=True).head(5 if variant == "physician" else rows_per_source)
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        write_released(table, target, variant, points_format=points)
    (root / "README.md").write_text("# CheXmask-U (test mirror)\n")
    (root / ".gitattributes").write_text("*.csv filter=lfs\n")
    return root


#: Rows per source of the full-size synthetic mirror: the release's counts as the scale work measured them
#: (657,463 in all; the release has 657,566).
RELEASE_ROWS = {
    "CheXpert": 187_825,
    "ChestX-ray8": 112_120,
    "MIMIC-CXR-JPG": 243_334,
    "Padchest": 96_184,
    "VinDr-CXR": 18_000,
}

#: Largest whole-pixel shift (each axis) that makes a copy of a sample row distinct.
MAX_SHIFT = 60


def _shift_order() -> np.ndarray:
    """Every (dx, dy) in [-MAX_SHIFT, MAX_SHIFT]^2, smallest shifts first: (K, 2) int64."""
    axis = np.arange(-MAX_SHIFT, MAX_SHIFT + 1)
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    return grid[np.lexsort((grid[:, 1], grid[:, 0], np.abs(grid).max(axis=1)))]


def _feasible_shifts(landmarks: np.ndarray, size: int) -> np.ndarray:
    """The shifts of :func:`_shift_order` that translate one (120, 2) landmark set's masks exactly.

    Along an axis where the nodes stay on the ``size`` grid, a shift may not
    take any off it; along an axis where some already are off (real contours
    cross the border, and their masks are cut there), the shift is 0.
    """
    shifts = _shift_order()
    low, high = np.floor(landmarks.min(axis=0)), np.floor(landmarks.max(axis=0))
    inside = (low >= 0) & (high <= size - 1)
    fits = np.where(inside, (low + shifts >= 0) & (high + shifts <= size - 1), shifts == 0)
    return shifts[fits.all(axis=1)]


def _copy_ids(ids: pl.Series, copy: np.ndarray) -> pl.Series:
    """``<stem><suffix>`` -> ``<stem>_<copy><suffix>``: unique per copy, the same shape as the source's ids."""
    suffix = ids.str.extract(r"(\.[A-Za-z]+)$", 1).fill_null("")
    stem = ids.str.slice(0, ids.str.len_chars() - suffix.str.len_chars())
    return stem + "_" + pl.Series(copy).cast(pl.String).str.zfill(7) + suffix


def _translated_rle(column: pl.Series, offset: np.ndarray) -> pl.Series:
    """RLE strings with every run start moved by ``offset`` pixels (per row): the translated masks."""
    tokens = pl.DataFrame({"row": np.arange(len(column)), "token": column.str.split(" "), "offset": offset})
    moved = (
        tokens.explode("token")
        .with_columns(pl.col("token").cast(pl.Int64), start=pl.int_range(pl.len()).over("row") % 2 == 0)
        .with_columns(pl.when("start").then(pl.col("token") + pl.col("offset")).otherwise("token").cast(pl.String))
        .group_by("row", maintain_order=True)
        .agg(pl.col("token").str.join(" "))
    )
    return moved["token"].alias(column.name)


def scaled_rows(fraction: float, *, chunk_rows: int = 20_000, seed: int = 0):
    """Yield ``(source, canonical chunk)`` of a synthetic release at ``fraction`` of :data:`RELEASE_ROWS`.

    Copy ``k`` of a packaged sample row is the row translated by the ``k``-th
    whole-pixel shift that keeps it on the 1024 grid (landmarks and the RLE
    masks moved together, so the masks still are the landmarks' masks), with
    its per-node std scaled by a random factor per row (log-normal, sd 0.35)
    and per node (sd 0.15), so that ids are unique, mask strings distinct (up to
    the (2 * MAX_SHIFT + 1)^2 shifts a row admits) and the uncertainty
    statistics continuous.
    """
    from chexmask_u_tools.select.uncertainty import add_summaries

    sample = load_sample().filter(pl.col("frame") == "preprocessed")
    rng = np.random.default_rng(seed)
    for source, total in RELEASE_ROWS.items():
        rows = max(1, round(total * fraction))
        base = sample.filter(pl.col("source") == source)
        shifts = [_feasible_shifts(points, 1024) for points in base["landmarks"].to_numpy()]
        for start in range(0, rows, chunk_rows):
            index = np.arange(start, min(rows, start + chunk_rows))
            which, copy = index % base.height, index // base.height
            step = np.stack([shifts[b][c % len(shifts[b])] for b, c in zip(which, copy)])
            chunk = base[which.tolist()]
            scale = np.exp(rng.normal(0.0, 0.35, (len(index), 1, 1)) + rng.normal(0.0, 0.15, (len(index), 120, 1)))
            std = chunk["landmarks_std"].to_numpy() * scale.astype(np.float32)
            landmarks = chunk["landmarks"].to_numpy() + step[:, None, :].astype(np.float32)
            offset = step[:, 1] * 1024 + step[:, 0]
            chunk = chunk.with_columns(
                _copy_ids(chunk["image_id"], copy),
                pl.Series("landmarks", landmarks, dtype=chunk.schema["landmarks"]),
                pl.Series("landmarks_std", np.round(std, 2), dtype=chunk.schema["landmarks_std"]),
                *(_translated_rle(chunk[name], offset) for name in RLE_COLUMNS.values()),
            )
            yield source, add_summaries(chunk)


def build_scaled_mirror(root: Path, fraction: float, *, seed: int = 0) -> Path:
    """A Hub-shaped mirror at ``fraction`` of the release's rows (:func:`scaled_rows`), one parquet file per source.

    Files are written in the released ``chexmask-u`` layout under
    ``root/Preprocessed/<source>.parquet`` (atomically; a complete file is
    reused, so a rerun finishes what a killed run left).  The benchmarks'
    synthetic release: ``build_scaled_mirror(root, 1.0)`` holds 657,463 rows.
    """
    import pyarrow.parquet as pq

    root = Path(root)
    done = {source for source in RELEASE_ROWS if (root / "Preprocessed" / f"{source}.parquet").is_file()}
    writers: dict = {}
    try:
        for source, chunk in scaled_rows(fraction, seed=seed):
            if source in done:
                continue
            arrow = to_released(chunk, "chexmask-u").to_arrow()
            if source not in writers:
                target = root / "Preprocessed" / f"{source}.parquet"
                target.parent.mkdir(parents=True, exist_ok=True)
                context = atomic_path(target)
                temporary = context.__enter__()
                writers[source] = (context, pq.ParquetWriter(temporary, arrow.schema, compression="zstd"))
            writers[source][1].write_table(arrow)
        for context, writer in writers.values():
            writer.close()
            context.__exit__(None, None, None)
        writers.clear()
    finally:
        for context, writer in writers.values():
            writer.close()
            context.__exit__(RuntimeError, RuntimeError("interrupted"), None)
    (root / "README.md").write_text(f"# CheXmask-U synthetic mirror at {fraction:g} of the release's rows\n")
    return root
