"""``chexmask-u cache``: build (or resume) the local parquet cache of a Hub repo or local mirror."""

from __future__ import annotations

import argparse

from chexmask_u_tools.cli._args import add_column_argument, add_on_error_argument, column_mapping


INTERRUPTED = "the files converted so far are kept in the cache folder; run the same command again to resume"
"""What Ctrl-C leaves (printed by the command line)."""

def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="convert the dataset once into a sharded canonical parquet cache (resumable)",
        description=(
            "Discover the data files of LOCATION (a Hub dataset repo id, default mcosarinsky/CheXmask-U, "
            "or a local directory laid out like it), convert them into canonical parquet shards under "
            "--cache-dir and record the revision and checksums in manifest.json.  Run it again after an "
            "interruption to resume.  Later scans of the same revision use the cache automatically, "
            "also with HF_HUB_OFFLINE=1.  Offline, or while the Hub cannot be reached, a complete cache of the "
            "revision recorded last time is reused (and the command says so)."
        ),
    )
    parser.add_argument("location", nargs="?", default=None, help="Hub repo id or local mirror directory")
    add_column_argument(parser)
    parser.add_argument("--cache-dir", default=None, help="cache root (default: $CHEXMASK_U_CACHE or ~/.cache/chexmask-u-tools)")
    parser.add_argument("--revision", default=None, help="branch, tag or commit of the Hub repo (default main)")
    parser.add_argument("--sources", nargs="+", default=None, help="cache only these sources")
    parser.add_argument("--frames", nargs="+", default=None, choices=["preprocessed", "original"])
    parser.add_argument("--shards", type=int, default=None, help="number of shards (default: a multiple of 24)")
    add_on_error_argument(parser)
    parser.add_argument("--masks", choices=["released", "mean"], default="released")
    parser.add_argument("--workers", type=int, default=None, help="files converted in parallel (default min(2, cpus))")
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=None,
        help="seconds to wait for another build of the same cache (default: until it finishes)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete cache exists")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--list", action="store_true", help="only list the discovered files and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from chexmask_u_tools.hub.cache import build_cache, read_manifest
    from chexmask_u_tools.hub.discovery import discover
    from chexmask_u_tools.hub.location import open_location

    place = open_location(args.location, revision=args.revision)
    if args.list:
        print(discover(place).report())
        return 0

    def say(kind: str, detail: str) -> None:
        # The discovery report before converting; why a cache is reused offline; that another build runs.
        if kind in ("plan", "reuse", "wait"):
            print(detail, flush=True)

    directory = build_cache(
        place,
        args.cache_dir,
        sources=args.sources,
        frames=args.frames,
        n_shards=args.shards,
        masks=args.masks,
        on_error=args.on_error,
        force=args.force,
        progress=not args.no_progress,
        workers=args.workers,
        lock_timeout=args.lock_timeout,
        on_event=say,
        columns=column_mapping(args),
    )
    manifest = read_manifest(directory)
    skipped = manifest.skipped_rows
    print(
        f"cache ready: {directory}\n"
        f"  revision {manifest.revision}, {manifest.rows} rows in {manifest.n_shards} shards"
        + (f", {skipped} bad rows skipped" if skipped else "")
    )
    return 0
