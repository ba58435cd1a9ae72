"""``chexmask-u filter``: write the rows passing quality / uncertainty thresholds, and say what each removed."""

from __future__ import annotations

import argparse
import os


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "filter",
        help="write a filtered subset (parquet) of a cache or dataset location",
        description=(
            "Filter CACHE_OR_LOCATION (a cache directory holding manifest.json, a local mirror directory or "
            "a Hub dataset repo id; a location uses its cache when one exists) and write the kept canonical "
            "rows to --out.  Prints how many rows each criterion removed, in order and on its own.  "
            "Thresholds are inclusive; rows missing the filtered value are removed.  With a location and "
            "--sources, files of other sources are not read, so the '(input)' count covers the files read."
        ),
    )
    parser.add_argument("source_path", metavar="CACHE_OR_LOCATION")
    parser.add_argument("--out", required=True, help="output .parquet file")
    parser.add_argument("--sources", nargs="+", default=None)
    parser.add_argument("--frames", nargs="+", default=None, choices=["preprocessed", "original"])
    parser.add_argument("--min-dice-rca-mean", type=float, default=None)
    parser.add_argument("--min-dice-rca-max", type=float, default=None)
    parser.add_argument("--max-node-sigma", type=float, default=None, help="max mean node sigma (px)")
    parser.add_argument("--max-node-sigma-max", type=float, default=None, help="max largest node sigma (px)")
    parser.add_argument(
        "--max-organ-sigma",
        nargs="+",
        default=None,
        metavar="[ORGAN=]X",
        help="max organ mean node sigma: X for all organs, or right_lung=X left_lung=Y heart=Z",
    )
    parser.add_argument("--max-latent-sigma", type=float, default=None, help="max mean latent sigma")
    parser.add_argument("--image-ids", default=None, metavar="FILE", help="keep only the ids listed in FILE (one per line)")
    parser.add_argument("--revision", default=None)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--no-cache", action="store_true", help="read the data files even if a cache exists")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def _organ_thresholds(values: list[str] | None):
    from chexmask_u_tools.errors import InputError

    if values is None:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return _number(values[0], "--max-organ-sigma")
    thresholds = {}
    for value in values:
        organ, sep, number = value.partition("=")
        if not sep:
            raise InputError(f"--max-organ-sigma: expected ORGAN=X, got {value!r}")
        thresholds[organ.strip()] = _number(number, f"--max-organ-sigma {organ}")
    return thresholds


def _number(text: str, what: str) -> float:
    from chexmask_u_tools.errors import InputError

    try:
        return float(text)
    except ValueError as error:
        raise InputError(f"{what}: not a number: {text!r}") from error


def format_report(report) -> str:
    """The :func:`~chexmask_u_tools.select.filtering.filter_report` table as aligned text."""
    width = max(len("criterion"), *(len(name) for name in report["criterion"]))
    lines = [f"{'criterion':<{width}}  {'removed':>10}  {'alone':>10}  {'remaining':>10}"]
    for name, removed, alone, remaining in report.iter_rows():
        removed_text = "" if removed is None else str(removed)
        alone_text = "" if alone is None else str(alone)
        lines.append(f"{name:<{width}}  {removed_text:>10}  {alone_text:>10}  {remaining:>10}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import polars as pl
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    from chexmask_u_tools.hub.cache import MANIFEST, shard_files
    from chexmask_u_tools.errors import InputError
    from chexmask_u_tools.select.filtering import apply_filters, filter_report
    from chexmask_u_tools.hub.read import scan_parts
    from chexmask_u_tools.schema import CANONICAL_SCHEMA

    if not args.out.endswith(".parquet"):
        raise InputError(f"--out must end with .parquet, got {args.out!r}")
    image_ids = None
    if args.image_ids is not None:
        with open(args.image_ids, encoding="utf-8") as handle:
            image_ids = [line.strip() for line in handle if line.strip()]
    criteria = dict(
        sources=args.sources,
        frames=args.frames,
        min_dice_rca_mean=args.min_dice_rca_mean,
        min_dice_rca_max=args.min_dice_rca_max,
        max_node_sigma_mean=args.max_node_sigma,
        max_node_sigma_max=args.max_node_sigma_max,
        max_organ_sigma=_organ_thresholds(args.max_organ_sigma),
        max_latent_sigma_mean=args.max_latent_sigma,
        image_ids=image_ids,
    )
    if os.path.isfile(os.path.join(args.source_path, MANIFEST)):
        parts = [(shard, pl.scan_parquet(shard, schema=CANONICAL_SCHEMA)) for shard in shard_files(args.source_path)]
    else:
        parts = scan_parts(
            args.source_path,
            sources=args.sources,
            frames=args.frames,
            revision=args.revision,
            cache_dir=args.cache_dir,
            use_cache=not args.no_cache,
        )
    report = filter_report(pl.concat([lf for _, lf in parts], how="vertical"), **criteria)
    temporary = f"{args.out}.tmp-{os.getpid()}"
    kept = 0
    try:
        schema = pl.DataFrame(schema=CANONICAL_SCHEMA).to_arrow().schema
        with pq.ParquetWriter(temporary, schema, compression="zstd") as writer:
            for _, lf in tqdm(parts, desc="filtering", unit="file", disable=args.no_progress):
                subset = apply_filters(lf, **criteria).collect()
                writer.write_table(subset.to_arrow())
                kept += subset.height
        os.replace(temporary, args.out)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    print(format_report(report))
    print(f"kept {kept} of {report['remaining'][0]} rows -> {args.out}")
    return 0
