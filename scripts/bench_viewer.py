"""Speed of ``chexmask-u view`` at the release's size: app start, a rules change, a row's overlay.

Usage::

    python scripts/bench_viewer.py --cache DIR            # a cache of the full release (or any cache)
    python scripts/bench_viewer.py --build-cache WORK     # build a full-size synthetic one under WORK first

``--build-cache`` writes the synthetic release of ``chexmask_u_tools.testing.mirror.build_scaled_mirror``
under ``WORK/mirror`` (one released-layout parquet file per source at the release's row
counts: the embedded sample's rows translated by distinct whole-pixel shifts with their
masks, ids unique, std varied per row and node; the one ``scripts/bench_scale.py`` uses)
and converts it with ``build_cache`` into ``WORK/cache``; a complete mirror and cache there
are reused.

Targets (issue 23): a rules change answers in <= 0.5 s, a row's overlay in <= 0.3 s, the
app starts in <= 5 s, and nothing loads the whole table into the heap.  Each figure is
the median of several runs; the reference is the straightforward path over the same
cache, measured in the same run: ``apply_rules`` over the lazy cache for the rules
change, and a ``filter(source, image_id)`` scan of the cache, ``plot_contours`` and
``savefig`` for an overlay.  Overlays are drawn over synthetic 2320 x 2828 JPEG X-rays
(a CheXpert-sized image) written for the rows timed.  Timing is never asserted in a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl


def build_full_size_cache(work: Path) -> Path:
    """The full-size synthetic mirror under ``work/mirror`` and its cache under ``work/cache`` (both reused when there)."""
    import chexmask_u_tools as cxu
    from chexmask_u_tools.hub.cache import find_cache
    from chexmask_u_tools.testing.mirror import build_scaled_mirror

    mirror = build_scaled_mirror(work / "mirror", 1.0)
    found = find_cache(mirror, work / "cache")
    return found if found is not None else cxu.build_cache(mirror, work / "cache", progress=True, workers=1)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_app(cache: Path, images: Path | None, log: Path) -> tuple[subprocess.Popen, str, float]:
    """``chexmask-u view CACHE`` in a child process; returns it, its address and the seconds until it answered."""
    import httpx

    port = _free_port()
    command = [sys.executable, "-m", "chexmask_u_tools", "view", str(cache), "--port", str(port), "--weights", "random"]
    if images is not None:
        command += [f"--images=CheXpert={images}"]
    url = f"http://127.0.0.1:{port}/"
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return process, url, time.perf_counter() - start
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.perf_counter() - start > 120:
            raise SystemExit(f"the viewer did not start; see {log}")
        time.sleep(0.05)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


def write_images(rows: pl.DataFrame, root: Path) -> None:
    """A synthetic X-ray of CheXpert's usual size (2320 x 2828, JPEG) for each row, where the resolver looks."""
    from PIL import Image

    from chexmask_u_tools.masks.frames import to_original_frame
    from chexmask_u_tools.testing import demo_image_path, synthetic_xray

    for source, image_id, landmarks in rows.select("source", "image_id", "landmarks").iter_rows():
        target = root / demo_image_path(source, image_id)
        if target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        points = to_original_frame(np.asarray(landmarks, dtype=np.float64), 2828, 2320)
        Image.fromarray(synthetic_xray(points, 2828, 2320)).save(target, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, help="a complete cache folder (manifest.json) to measure over")
    parser.add_argument("--build-cache", type=Path, metavar="WORK", help="build the full-size synthetic cache under WORK first")
    parser.add_argument("--repeat", type=int, default=7, help="runs per figure (median; default 7)")
    args = parser.parse_args()
    if (args.cache is None) == (args.build_cache is None):
        parser.error("give --cache DIR or --build-cache WORK")
    cache = args.cache if args.cache is not None else build_full_size_cache(args.build_cache)

    import chexmask_u_tools as cxu
    from chexmask_u_tools.analysis.plots import plot_contours, row_arrays
    from chexmask_u_tools.cli.viewer.carry import cli_command, python_snippet
    from chexmask_u_tools.cli.viewer.data import INDEX_COLUMNS, ViewerData
    from chexmask_u_tools.cli.viewer.render import histogram_png, overlay_png, row_image

    work = Path(tempfile.mkdtemp(prefix="bench-viewer-"))
    log = work / "server.log"
    rows = cxu.open_cache(cache).select(pl.len()).collect().item()
    repeat = args.repeat

    # --- app start (the whole command: interpreter, imports, index, Gradio, server) ---
    starts, cpu, rss = [], [], []
    for _ in range(3):
        process, url, seconds = start_app(cache, None, log)
        starts.append(seconds)
        cpu.append(_cpu_seconds(process.pid))
        rss.append(_status_kib(process.pid, "VmRSS"))
        stop(process)
    start_s = statistics.median(starts)
    load = os.getloadavg()[0]

    # --- rules change: the page's work in process, and /browse over HTTP ---
    data = ViewerData.open(cache)
    index_mib = data.index.estimated_size() / 2**20
    sample_rows = cxu.open_cache(cache).head(20_000).collect()
    table_gib = sample_rows.estimated_size() * rows / sample_rows.height / 2**30
    counter = iter(range(10**6))

    def page_refresh(rules: list[str]) -> int:
        browse = data.browse(rules)
        browse.page("sigma", size=25)
        column = data.index["node_sigma_mean"].to_numpy()
        histogram_png("node_sigma_mean", column, browse.kept["node_sigma_mean"].to_numpy(), browse.thresholds("node_sigma_mean"))
        cli_command(data, browse), python_snippet(data, browse)
        return browse.kept.height

    def fresh(template: str, base: float) -> list[str]:
        """The rules with a threshold near ``base`` never used before (no cached answer)."""
        return template.format(base + next(counter) * 1e-4).splitlines()

    rule_sets = {
        "image.mean<6": ("image.mean<{:.4f}", 6.0),
        "organ.heart.mean<=10 + dice.mean>=0.7": ("dice.mean>=0.7\norgan.heart.mean<={:.4f}", 10.0),
        "source in CheXpert + image.max<=14": ("source in CheXpert\nimage.max<={:.4f}", 14.0),
    }
    def reference_refresh(rules: list[str]) -> int:
        """The same page without the index: apply_rules over the lazy cache, then the same page and histogram."""
        kept = cxu.apply_rules(cxu.open_cache(cache), rules).select(INDEX_COLUMNS).collect()
        kept.sort("node_sigma_mean", descending=True, nulls_last=True, maintain_order=True).head(25)
        column = cxu.open_cache(cache).select("node_sigma_mean").collect()["node_sigma_mean"].to_numpy()
        histogram_png("node_sigma_mean", column, kept["node_sigma_mean"].to_numpy(), [])
        return kept.height

    rules_rows = []
    for name, (template, base) in rule_sets.items():
        ours = statistics.median(_timed(lambda: page_refresh(fresh(template, base)), repeat))
        reference = statistics.median(_timed(lambda: reference_refresh(fresh(template, base)), max(3, repeat // 2)))
        rules_rows.append((name, ours, reference))
    raw_ours = statistics.median(_timed(lambda: data.browse(fresh("image.q0.9<={:.4f}", 12.0)), 3))
    raw_reference = statistics.median(_timed(lambda: cxu.apply_rules(cxu.open_cache(cache), ["image.q0.9<=12"]).select(pl.len()).collect(), 1))

    # --- overlays: rows with a CheXpert-sized image, and on a blank canvas ---
    chexpert = data.index.filter(pl.col("source") == "CheXpert").sample(repeat, seed=1)
    images = work / "images"
    write_images(cxu.open_cache(cache).filter(pl.col("image_id").is_in(chexpert["image_id"].implode())).collect(), images)
    pictured = ViewerData.open(cache, images={"CheXpert": images})
    keys = chexpert.select("source", "image_id").rows()

    def ours_overlay(keys_iter, viewer):
        source, image_id = next(keys_iter)
        row = viewer.row(source, image_id)
        image, note = row_image(row, viewer.images)
        assert note is None or viewer.images is None, note
        return overlay_png(row, image=image, note=note)

    def reference_overlay(keys_iter):
        import io

        from chexmask_u_tools.images.read import read_image
        from chexmask_u_tools.testing import demo_image_path

        source, image_id = next(keys_iter)
        row = cxu.open_cache(cache).filter((pl.col("source") == source) & (pl.col("image_id") == image_id)).collect().row(0, named=True)
        landmarks, std, size = row_arrays(row)
        square, _ = cxu.pad_to_square(read_image(images / demo_image_path(source, image_id)))
        from PIL import Image

        pixels = np.asarray(Image.fromarray(square).resize((1024, 1024), Image.BILINEAR))
        fig = plot_contours(landmarks, std, image=pixels, size=size, width_px=1024, height_px=1024)
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=fig.dpi)
        return out.getvalue()

    keys_a, keys_b, keys_c = iter(keys * 3), iter(keys * 3), iter(keys * 3)
    overlay_image = statistics.median(_timed(lambda: ours_overlay(keys_a, pictured), repeat))
    overlay_blank = statistics.median(_timed(lambda: ours_overlay(keys_b, data), repeat))
    overlay_reference = statistics.median(_timed(lambda: reference_overlay(keys_c), repeat))

    # --- export of the kept rows, against the command the page shows ---
    from chexmask_u_tools.cli.viewer.carry import export_rows, export_target

    kept_browse = data.browse("image.mean<6")
    start = time.perf_counter()
    export_rows(data, kept_browse, export_target("kept.parquet", work))
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "chexmask_u_tools", "filter", str(cache), "--rule", "image.mean<6", "--out", str(work / "filter.parquet"), "--no-progress"],
        check=True, capture_output=True,
    )  # fmt: skip
    filter_s = time.perf_counter() - start
    assert pl.read_parquet(work / "kept.parquet").equals(pl.read_parquet(work / "filter.parquet"))

    # --- over HTTP, as a client sees it ---
    from gradio_client import Client

    process, url, _ = start_app(cache, images, log)
    try:
        client = Client(url, verbose=False, download_files=str(work / "downloads"))
        time.sleep(3)  # the random weights load in the background after the start
        http_floor = statistics.median(_timed(lambda: client.predict("", 0, api_name="/browse"), repeat))
        http_browse = statistics.median(_timed(lambda: client.predict(fresh("image.mean<{:.4f}", 6.0)[0], 25, api_name="/browse"), repeat))
        keys_d = iter(keys * 3)
        http_show = statistics.median(_timed(lambda: client.predict(*next(keys_d), api_name="/show"), repeat))
        server_rss = _status_kib(process.pid, "VmRSS") / 1024
        server_peak = _status_kib(process.pid, "VmHWM") / 1024
    finally:
        stop(process)
    shutil.rmtree(work, ignore_errors=True)

    print(f"## bench_viewer: {rows:,} rows ({cache}), median of {repeat} runs")
    print()
    print("| app | measured | target |")
    print("|---|---|---|")
    print(f"| start: `chexmask-u view CACHE` until it answers HTTP (median of 3; load average {load:.1f} on {os.cpu_count()} cores) | {start_s:.2f} s | <= 5 s |")
    print(f"| CPU time of that start (user + system, all threads) | {statistics.median(cpu):.2f} s | - |")
    print(f"| server memory after start | {statistics.median(rss) / 1024:.0f} MB RSS | - |")
    print(f"| server memory after the HTTP requests below (peak) | {server_rss:.0f} MB RSS ({server_peak:.0f} MB peak) | "
          f"the table in memory would be {table_gib:.1f} GB |")
    print(f"| the in-memory index (ids, sizes, Dice, summaries) | {index_mib:.0f} MB | - |")
    print()
    print("| a rules change | viewer | reference: apply_rules over the lazy cache, same page | ratio | target |")
    print("|---|---|---|---|---|")
    for name, ours, reference in rules_rows:
        print(f"| `{name}`: page refresh (rules, count, page of 25, histogram, commands) | {ours:.3f} s | {reference:.3f} s | "
              f"{reference / ours:.1f}x | <= 0.5 s |")
    print(f"| `image.mean<6` through `/browse` over HTTP (gradio_client, 25 rows) | {http_browse:.3f} s | - | - | <= 0.5 s |")
    print(f"| Gradio's own round trip: `/browse` of no rule, 0 rows, answered from memory | {http_floor:.3f} s | - | - | - |")
    print(f"| `image.q0.9<=12` (per-node std read from the cache, part by part) | {raw_ours:.2f} s | {raw_reference:.2f} s | "
          f"{raw_reference / raw_ours:.1f}x | not a target |")
    print()
    print("| a row's overlay (1024 x 1024 PNG) | viewer | reference: scan filter + plot_contours + savefig | ratio | target |")
    print("|---|---|---|---|---|")
    print(f"| over a 2320 x 2828 JPEG | {overlay_image:.3f} s | {overlay_reference:.3f} s | {overlay_reference / overlay_image:.1f}x | <= 0.3 s |")
    print(f"| on a blank canvas (no --images) | {overlay_blank:.3f} s | - | - | <= 0.3 s |")
    print(f"| `/show` over HTTP (gradio_client, image included) | {http_show:.3f} s | - | - | <= 0.3 s |")
    print()
    print("| export of the kept rows (`image.mean<6`) | viewer | reference: `chexmask-u filter` (the command the page shows) | ratio |")
    print("|---|---|---|---|")
    print(f"| {kept_browse.kept.height:,} rows to parquet, identical files | {export_s:.1f} s | {filter_s:.1f} s | {filter_s / export_s:.1f}x |")


def _timed(function, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


if __name__ == "__main__":
    main()
