"""The torch datasets at the release's size: build, memory, workers, streaming, against the previous approach.

Usage::

    python scripts/bench_scale.py --fractions 0.02,0.1,1.0 --work /data/bench_scale
    python scripts/bench_scale.py --fractions 0.1 --reference-src OLD_CHECKOUT   # + the previous datasets

For each fraction of the release's row counts (CheXpert 187,825; ChestX-ray8 112,120;
MIMIC-CXR-JPG 243,334; Padchest 96,184; VinDr-CXR 18,000: 657,463 rows at 1.0), it builds
a synthetic Hub-shaped mirror (``chexmask_u_tools.testing.mirror.build_scaled_mirror``: the
packaged sample rows translated by distinct whole-pixel shifts with their masks, ids unique,
std varied per row and node; one released-layout parquet file per source, reused when
present) and its cache, then measures, each in a fresh child process:

* cache build (``build_cache``) and a filtered query over the cache;
* the map-style dataset over the cache (``CheXmaskUDataset(cache, None, missing="masks_only",
  size=512)``): first build of its row store, and its floor (writing as many bytes beside the
  cache, in 8 MiB blocks, then fsync), reopening it, anonymous memory of the process
  after the build and 1,520 random samples, samples/s (best of three windows of 500, after 20 to warm up);
* a DataLoader with 2 fork and 2 spawn workers: first batch, samples/s, each worker's
  anonymous memory over a worker of a tiny dataset (the 200 sample rows);
* the iterable dataset (shuffled): first sample, samples/s (best of three windows of 2,000);
* with ``--hf``: the map-style dataset over a ``to_hf_dataset`` output of the cache (a
  ``datasets.Dataset`` memory-mapping its Arrow file, written once per fraction under
  ``--work``): first build of its row store, reopening it, and the anonymous memory the
  build adds (its peak, sampled every 10 ms, and what stays after), and how much of the
  dataset's Arrow file it touched (the growth of ``RssFile``: mapped pages read).

Anonymous memory is the ``Anonymous:`` line of ``/proc/<pid>/smaps_rollup`` (pages that
belong to the process alone, not the mapped files it shares).  ``--reference-src`` points at
a checkout of the previous chexmask-u-tools (e.g. ``git worktree add OLD c231f60``) whose
datasets collected the table into the heap; its rows are measured the same way at the
fractions given (avoid 1.0: it needs about 14 GB).  Timing is never asserted in a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
SIZE = 512
BATCH = 32


def anonymous_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def file_pages_mib() -> float:
    """``RssFile`` of this process: the pages of mapped files it has touched (shared, but read from disk once)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child(kind: str, cache: str, extra: dict) -> dict:
    """Run one measurement in a fresh interpreter (clean memory accounting)."""
    env = dict(os.environ)
    source = extra.get("src", str(HERE))
    env["PYTHONPATH"] = source + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, __file__, "--child", kind, "--cache", cache, "--extra", json.dumps(extra)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=source)
    if done.returncode:
        raise SystemExit(f"child {kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- children
def child_query(cache: str, extra: dict) -> dict:
    import polars as pl

    import chexmask_u_tools as cxu

    start = time.perf_counter()
    kept = (
        cxu.open_cache(cache)
        .filter((pl.col("node_sigma_mean") < 6.0) & (pl.col("dice_rca_mean") >= 0.7) & (pl.col("source") == "CheXpert"))
        .select("source", "image_id", "node_sigma_mean", "dice_rca_mean")
        .collect()
    )
    return {"query_s": time.perf_counter() - start, "rows": kept.height}


def _dataset(cache: str, extra: dict):
    import chexmask_u_tools as cxu

    if extra.get("reference"):
        return cxu.CheXmaskUDataset(cxu.open_cache(cache), None, missing="masks_only", size=SIZE)
    return cxu.CheXmaskUDataset(cache, None, missing="masks_only", size=SIZE)


def child_map(cache: str, extra: dict) -> dict:
    import numpy as np

    import chexmask_u_tools as cxu

    cxu.CheXmaskUDataset  # noqa: B018  (imports torch: not part of the build)

    before = anonymous_mib()
    start = time.perf_counter()
    dataset = _dataset(cache, extra)
    build = time.perf_counter() - start
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(dataset), 1520)
    for i in picks[:20]:  # warm-up, not timed: the first samples load the kernels and torch's first ops
        dataset[int(i)]
    rates = []
    for window in picks[20:].reshape(3, 500):  # best of three windows, as for the iterable dataset
        start = time.perf_counter()
        for i in window:
            dataset[int(i)]
        rates.append(len(window) / (time.perf_counter() - start))
    rate = max(rates)
    return {"build_s": build, "rows": len(dataset), "anon_before_mib": before, "anon_mib": anonymous_mib(), "samples_s": rate}


def child_loader(cache: str, extra: dict) -> dict:
    import torch

    import chexmask_u_tools as cxu

    if extra.get("tiny"):
        dataset = cxu.CheXmaskUDataset(cxu.load_sample(), None, missing="masks_only", size=SIZE)
    else:
        dataset = _dataset(cache, extra)
    batches = extra.get("batches", 30)
    sampler = torch.utils.data.RandomSampler(
        dataset, replacement=True, num_samples=(batches + 1) * BATCH, generator=torch.Generator().manual_seed(0)
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=BATCH, num_workers=2, sampler=sampler, multiprocessing_context=extra["context"], persistent_workers=False
    )
    start = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    rate = batches * BATCH / (time.perf_counter() - start)
    workers = [anonymous_mib(worker.pid) for worker in iterator._workers]
    del iterator
    return {"first_batch_s": first, "samples_s": rate, "worker_anon_mib": workers}


def _peak_anonymous(run):
    """``run()``'s result, its seconds, and the peak and final anonymous memory (MiB) it added (sampled every 10 ms)."""
    import gc
    import threading

    gc.collect()
    before = anonymous_mib()
    peak, done = [before], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], anonymous_mib())
            done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        result = run()
    finally:
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    gc.collect()
    after = anonymous_mib()
    return result, seconds, max(peak[0], after) - before, after - before


def child_hf(cache: str, extra: dict) -> dict:
    import datasets

    import chexmask_u_tools as cxu
    from chexmask_u_tools.io.hf import hf_features

    cxu.CheXmaskUDataset  # noqa: B018  (imports torch: not part of the build)
    os.environ["CHEXMASK_U_CACHE"] = extra["store_root"]  # where this run's stores go (the new datasets reuse them)
    hf = datasets.Dataset.from_file(extra["arrow"], info=datasets.DatasetInfo(features=hf_features()))
    file_before = file_pages_mib()
    dataset, seconds, peak, after = _peak_anonymous(lambda: cxu.CheXmaskUDataset(hf, None, missing="masks_only", size=SIZE))
    return {"build_s": seconds, "rows": len(dataset), "peak_added_mib": peak, "after_added_mib": after,
            "file_mib": file_pages_mib() - file_before, "arrow_mib": Path(extra["arrow"]).stat().st_size / 2**20}


def child_stream(cache: str, extra: dict) -> dict:
    import chexmask_u_tools as cxu

    cxu.CheXmaskUIterableDataset  # noqa: B018  (resolves the lazy torch import before timing)

    if extra.get("reference"):
        dataset = cxu.CheXmaskUIterableDataset(cxu.open_cache(cache), None, missing="masks_only", size=SIZE, shuffle=True)
    else:
        dataset = cxu.CheXmaskUIterableDataset(cache, None, missing="masks_only", size=SIZE, shuffle=True)
    start = time.perf_counter()
    iterator = iter(dataset)
    next(iterator)
    first = time.perf_counter() - start
    # Best of three windows of 2,000 samples: one short window moved by 1.5x between runs on this shared machine.
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(2000):
            next(iterator)
        rates.append(2000 / (time.perf_counter() - start))
    return {"first_sample_s": first, "samples_s": max(rates)}


def child_write_floor(cache: str, extra: dict) -> dict:
    """Seconds to write ``extra["bytes"]`` in 8 MiB blocks beside the cache and fsync them: the floor of a store's build here."""
    block = bytes(8 << 20)
    path = Path(cache).parent / f"write-floor-{os.getpid()}.tmp"
    start = time.perf_counter()
    try:
        with open(path, "wb") as handle:
            left = extra["bytes"]
            while left > 0:
                handle.write(block[: min(left, len(block))])
                left -= len(block)
            os.fsync(handle.fileno())
        return {"write_s": time.perf_counter() - start}
    finally:
        path.unlink(missing_ok=True)


CHILDREN = {"query": child_query, "map": child_map, "loader": child_loader, "stream": child_stream, "hf": child_hf, "write_floor": child_write_floor}


# ---------------------------------------------------------------------------- parent
def prepare(work: Path, fraction: float) -> tuple[str, float | None]:
    import chexmask_u_tools as cxu
    from chexmask_u_tools.hub.cache import find_cache
    from chexmask_u_tools.testing.mirror import build_scaled_mirror

    mirror = build_scaled_mirror(work / f"mirror-{fraction:g}", fraction)
    found = find_cache(mirror, work / f"cache-{fraction:g}")
    if found is not None:
        return str(found), None
    start = time.perf_counter()
    cache = cxu.build_cache(mirror, work / f"cache-{fraction:g}", progress=False)
    return str(cache), time.perf_counter() - start


def prepare_hf(work: Path, fraction: float, cache: str) -> str:
    """The Arrow file of ``to_hf_dataset(open_cache(cache))`` for this fraction (written once, then reused)."""
    import chexmask_u_tools as cxu

    folder = work / f"hf-{fraction:g}"
    done = folder / "arrow-file.txt"
    if done.is_file() and Path(done.read_text()).is_file():
        return done.read_text()
    dataset = cxu.to_hf_dataset(cxu.open_cache(cache), cache_dir=folder)
    path = dataset.cache_files[0]["filename"]
    done.write_text(path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", default="0.02,0.1,1.0")
    parser.add_argument("--work", type=Path, default=Path("bench_out") / "scale")
    parser.add_argument("--reference-src", type=Path, help="checkout of the previous chexmask-u-tools, measured at the same fractions")
    parser.add_argument("--reference-fractions", default="0.02,0.1", help="fractions at which the reference runs")
    parser.add_argument("--hf", action="store_true", help="also measure the map-style dataset over a to_hf_dataset output")
    parser.add_argument("--child")
    parser.add_argument("--cache")
    parser.add_argument("--extra", default="{}")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args.cache, json.loads(args.extra))))
        return 0

    fractions = [float(f) for f in args.fractions.split(",")]
    reference_fractions = {float(f) for f in args.reference_fractions.split(",")} if args.reference_src else set()
    print(f"## bench_scale: {os.cpu_count()} CPU cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; "
          f"masks_only, size {SIZE}, hard masks, batch {BATCH}\n")
    tiny = {context: _child("loader", "", {"tiny": True, "context": context}) for context in ("fork", "spawn")}
    results = {}
    for fraction in fractions:
        cache, cache_s = prepare(args.work, fraction)
        shutil.rmtree(Path(cache) / "rowstore", ignore_errors=True)
        row = {"cache_s": cache_s, "query": _child("query", cache, {})}
        row["map_first"] = _child("map", cache, {})
        store_bytes = sum(path.stat().st_size for path in (Path(cache) / "rowstore").rglob("*") if path.is_file())
        row["floor"] = {"bytes": store_bytes, **_child("write_floor", cache, {"bytes": store_bytes})}
        row["map_again"] = _child("map", cache, {})
        for context in ("fork", "spawn"):
            row[context] = _child("loader", cache, {"context": context})
        row["stream"] = _child("stream", cache, {})
        if args.hf:
            arrow = prepare_hf(args.work, fraction, cache)
            stores = args.work / f"hf-{fraction:g}-stores"
            shutil.rmtree(stores, ignore_errors=True)
            row["hf_first"] = _child("hf", cache, {"arrow": arrow, "store_root": str(stores)})
            row["hf_again"] = _child("hf", cache, {"arrow": arrow, "store_root": str(stores)})
        if fraction in reference_fractions:
            old = {"src": str(args.reference_src.resolve()), "reference": True}
            row["ref_map"] = _child("map", cache, old)
            for context in ("fork", "spawn"):
                row[f"ref_{context}"] = _child("loader", cache, {**old, "context": context})
            row["ref_stream"] = _child("stream", cache, old)
            if args.hf:
                row["ref_hf"] = _child("hf", cache, {**old, "arrow": arrow, "store_root": str(stores)})
        results[fraction] = row
        print(f"fraction {fraction:g}: {row['map_first']['rows']:,} rows measured", flush=True)

    def cell(value, fmt):
        return "-" if value is None else format(value, fmt)

    print("\n| fraction | rows | cache build | filtered query | map: first build | floor: writing the store's bytes here | map: reopen "
          "| map: anon after build + 1,520 samples | map samples/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for fraction, row in results.items():
        first, again = row["map_first"], row["map_again"]
        print(f"| {fraction:g} | {first['rows']:,} | {cell(row['cache_s'], '.0f') + ' s' if row['cache_s'] else 'reused'} | "
              f"{row['query']['query_s']:.3f} s | {first['build_s']:.1f} s | "
              f"{row['floor']['write_s']:.1f} s ({row['floor']['bytes'] / 1e9:.2f} GB) | {again['build_s']:.2f} s | "
              f"{again['anon_mib'] / 1024:.2f} GiB | {again['samples_s']:,.0f} |")
    print("\n| fraction | workers | first batch | samples/s | worker anon (MiB) | over a tiny dataset's worker |")
    print("|---:|---|---:|---:|---:|---:|")
    for fraction, row in results.items():
        for context in ("fork", "spawn"):
            got = row[context]
            base = max(tiny[context]["worker_anon_mib"])
            print(f"| {fraction:g} | 2 {context} | {got['first_batch_s']:.2f} s | {got['samples_s']:,.0f} | "
                  f"{', '.join(f'{m:.0f}' for m in got['worker_anon_mib'])} | {max(got['worker_anon_mib']) - base:+.0f} MiB |")
    print(f"(a tiny dataset's workers (the 200 sample rows): fork {', '.join(f'{m:.0f}' for m in tiny['fork']['worker_anon_mib'])} MiB, "
          f"first batch {tiny['fork']['first_batch_s']:.2f} s; spawn {', '.join(f'{m:.0f}' for m in tiny['spawn']['worker_anon_mib'])} MiB, "
          f"first batch {tiny['spawn']['first_batch_s']:.2f} s: a spawn worker's start-up, imports mostly, is the floor)")
    smallest = results[min(results)]["stream"]["samples_s"]
    print("\n(the iterable dataset opens the store the map-style one built: its first sample excludes the build)")
    print("| fraction | iterable: first sample | samples/s | vs the smallest fraction | vs map-style, same data |")
    print("|---:|---:|---:|---:|---:|")
    for fraction, row in results.items():
        got = row["stream"]
        print(f"| {fraction:g} | {got['first_sample_s']:.3f} s | {got['samples_s']:,.0f} | {got['samples_s'] / smallest:.2f}x | "
              f"{got['samples_s'] / row['map_again']['samples_s']:.2f}x |")
    if args.hf:
        print("\n| fraction | datasets.Dataset input | build | anon added: peak during the build | anon added: after | Arrow file pages touched |")
        print("|---:|---|---:|---:|---:|---:|")
        for fraction, row in results.items():
            labels = [("hf_first", "first build"), ("hf_again", "reopen"), ("ref_hf", "previous datasets (--reference-src)")]
            for name, label in labels:
                if name in row:
                    got = row[name]
                    print(f"| {fraction:g} | {label} | {got['build_s']:.2f} s | {got['peak_added_mib']:.0f} MiB | "
                          f"{got['after_added_mib']:.0f} MiB | {got['file_mib']:.0f} of {got['arrow_mib']:.0f} MiB |")
    if reference_fractions:
        print("\nthe previous datasets (--reference-src), same caches, same children:")
        print("| fraction | map build | map anon after build + 1,520 samples | map samples/s | fork worker anon | spawn worker anon | spawn first batch | iterable first sample | iterable samples/s |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for fraction, row in results.items():
            if "ref_map" not in row:
                continue
            ref = row["ref_map"]
            print(f"| {fraction:g} | {ref['build_s']:.1f} s | {ref['anon_mib'] / 1024:.2f} GiB | {ref['samples_s']:,.0f} | "
                  f"{max(row['ref_fork']['worker_anon_mib']):.0f} MiB | {max(row['ref_spawn']['worker_anon_mib']):.0f} MiB | "
                  f"{row['ref_spawn']['first_batch_s']:.1f} s | {row['ref_stream']['first_sample_s']:.2f} s | "
                  f"{row['ref_stream']['samples_s']:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
