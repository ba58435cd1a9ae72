"""Benchmark: Hub-shaped mirror -> parquet cache -> filtered queries, against pandas on the CSVs, and streaming memory.

Generates a local mirror laid out like the Hub dataset repo (one plain CSV per
source in ``Preprocessed/``, released column variants) with ``--rows`` rows by
replicating and perturbing the embedded sample: every row gets a unique id,
shifted landmarks, rescaled stds and latents, new Dice RCA values and masks
shifted by whole image rows (so the RLE strings keep their real length).
Then, in one run:

1. ingest: cache build (:func:`chexmask_u_tools.hub.cache.build_cache`) rows/s
   against :func:`chexmask_u_tools.read_table` on the same files (target:
   build >= 0.5x read_table) and read_table against polars reading the raw
   fields as strings (target 0.7x);
2. the cost of the default integrity check (sha256 of every shard once, then
   stamps) on the filtered query below, against scanning the shards with no
   check at all;
3. the same filtered query (CheXpert + MIMIC rows with Dice RCA (Mean) >= 0.7
   and mean node sigma < 8 px) over the cache with polars, and with pandas
   reading the CSVs (only the needed columns, ``usecols``) and parsing the std
   strings - the approach without this toolkit; both results are compared;
4. the query returning whole canonical rows from the cache;
5. peak RSS of a child process streaming one file of two sizes with
   :func:`chexmask_u_tools.hub.load` (bounded memory: the peak must not grow
   with the file).

Caveat: the generated masks repeat (10 vertical shifts of each sample mask), so
parquet compresses them better than real data; the id/summary query does not
read the masks.

Usage: ``python scripts/bench_hub.py [--rows 40000] [--workdir DIR]``
(about 60 s on two shared cores at the default size)
(a kept ``--workdir`` reuses its generated mirror on the next run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from chexmask_u_tools.hub.cache import (
    build_cache,
    open_cache,
    read_manifest,
    shard_files,
)
from chexmask_u_tools.io.released import ID_COLUMN_OF_SOURCE, write_released
from chexmask_u_tools.io.sample import load_sample
from chexmask_u_tools.io.table import read_table
from chexmask_u_tools.schema import RLE_COLUMNS

VARIANT = {"CheXpert": "chexmask-u", "MIMIC-CXR-JPG": "short", "ChestX-ray8": "chexmask-u", "Padchest": "short", "VinDr-CXR": "chexmask-u"}
STD_COLUMN = {"chexmask-u": "Landmarks (Std)", "short": "Std"}
QUERY_SOURCES = ["CheXpert", "MIMIC-CXR-JPG"]
MIN_DICE, MAX_SIGMA = 0.7, 8.0
SHIFTS = 10


def _shift_rle(text: str | None, rows: int, width: int, n_pixels: int) -> str | None:
    """Move a 1-based row-major RLE mask down by ``rows`` image rows, dropping runs that fall off."""
    if text is None:
        return None
    values = np.array(text.split(), dtype=np.int64).reshape(-1, 2)
    values[:, 0] += rows * width
    values = values[values[:, 0] + values[:, 1] - 1 <= n_pixels]
    return " ".join(map(str, values.ravel()))


def generate(rows: int, mirror: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    sample = load_sample()
    per_source = rows // len(VARIANT)
    for source, variant in VARIANT.items():
        base = sample.filter(pl.col("source") == source)
        n_base = base.height
        # Each template row gets SHIFTS vertically shifted mask versions (computed once).
        shifted = {
            organ: [
                [_shift_rle(text, s, 1024, 1024 * 1024) for s in range(SHIFTS)]
                for text in base[column].to_list()
            ]
            for organ, column in RLE_COLUMNS.items()
        }
        pick = rng.integers(0, n_base, per_source)
        shift = rng.integers(0, SHIFTS, per_source)
        table = base[pick]
        landmarks = table["landmarks"].to_numpy() + np.stack(
            [rng.integers(-15, 16, per_source), shift], axis=-1
        )[:, None, :].astype(np.float32)
        std = table["landmarks_std"].to_numpy() * rng.uniform(0.5, 1.6, (per_source, 1, 1)).astype(np.float32)
        latent = table["latent_sigma"].to_numpy() * rng.uniform(0.95, 1.05, (per_source, 1)).astype(np.float32)
        dice_a = rng.uniform(0.45, 0.97, per_source)
        dice_b = np.minimum(dice_a + rng.uniform(0.0, 0.05, per_source), 0.99)
        table = table.with_columns(
            pl.format("{}-{}", pl.col("image_id"), pl.int_range(pl.len())).alias("image_id"),
            pl.Series("landmarks", landmarks, dtype=table.schema["landmarks"]),
            pl.Series("landmarks_std", std, dtype=table.schema["landmarks_std"]),
            pl.Series("latent_sigma", latent, dtype=table.schema["latent_sigma"]),
            pl.Series("dice_rca_mean", dice_a),
            pl.Series("dice_rca_max", dice_b),
            *(
                pl.Series(column, [shifted[organ][p][s] for p, s in zip(pick, shift)], dtype=pl.String)
                for organ, column in RLE_COLUMNS.items()
            ),
        )
        target = mirror / "Preprocessed" / f"{source}.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        write_released(table, target, variant)


def pandas_query(mirror: Path) -> pd.DataFrame:
    """The reference: pandas reads each CSV, parses the std strings and filters."""
    kept = []
    for source in QUERY_SOURCES:
        id_column, std_column = ID_COLUMN_OF_SOURCE[source], STD_COLUMN[VARIANT[source]]
        frame = pd.read_csv(mirror / "Preprocessed" / f"{source}.csv", usecols=[id_column, "Dice RCA (Mean)", std_column])
        std = frame[std_column].str.split(",", expand=True).astype(np.float64).to_numpy()
        node_sigma = std.reshape(len(frame), -1, 2).mean(axis=-1).mean(axis=-1)
        mask = (frame["Dice RCA (Mean)"] >= MIN_DICE) & (node_sigma < MAX_SIGMA)
        kept.append(pd.DataFrame({"source": source, "image_id": frame.loc[mask, id_column].astype(str)}))
    return pd.concat(kept, ignore_index=True)


QUERY = pl.col("source").is_in(QUERY_SOURCES) & (pl.col("dice_rca_mean") >= MIN_DICE) & (pl.col("node_sigma_mean") < MAX_SIGMA)
ID_COLUMNS = ["source", "image_id", "dice_rca_mean", "node_sigma_mean"]


def cache_query(cache: Path, columns: list[str] | None, verify: str = "once") -> pl.DataFrame:
    lf = open_cache(cache, verify=verify).filter(QUERY)
    return (lf.select(columns) if columns else lf).collect()


def unchecked_query(shards: list[str]) -> pl.DataFrame:
    """The reference for the integrity check's cost: the same query on the shards, nothing verified."""
    return pl.scan_parquet(shards).filter(QUERY).select(ID_COLUMNS).collect()


def first_read_query(cache: Path) -> pl.DataFrame:
    """A first read: every shard changed (touched: its change time moved) since it was verified, so all are hashed."""
    for shard in cache.glob("shard-*.parquet"):
        os.utime(shard)
    return cache_query(cache, ID_COLUMNS)


def read_table_all(files: list[Path]) -> int:
    return sum(read_table(path).height for path in files)


def raw_read_all(files: list[Path]) -> int:
    """The floor: polars parsing the same CSVs into string columns, no canonicalization."""
    return sum(pl.read_csv(path, infer_schema=False).height for path in files)


def best_of(repeats: int, function, *args):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - start)
    return min(times), result


STREAM_CHILD = """
import json, sys
from chexmask_u_tools.hub import LocalMirror, load

def status(key):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(key + ":"))

place = LocalMirror(sys.argv[1])
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset the peak (VmHWM) to the current RSS: measure the streaming only
before = status("VmRSS")
rows = 0
for batch in load(place, batch_size=1024, use_cache=False):
    rows += batch.height
print(json.dumps({"rows": rows, "before_kib": before, "peak_kib": status("VmHWM")}))
"""


def stream_peak(directory: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", STREAM_CHILD, str(directory)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--workdir", default=None, help="keep the mirror and cache here (reused if present)")
    args = parser.parse_args()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_hub_"))
    mirror, cache_root = work / f"mirror-{args.rows}", work / "cache"
    try:
        if not (mirror / "Preprocessed").is_dir():
            start = time.perf_counter()
            generate(args.rows, mirror)
            print(f"generated mirror: {args.rows} rows in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        csv_bytes = sum(p.stat().st_size for p in mirror.rglob("*.csv"))
        shutil.rmtree(cache_root, ignore_errors=True)

        start, cpu = time.perf_counter(), time.process_time()
        cache = build_cache(mirror, cache_root, progress=False)
        build_s, build_cpu = time.perf_counter() - start, time.process_time() - cpu
        manifest = read_manifest(cache)
        cache_bytes = sum(s.bytes for s in manifest.shards.values())

        csv_files = sorted(mirror.rglob("*.csv"))
        cpu = time.process_time()
        read_s, read_rows = best_of(1, read_table_all, csv_files)
        read_cpu, cpu = time.process_time() - cpu, time.process_time()
        raw_s, raw_rows = best_of(1, raw_read_all, csv_files)
        raw_cpu = time.process_time() - cpu
        assert read_rows == raw_rows == manifest.rows, (read_rows, raw_rows, manifest.rows)

        shards = shard_files(cache)
        unchecked_s, unchecked = best_of(3, unchecked_query, shards)
        first_s, _ = best_of(3, first_read_query, cache)
        always_s, _ = best_of(3, cache_query, cache, ID_COLUMNS, "always")
        pandas_s, reference = best_of(1, pandas_query, mirror)
        ids_s, subset = best_of(3, cache_query, cache, ID_COLUMNS)
        full_s, _ = best_of(3, cache_query, cache, None)
        assert subset.equals(unchecked)
        same = sorted(zip(reference["source"], reference["image_id"])) == sorted(subset.select("source", "image_id").rows())

        # Streaming memory: one source file, a quarter of it vs all of it.
        big_file = mirror / "Preprocessed" / "CheXpert.csv"
        small_dir = work / "stream-small" / "Preprocessed"
        small_dir.mkdir(parents=True, exist_ok=True)
        with open(big_file, "rb") as source, open(small_dir / "CheXpert.csv", "wb") as target:
            lines = sum(1 for _ in source) - 1
            source.seek(0)
            for index, line in enumerate(source):
                if index > lines // 4:
                    break
                target.write(line)
        big_dir = work / "stream-big" / "Preprocessed"
        big_dir.mkdir(parents=True, exist_ok=True)
        if not (big_dir / "CheXpert.csv").exists():
            os.link(big_file, big_dir / "CheXpert.csv")
        small = stream_peak(small_dir.parent)
        big = stream_peak(big_dir.parent)

        mib = 1 / 1024
        rows = manifest.rows
        print(f"## bench_hub: {rows} rows, {csv_bytes / 1e9:.2f} GB of CSV -> {manifest.n_shards} shards, "
              f"{cache_bytes / 1e6:.0f} MB parquet ({os.cpu_count()} cores)")
        print()
        # CPU seconds (all threads of this process) are printed too: on a shared machine they move less than wall time.
        print("| ingest, same files | time | rows/s | ratio | CPU s | ratio by CPU |")
        print("|---|---|---|---|---|---|")
        print(f"| polars read_csv, raw string fields (floor) | {raw_s:.2f} s | {rows / raw_s:,.0f} | 1x | {raw_cpu:.2f} | 1x |")
        print(f"| read_table (parse + canonicalize) | {read_s:.2f} s | {rows / read_s:,.0f} | "
              f"{raw_s / read_s:.2f}x of the floor (target 0.7) | {read_cpu:.2f} | {raw_cpu / read_cpu:.2f}x |")
        print(f"| build_cache (stream + canonicalize + shard + checksums) | {build_s:.2f} s | {rows / build_s:,.0f} | "
              f"{read_s / build_s:.2f}x of read_table (target 0.5) | {build_cpu:.2f} | {read_cpu / build_cpu:.2f}x |")
        print()
        print("| integrity check (ids + summaries query over the cache) | time | overhead |")
        print("|---|---|---|")
        print(f"| no check: pl.scan_parquet(shards) | {unchecked_s:.3f} s | reference |")
        print(f"| default, shards stamped (every read after the first) | {ids_s:.3f} s | "
              f"{ids_s - unchecked_s:+.3f} s ({ids_s / unchecked_s:.2f}x) |")
        print(f"| default, first read (sha256 of {cache_bytes / 1e6:.0f} MB) | {first_s:.3f} s | "
              f"{first_s - unchecked_s:+.3f} s ({first_s / unchecked_s:.2f}x) |")
        print(f'| verify="always" | {always_s:.3f} s | {always_s - unchecked_s:+.3f} s ({always_s / unchecked_s:.2f}x) |')
        print()
        print("| step | time | rate / ratio |")
        print("|---|---|---|")
        print(f"| pandas: read CSVs (usecols) + parse std + filter | {pandas_s:.2f} s | 1x (reference) |")
        print(f"| cache: filtered query, ids + summaries ({subset.height} rows) | {ids_s:.3f} s | {pandas_s / ids_s:.0f}x faster |")
        print(f"| cache: same query returning full canonical rows (arrays + masks) | {full_s:.3f} s | "
              f"(no pandas counterpart timed) |")
        print(f"| same rows as pandas | {same} | |")
        print()
        print("| streaming `load()` of one CSV | rows | file size | peak RSS | RSS growth while streaming |")
        print("|---|---|---|---|---|")
        for label, result, path in (("quarter file", small, small_dir / "CheXpert.csv"), ("whole file", big, big_file)):
            print(f"| {label} | {result['rows']} | {path.stat().st_size / 1e6:.0f} MB | {result['peak_kib'] * mib:.0f} MiB | "
                  f"{(result['peak_kib'] - result['before_kib']) * mib:.0f} MiB |")
        print(f"\npeak RSS ratio whole/quarter: {big['peak_kib'] / small['peak_kib']:.2f} (file size ratio "
              f"{big_file.stat().st_size / (small_dir / 'CheXpert.csv').stat().st_size:.1f})")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
