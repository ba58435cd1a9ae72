"""Benchmark: CheXmask-U CSV -> canonical table, and RLE decoding, against the reference approach.

Reference approach (what users copy from notebooks today): ``pandas.read_csv``,
then a per-row Python parse of each landmark / std / latent string into numpy
arrays (``float`` over ``split(",")``, and ``ast.literal_eval``, the safe form
of the ``eval`` notebooks use), and the per-run Python loop RLE decoder.  Both
sides run in the same process on the same file, and the ratios are printed;
``read_table`` is also compared with the raw polars read of the same file.  Timing is best-of-N
wall clock; nothing here is a test.  The RLE table has rows for fresh masks
and for buffers the caller reuses (``out=``), and for decoding straight to a
512x512 grid (``shape=``).  Each table ends with a floor: the same
job's unavoidable part alone (reading the fields as raw strings; allocating and
writing a fresh 1024x1024 mask), i.e. the best ratio any parser or decoder
could reach on this machine.

Usage:  python scripts/bench_io.py [--rows 20000] [--masks 600] [--repeat 3]
"""

from __future__ import annotations

import argparse
import ast
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

import chexmask_u_tools as cxu


def best_time(function, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def reference_read(path: Path, parse=lambda text: [float(v) for v in text.split(",")]) -> list[dict]:
    frame = pd.read_csv(path)
    rows = []
    for record in frame.to_dict("records"):
        rows.append(
            {
                "image_id": record["image_id"],
                "landmarks": np.array(parse(record["Landmarks (Mean)"]), dtype=np.float64).reshape(-1, 2),
                "landmarks_std": np.array(parse(record["Landmarks (Std)"]), dtype=np.float64).reshape(-1, 2),
                "latent_sigma": np.array(parse(record["latents"]), dtype=np.float64),
                "rle": (record["Right Lung"], record["Left Lung"], record["Heart"]),
            }
        )
    return rows


def parse_tables(n_rows: int, repeat: int) -> None:
    """CSV -> canonical table: read_table against the pandas references and the raw polars read, in one run.

    The timed jobs take turns (one run of each, ``repeat`` times, best kept),
    so that all of them see the same machine: this one is shared, and a job
    timed alone in a busy moment would move the ratios.
    """
    with tempfile.TemporaryDirectory() as directory:
        path = make_csv(n_rows, Path(directory))
        size_mb = path.stat().st_size / 1e6
        cxu.read_table(path)  # compiles the kernels (or loads them from numba's cache) before timing
        jobs = {
            "split": lambda: reference_read(path),
            "literal_eval": lambda: reference_read(path, ast.literal_eval),
            "read_table": lambda: cxu.read_table(path),
            # Floor: reading the file's fields as raw strings, with no parsing at all.
            "floor": lambda: pl.read_csv(path, infer_schema=False),
        }
        best = dict.fromkeys(jobs, float("inf"))
        for _ in range(repeat):
            for name, job in jobs.items():
                start = time.perf_counter()
                job()
                best[name] = min(best[name], time.perf_counter() - start)

    def row(label: str, name: str) -> str:
        seconds = best[name]
        return (
            f"| {label} | {n_rows / seconds:,.0f} | {best['split'] / seconds:.1f}x | {best['literal_eval'] / seconds:.1f}x "
            f"| {best['floor'] / seconds:.2f}x |"
        )

    print(f"CSV -> canonical table ({n_rows} rows, {size_mb:.0f} MB, CheXmask-U layout with std and latents)")
    print("| path | rows/s | vs pandas + per-row float parse | vs pandas + per-row literal_eval | vs the raw polars read |")
    print("|---|---|---|---|---|")
    print(row("reference: pandas.read_csv + per-row float(x) for x in split(',')", "split"))
    print(row("reference: pandas.read_csv + per-row ast.literal_eval (the notebooks' eval, made safe)", "literal_eval"))
    print(row("cxu.read_table (parse, check every row, canonicalize, summaries)", "read_table"))
    print(row("floor: polars reading the fields as raw strings, no parsing", "floor"))


def reference_rle_decode(rle: str, height: int, width: int) -> np.ndarray:
    runs = np.array([int(v) for v in rle.split()])
    mask = np.zeros(height * width, dtype=np.uint8)
    for start, length in zip(runs[::2], runs[1::2]):
        start -= 1
        mask[start : start + length] = 1
    return mask.reshape(height, width)


def make_csv(rows: int, directory: Path) -> Path:
    sample = cxu.load_sample().filter(pl.col("source") == "VinDr-CXR")
    repeats = -(-rows // len(sample))
    table = pl.concat([sample] * repeats).head(rows)
    table = table.with_columns(pl.format("{}-{}", "image_id", pl.int_range(pl.len())).alias("image_id"))
    path = directory / "VinDr-CXR.csv"
    cxu.write_released(table, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--masks", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    parse_tables(args.rows, args.repeat)
    print()

    masks = cxu.load_sample()
    rles = (masks["rle_right_lung"].to_list() + masks["rle_left_lung"].to_list() + masks["rle_heart"].to_list())
    rles = (rles * (-(-args.masks // len(rles))))[: args.masks]
    t_rle_reference = best_time(lambda: [reference_rle_decode(r, 1024, 1024) for r in rles], args.repeat)
    t_rle_single = best_time(lambda: [cxu.rle_decode(r, 1024, 1024) for r in rles], args.repeat)
    batch = 64
    t_rle_batch = best_time(
        lambda: [cxu.rle_decode_many(rles[i : i + batch], 1024, 1024) for i in range(0, len(rles), batch)],
        args.repeat,
    )
    # Into buffers the caller reuses (what a DataLoader worker does): no allocation per mask.
    buffer = np.empty((1024, 1024), dtype=bool)
    t_rle_reused = best_time(lambda: [cxu.rle_decode(r, 1024, 1024, out=buffer) for r in rles], args.repeat)
    batch_buffer = np.empty((batch, 1024, 1024), dtype=bool)
    t_rle_batch_reused = best_time(
        lambda: [
            cxu.rle_decode_many(rles[i : i + batch], 1024, 1024, out=batch_buffer[: len(rles[i : i + batch])])
            for i in range(0, len(rles), batch)
        ],
        args.repeat,
    )
    small = np.empty((512, 512), dtype=bool)
    t_rle_small = best_time(lambda: [cxu.rle_decode(r, 1024, 1024, shape=(512, 512), out=small) for r in rles], args.repeat)
    t_rle_full_then_sample = best_time(
        lambda: [cxu.rle_decode(r, 1024, 1024)[::2, ::2].copy() for r in rles], args.repeat
    )
    runs = np.mean([len(r.split()) // 2 for r in rles])
    # Floor for a reused buffer: overwriting it with zeros, no decoding at all.
    t_rle_reused_floor = best_time(lambda: [buffer.fill(False) for _ in rles], args.repeat)
    # Floor: allocating and writing one fresh 1024x1024 bool mask, with no decoding at all.
    t_rle_floor = best_time(lambda: [np.ones(1024 * 1024, dtype=bool) for _ in rles], args.repeat)

    print(f"RLE decode ({len(rles)} real-shaped 1024x1024 masks, {runs:.0f} runs per mask on average)")
    print("| path | masks/s | ratio |")
    print("|---|---|---|")
    print(f"| reference: per-run Python loop | {len(rles) / t_rle_reference:,.0f} | 1.0x |")
    print(f"| cxu.rle_decode (one mask at a time) | {len(rles) / t_rle_single:,.0f} | {t_rle_reference / t_rle_single:.1f}x |")
    print(
        f"| cxu.rle_decode_many (batches of {batch}) | {len(rles) / t_rle_batch:,.0f} | "
        f"{t_rle_reference / t_rle_batch:.1f}x |"
    )
    print(f"| floor: allocate and fill a fresh mask, no decoding | {len(rles) / t_rle_floor:,.0f} | {t_rle_reference / t_rle_floor:.1f}x |")
    print(f"| cxu.rle_decode(out=reused buffer) | {len(rles) / t_rle_reused:,.0f} | {t_rle_reference / t_rle_reused:.1f}x |")
    print(
        f"| cxu.rle_decode_many(out=reused (B,H,W) buffer, batches of {batch}) | {len(rles) / t_rle_batch_reused:,.0f} | "
        f"{t_rle_reference / t_rle_batch_reused:.1f}x |"
    )
    print(f"| floor: zero a reused mask, no decoding | {len(rles) / t_rle_reused_floor:,.0f} | {t_rle_reference / t_rle_reused_floor:.1f}x |")
    print()
    print("RLE decode to a 512x512 training grid (same masks; reference: the per-run loop at 1024)")
    print("| path | masks/s | ratio |")
    print("|---|---|---|")
    print(
        f"| full 1024 decode, then every 2nd row/col | {len(rles) / t_rle_full_then_sample:,.0f} | "
        f"{t_rle_reference / t_rle_full_then_sample:.1f}x |"
    )
    print(
        f"| cxu.rle_decode(shape=(512, 512), out=reused buffer) | {len(rles) / t_rle_small:,.0f} | "
        f"{t_rle_reference / t_rle_small:.1f}x |"
    )


if __name__ == "__main__":
    main()
