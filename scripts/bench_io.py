"""Benchmark: CheXmask-U CSV -> canonical table, and RLE decoding, against the reference approach.

Reference approach (what users copy from notebooks today): ``pandas.read_csv``,
then a per-row Python parse of each landmark / std / latent string into numpy
arrays (``float`` over ``split(",")``, and ``ast.literal_eval``, the safe form
of the ``eval`` notebooks use), and the per-run Python loop RLE decoder.  The
parsing jobs run on the same file, each in a fresh process of its own (a job
inherits the heap its predecessor left), and the ratios are printed;
``read_table`` is also compared with the raw polars read of the same file.  Timing is best-of-N
wall clock; nothing here is a test.  The RLE table has rows for fresh masks
and for buffers the caller reuses (``out=``), and for decoding straight to a
512x512 grid (``shape=``), each with the compiled kernels (the default) and the
numpy reference (``method="numpy"``), the two taking turns; then encoding, and both methods at mask
sizes from 8 to 2048 px (what ``rle_method`` dispatches on).  Each table ends with a floor: the same
job's unavoidable part alone (reading the fields as raw strings; allocating and
writing a fresh 1024x1024 mask), i.e. the best ratio any parser or decoder
could reach on this machine.

Usage:  python scripts/bench_io.py [--rows 20000] [--masks 600] [--repeat 3]
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
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


PARSE_JOBS = {
    "split": lambda path: reference_read(path),
    "literal_eval": lambda path: reference_read(path, ast.literal_eval),
    "read_table": lambda path: cxu.read_table(path),
    # Floor: reading the file's fields as raw strings, with no parsing at all.
    "floor": lambda path: pl.read_csv(path, infer_schema=False),
}


def time_parse_job(name: str, path: Path, warm_up: Path) -> float:
    """Seconds of one ``PARSE_JOBS[name]`` over ``path``, in this (fresh) process, after one run over ``warm_up``."""
    PARSE_JOBS[name](warm_up)  # loads the kernels (numba's cache), polars' pool, pandas' parser
    start = time.perf_counter()
    PARSE_JOBS[name](path)
    return time.perf_counter() - start


def parse_tables(n_rows: int, repeat: int) -> None:
    """CSV -> canonical table: read_table against the pandas references and the raw polars read, in one run.

    Each timing is one job in a fresh process (after a warm-up over a 200-row
    file), ``repeat`` processes per job taking turns, best kept: a job run
    after another in the same process inherits its heap (the pandas
    references leave about 1 GB behind), which moved read_table's time by 3x.
    """
    with tempfile.TemporaryDirectory() as directory:
        path = make_csv(n_rows, Path(directory))
        warm_up = make_csv(200, Path(directory) / "warm-up")
        size_mb = path.stat().st_size / 1e6
        best = dict.fromkeys(PARSE_JOBS, float("inf"))
        for _ in range(repeat):
            for name in PARSE_JOBS:
                command = [sys.executable, __file__, "--time-parse-job", name, str(path), str(warm_up)]
                seconds = float(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
                best[name] = min(best[name], seconds)

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


def rle_tables(n_masks: int, repeat: int) -> None:
    """RLE decode and encode of real-shaped masks, the compiled kernels (the default) and the numpy reference."""
    masks = cxu.load_sample()
    rles = (masks["rle_right_lung"].to_list() + masks["rle_left_lung"].to_list() + masks["rle_heart"].to_list())
    rles = (rles * (-(-n_masks // len(rles))))[:n_masks]
    runs = np.mean([len(r.split()) // 2 for r in rles])
    batch = 64
    buffer = np.empty((1024, 1024), dtype=bool)
    batch_buffer = np.empty((batch, 1024, 1024), dtype=bool)
    small = np.empty((512, 512), dtype=bool)
    decoded = [cxu.rle_decode(r, 1024, 1024) for r in rles[:100]]

    def rate(function, count=len(rles)):
        return count / best_time(function, repeat)

    def rates(job, count=len(rles)):
        """Masks/s of ``job(method)`` for the kernels and numpy, the two taking turns.

        Fresh masks cost page faults that depend on what the allocator holds
        from the row before; taking turns gives both methods the same states.
        """
        best = {"kernel": float("inf"), "numpy": float("inf")}
        for _ in range(repeat):
            for method in best:
                start = time.perf_counter()
                job(method)
                best[method] = min(best[method], time.perf_counter() - start)
        return {method: count / seconds for method, seconds in best.items()}

    reference = rate(lambda: [reference_rle_decode(r, 1024, 1024) for r in rles])

    def loop_dropping_masks():
        for r in rles:
            reference_rle_decode(r, 1024, 1024)

    reference_dropped = rate(loop_dropping_masks)
    jobs = {
        "cxu.rle_decode, one mask at a time": lambda m: [cxu.rle_decode(r, 1024, 1024, method=m) for r in rles],
        f"cxu.rle_decode_many, batches of {batch}": lambda m: [
            cxu.rle_decode_many(rles[i : i + batch], 1024, 1024, method=m) for i in range(0, len(rles), batch)],
        "cxu.rle_decode(out=reused buffer)": lambda m: [cxu.rle_decode(r, 1024, 1024, out=buffer, method=m) for r in rles],
        f"cxu.rle_decode_many(out=reused (B,H,W) buffer), batches of {batch}": lambda m: [
            cxu.rle_decode_many(rles[i : i + batch], 1024, 1024, out=batch_buffer[: len(rles[i : i + batch])], method=m)
            for i in range(0, len(rles), batch)],
    }
    measured = {name: rates(job) for name, job in jobs.items()}
    small_rates = rates(lambda m: [cxu.rle_decode(r, 1024, 1024, shape=(512, 512), out=small, method=m) for r in rles])
    encode_rates = rates(lambda m: [cxu.rle_encode(mask, method=m) for mask in decoded], len(decoded))
    names = {"kernel": "kernel, the default", "numpy": "numpy reference"}
    rows = [(f"{name} ({names[m]})", measured[name][m]) for m in names for name in jobs]
    small_rows = [(f"cxu.rle_decode(shape=(512, 512), out=reused buffer) ({names[m]})", small_rates[m]) for m in names]
    encode_rows = [(f"cxu.rle_encode ({names[m]})", encode_rates[m]) for m in names]
    # Floors: the same job's unavoidable part alone, no decoding
    fresh_floor = rate(lambda: [np.ones(1024 * 1024, dtype=bool) for _ in rles])
    reused_floor = rate(lambda: [buffer.fill(False) for _ in rles])
    full_then_sample = rate(lambda: [cxu.rle_decode(r, 1024, 1024)[::2, ::2].copy() for r in rles])

    print(f"RLE decode ({len(rles)} real-shaped 1024x1024 masks, {runs:.0f} runs per mask on average)")
    print("| path | masks/s | vs the per-run loop | vs the loop dropping its masks |")
    print("|---|---|---|---|")
    print(f"| reference: per-run Python loop (a list of the masks) | {reference:,.0f} | 1.0x | |")
    print(f"| reference: per-run Python loop, each mask dropped at once | {reference_dropped:,.0f} | "
          f"{reference_dropped / reference:.1f}x | 1.0x |")
    for name, value in rows + [("floor: allocate and fill a fresh mask, no decoding", fresh_floor),
                               ("floor: zero a reused mask, no decoding", reused_floor)]:
        dropped = f"{value / reference_dropped:.1f}x" if "reused" in name else ""
        print(f"| {name} | {value:,.0f} | {value / reference:.1f}x | {dropped} |")
    print()
    print("Rows decode into a list of masks, as the reference does (fresh masks: new pages each); a reused buffer")
    print("holds no new pages, so its rows are also compared with the loop that drops each mask at once.")
    print()
    print("RLE decode to a 512x512 training grid (same masks; reference: the per-run loop at 1024)")
    print("| path | masks/s | vs the per-run loop |")
    print("|---|---|---|")
    print(f"| full 1024 decode (kernel), then every 2nd row/col | {full_then_sample:,.0f} | {full_then_sample / reference:.1f}x |")
    for name, value in small_rows:
        print(f"| {name} | {value:,.0f} | {value / reference:.1f}x |")
    print()
    print(f"RLE encode ({len(decoded)} of the decoded masks)")
    print("| path | masks/s | vs numpy |")
    print("|---|---|---|")
    for name, value in encode_rows:
        print(f"| {name} | {value:,.0f} | {value / encode_rows[-1][1]:.1f}x |")
    print()
    rle_sizes(rles[:60], repeat)


def rle_sizes(rles: list[str], repeat: int) -> None:
    """Both methods at several mask sizes (the real masks resampled): the evidence of ``rle_method``'s dispatch."""
    from chexmask_u_tools.io.rle import rle_method

    print("| size | decode into out= kernel / numpy us | decode to shape=(s/2, s/2) kernel / numpy us | encode kernel / numpy us | rle_method |")
    print("|---|---|---|---|---|")
    for side in (8, 64, 256, 1024, 2048):
        masks = [cxu.rle_decode(r, 1024, 1024, shape=(side, side)) for r in rles]
        strings = [cxu.rle_encode(m) for m in masks]
        out = np.empty((side, side), dtype=bool)
        half = np.empty((max(1, side // 2),) * 2, dtype=bool)
        cells = []
        for job in (
            lambda m: [cxu.rle_decode(r, side, side, out=out, method=m) for r in strings],
            lambda m: [cxu.rle_decode(r, side, side, shape=half.shape, out=half, method=m) for r in strings],
            lambda m: [cxu.rle_encode(k, method=m) for k in masks],
        ):
            kernel, numpy = (best_time(lambda m=m: job(m), repeat) / len(strings) * 1e6 for m in ("kernel", "numpy"))
            cells.append(f"{kernel:.1f} / {numpy:.1f}")
        print(f"| {side} | {' | '.join(cells)} | {rle_method(side, side)} |")


def make_csv(rows: int, directory: Path) -> Path:
    sample = cxu.load_sample().filter(pl.col("source") == "VinDr-CXR")
    repeats = -(-rows // len(sample))
    table = pl.concat([sample] * repeats).head(rows)
    table = table.with_columns(pl.format("{}-{}", "image_id", pl.int_range(pl.len())).alias("image_id"))
    directory.mkdir(exist_ok=True)
    path = directory / "VinDr-CXR.csv"
    cxu.write_released(table, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--masks", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--time-parse-job", nargs=3, metavar=("JOB", "CSV", "WARM_UP_CSV"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.time_parse_job:
        name, path, warm_up = args.time_parse_job
        print(time_parse_job(name, Path(path), Path(warm_up)))
        return

    parse_tables(args.rows, args.repeat)
    print()

    rle_tables(args.masks, args.repeat)


if __name__ == "__main__":
    main()
