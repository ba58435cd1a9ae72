"""Benchmark: Hugging Face ``datasets`` out at the release's size -- ``to_hf_dataset`` and ``save_hub_folder``.

Builds, once, a Hub-shaped mirror at a fraction of the release's row counts
(CheXpert 187,825; ChestX-ray8 112,120; MIMIC-CXR-JPG 243,334; Padchest 96,184;
VinDr-CXR 18,000) by replicating the packaged sample rows of each source with
unique ids (canonical parquet files, one per source), and the toolkit's parquet
cache over it (:func:`~chexmask_u_tools.hub.cache.build_cache`).  Both are kept
under ``--workdir`` and reused.  Then, each in a fresh child process:

* ``to_hf_dataset`` given the collected table (``eager``) and given the lazy
  cache (``lazy``: ``cxu.open_cache(...)``), by today's path (batches written to
  a memory-mapped Arrow file in the datasets cache) and, at the fractions in
  ``--old-fractions``, by the path before it (one in-memory Arrow table, which
  ``datasets`` fingerprints by pickling it);
* ``save_hub_folder`` of the lazy cache (shards and record; ``card=False``), by
  today's path and the path before it (the table collected, ``to_hf_dataset``,
  then ``Dataset.shard(...).to_parquet`` per shard).

For each: seconds, rows/s, and the process's anonymous memory
(``/proc/self/smaps_rollup`` ``Anonymous:``) added by the call, at its peak
(sampled every 50 ms) and once it returned.  For ``eager`` the table is
collected first and is not counted (it is the user's).  The collected table of
the full release is about 13 GB, so ``eager`` runs at the ``--old-fractions``
only.  Outputs are deleted after each measurement; the Arrow file of the full
release is about 13 GB of disk.

Caveat: the replicated rows repeat the sample's 200 mask strings, so parquet
(the mirror, the cache, the Hub folder's shards) compresses them far better than
real data; the Arrow file (uncompressed) has the real size.

Usage: ``python scripts/bench_hf.py [--fractions 0.1 1.0] [--old-fractions 0.1]
[--workdir /work/bench_data/share]``
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl

from chexmask_u_tools.testing.mirror import RELEASE_ROWS

CHUNK_ROWS = 20_000


# ---------------------------------------------------------------------------- data


def build_mirror(root: Path, fraction: float) -> int:
    """Canonical parquet files ``Preprocessed/<source>.parquet`` of the sample rows replicated with unique ids."""
    import pyarrow.parquet as pq

    from chexmask_u_tools.io.sample import load_sample

    sample = load_sample()
    total = 0
    (root / "Preprocessed").mkdir(parents=True, exist_ok=True)
    for source, release_rows in RELEASE_ROWS.items():
        rows = max(1, round(release_rows * fraction))
        base = sample.filter(pl.col("source") == source)
        target = root / "Preprocessed" / f"{source}.parquet"
        temporary = target.with_suffix(".tmp")
        writer = None
        for start in range(0, rows, CHUNK_ROWS):
            count = min(CHUNK_ROWS, rows - start)
            index = pl.int_range(start, start + count, eager=True)
            chunk = base[(index % base.height).to_list()].with_columns(
                pl.format("r{}/{}", pl.Series(index), pl.col("image_id")).alias("image_id")
            )
            table = chunk.to_arrow()
            writer = writer or pq.ParquetWriter(temporary, table.schema, compression="zstd")
            writer.write_table(table, row_group_size=1024)
        writer.close()
        temporary.rename(target)
        total += rows
    (root / "README.md").write_text(f"# replicated sample rows at {fraction:g} of the release\n")
    return total


def prepare(workdir: Path, fraction: float) -> tuple[Path, int]:
    from chexmask_u_tools.hub.cache import build_cache, read_manifest

    mirror = workdir / f"mirror-{fraction:g}"
    done = mirror / ".complete"
    if not done.is_file():
        shutil.rmtree(mirror, ignore_errors=True)
        start = time.perf_counter()
        rows = build_mirror(mirror, fraction)
        done.write_text(str(rows))
        print(f"[{fraction:g}] mirror of {rows:,} rows written in {time.perf_counter() - start:.0f} s", flush=True)
    start = time.perf_counter()
    cache = build_cache(mirror, workdir / "cache", progress=False)
    print(f"[{fraction:g}] cache ready in {time.perf_counter() - start:.0f} s: {cache}", flush=True)
    return cache, read_manifest(cache).rows


# ---------------------------------------------------------------------------- the path before this change


def old_to_hf_dataset(frame: pl.DataFrame):
    """``to_hf_dataset`` as it was: the whole table as one in-memory Arrow table."""
    import datasets
    import pyarrow as pa

    from chexmask_u_tools.io.hf import hf_features
    from chexmask_u_tools.schema import CANONICAL_SCHEMA

    features = hf_features()
    arrow = frame.select(list(CANONICAL_SCHEMA)).cast(CANONICAL_SCHEMA).to_arrow()
    fixed = pa.list_(pa.list_(pa.float32(), 2), 120)
    columns = [
        arrow.column(name).cast(fixed) if name in ("landmarks", "landmarks_std") else arrow.column(name)
        for name in CANONICAL_SCHEMA
    ]
    table = pa.Table.from_arrays(columns, names=list(CANONICAL_SCHEMA))
    return datasets.Dataset(table.cast(features.arrow_schema), info=datasets.DatasetInfo(features=features))


def old_save_hub_folder(frame: pl.DataFrame, out: Path, max_shard_bytes: int = 300_000_000, row_group_rows: int = 100):
    """``save_hub_folder``'s shards as they were written: one ``to_parquet`` (and one progress bar) per shard."""
    from chexmask_u_tools.schema import CANONICAL_SCHEMA

    (out / "data").mkdir(parents=True)
    bytes_per_row = max(1, frame.select(list(CANONICAL_SCHEMA)).estimated_size() // max(frame.height, 1))
    shards = max(1, math.ceil(frame.height * bytes_per_row / max_shard_bytes))
    dataset = old_to_hf_dataset(frame)
    for index in range(shards):
        shard = dataset.shard(num_shards=shards, index=index, contiguous=True)
        shard.to_parquet(str(out / "data" / f"train-{index:05d}-of-{shards:05d}.parquet"), batch_size=row_group_rows)


# ---------------------------------------------------------------------------- one measurement (child process)


def anonymous_bytes() -> int:
    with open("/proc/self/smaps_rollup") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("Anonymous:"))


class PeakSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = anonymous_bytes()
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, anonymous_bytes())
            time.sleep(0.05)

    def stop(self) -> int:
        self.running = False
        self.join()
        self.peak = max(self.peak, anonymous_bytes())
        return self.peak


def child(what: str, path: str, input_kind: str, cache: str, out: str) -> dict:
    import datasets
    import pyarrow.parquet as pq

    import chexmask_u_tools as cxu

    datasets.disable_progress_bars()  # the old path's per-shard bars would flood the log
    out_path = Path(out)
    table = cxu.open_cache(cache)
    if input_kind == "eager":
        table = table.collect()
    base = anonymous_bytes()
    sampler = PeakSampler()
    sampler.start()
    start = time.perf_counter()
    if what == "to_hf_dataset":
        if path == "old":
            result = old_to_hf_dataset(table.collect() if isinstance(table, pl.LazyFrame) else table)
        else:
            result = cxu.to_hf_dataset(table, cache_dir=out_path)
        rows = result.num_rows
    else:
        if path == "old":
            old_save_hub_folder(table.collect() if isinstance(table, pl.LazyFrame) else table, out_path)
        else:
            cxu.save_hub_folder(table, out_path, card=False, progress=False)
        rows = sum(pq.ParquetFile(shard).metadata.num_rows for shard in (out_path / "data").glob("*.parquet"))
    seconds = time.perf_counter() - start
    peak = sampler.stop()
    after = anonymous_bytes()
    size = sum(p.stat().st_size for p in out_path.rglob("*") if p.is_file()) if out_path.exists() else 0
    return {"rows": rows, "seconds": seconds, "peak": peak - base, "after": after - base, "output_bytes": size}


def measure(what: str, path: str, input_kind: str, cache: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, __file__, "--child", what, path, input_kind, str(cache), str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    shutil.rmtree(out, ignore_errors=True)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"child {what} {path} {input_kind} failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--old-fractions", type=float, nargs="*", default=[0.1])
    parser.add_argument("--workdir", type=Path, default=Path("bench_out") / "hf")
    parser.add_argument("--child", nargs=5, metavar=("WHAT", "PATH", "INPUT", "CACHE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    lines = []
    for fraction in args.fractions:
        cache, rows = prepare(args.workdir, fraction)
        out = args.workdir / "out"
        plan = []
        for what in ("to_hf_dataset", "save_hub_folder"):
            inputs = ("eager", "lazy") if what == "to_hf_dataset" and fraction in args.old_fractions else ("lazy",)
            for input_kind in inputs:
                paths = ("old", "new") if fraction in args.old_fractions else ("new",)
                plan += [(what, path, input_kind) for path in paths]
        results = {}
        for what, path, input_kind in plan:
            result = measure(what, path, input_kind, cache, out)
            results[what, path, input_kind] = result
            assert result["rows"] == rows, (what, path, input_kind, result["rows"], rows)
            old = results.get((what, "old", input_kind))
            ratio = f"{old['seconds'] / result['seconds']:.2f}x" if old and path == "new" else ""
            line = (
                f"| {fraction:g} | {rows:,} | {what} | {input_kind} | {path} | {result['seconds']:.1f} | "
                f"{rows / result['seconds']:,.0f} | {ratio} | {result['peak'] / 2**30:.2f} | {result['after'] / 2**30:.2f} | "
                f"{result['output_bytes'] / 2**30:.2f} |"
            )
            lines.append(line)
            print(line, flush=True)
    print()
    print("| fraction | rows | call | input | path | s | rows/s | speed vs old | anon peak GiB | anon after GiB | output GiB |")
    print("|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
