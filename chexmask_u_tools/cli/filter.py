"""``chexmask-u filter``: write the rows passing quality / uncertainty / metadata rules, and say what each removed.

The threshold flags are shortcuts for rules (the vocabulary of ``export --rule``):

=================================================  ==============================
flag (aliases)                                     rule
=================================================  ==============================
``--sources A B``                                  ``source in A,B``
``--frames F``                                     ``frame in F``
``--min-dice X`` (``--min-dice-rca-mean``)         ``dice.mean>=X``
``--min-dice-rca-max X``                           ``dice.max>=X``
``--max-node-sigma X`` (``--max-node-sigma-mean``)  ``image.mean<=X``
``--max-node-sigma-max X``                         ``image.max<=X``
``--max-organ-sigma [ORGAN=]X``                    ``organ.<organ>.mean<=X``
``--max-latent-sigma X`` (``--max-latent-sigma-mean``)  ``latent.mean<=X``
``--image-ids FILE``                               ``image_id in <ids of FILE>``
=================================================  ==============================
"""

from __future__ import annotations

import argparse
import os
import sys

from chexmask_u_tools.cli._args import add_column_argument, add_on_error_argument, column_mapping

_CLI_FIX = (
    "pass --missing drop to remove those rows or --missing keep to keep them "
    "(for a --rule, add ';missing=drop' or ';missing=keep'), or narrow the input with --sources"
)


INTERRUPTED = "nothing was written (--out appears only when complete; an earlier file is left as it was); run the command again"
"""What Ctrl-C leaves (printed by the command line)."""

def register(subparsers: argparse._SubParsersAction) -> None:
    from chexmask_u_tools.hub.inputs import INPUT_SPEC_HELP

    parser = subparsers.add_parser(
        "filter",
        help="write a filtered subset (parquet) of a cache or dataset location",
        description=(
            "Filter CACHE_OR_LOCATION (a cache directory holding manifest.json, a local mirror directory or "
            "a Hub dataset repo id; a location uses its cache when one exists) and write the kept canonical "
            "rows to --out.  Prints how many rows each criterion removed, in order and on its own.  "
            "Criteria are rules, written as for 'export --rule' (e.g. 'image.q0.9<=12', 'dice.max>=0.8', "
            "'source in CheXpert,Padchest'); each threshold flag is a shortcut for one rule.  Thresholds are "
            "inclusive.  Rows lacking a filtered value are an error unless --missing says what to do.  With a "
            "location and --sources, files of other sources are not read, so the '(input)' count covers the "
            "files read."
        ),
    )
    parser.add_argument("source_path", metavar="INPUT", help=INPUT_SPEC_HELP)
    add_column_argument(parser)
    add_on_error_argument(parser)
    parser.add_argument("--out", required=True, help="output .parquet file (must not exist unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument(
        "--rule",
        action="append",
        default=[],
        metavar="RULE",
        help="a rule that removes failing rows, e.g. 'image.mean<=8' or 'dice.mean>=0.7;missing=drop' (repeatable)",
    )
    parser.add_argument("--sources", nargs="+", default=None, help="rule 'source in ...'")
    parser.add_argument("--frames", nargs="+", default=None, choices=["preprocessed", "original"], help="rule 'frame in ...'")
    parser.add_argument(
        "--min-dice", "--min-dice-rca-mean", dest="min_dice", type=float, default=None, metavar="X", help="rule dice.mean>=X"
    )
    parser.add_argument("--min-dice-rca-max", type=float, default=None, metavar="X", help="rule dice.max>=X")
    parser.add_argument(
        "--max-node-sigma",
        "--max-node-sigma-mean",
        dest="max_node_sigma",
        type=float,
        default=None,
        metavar="X",
        help="rule image.mean<=X (mean node sigma, px)",
    )
    parser.add_argument("--max-node-sigma-max", type=float, default=None, metavar="X", help="rule image.max<=X (px)")
    parser.add_argument(
        "--max-organ-sigma",
        nargs="+",
        default=None,
        metavar="[ORGAN=]X",
        help="rule organ.<organ>.mean<=X: X for all organs, or right_lung=X left_lung=Y heart=Z",
    )
    parser.add_argument(
        "--max-latent-sigma",
        "--max-latent-sigma-mean",
        dest="max_latent_sigma",
        type=float,
        default=None,
        metavar="X",
        help="rule latent.mean<=X",
    )
    parser.add_argument("--image-ids", default=None, metavar="FILE", help="keep only the ids listed in FILE (one per line)")
    parser.add_argument(
        "--missing",
        choices=["raise", "drop", "keep"],
        default="raise",
        help="rows lacking a value a threshold flag filters on: error (default), remove or keep them",
    )
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


def criteria_from_args(args: argparse.Namespace) -> dict:
    """The keyword criteria of :func:`~chexmask_u_tools.select.filtering.filter_rules` that the flags set."""
    image_ids = None
    if args.image_ids is not None:
        with open(args.image_ids, encoding="utf-8") as handle:
            image_ids = [line.strip() for line in handle if line.strip()]
    return {
        "sources": args.sources,
        "frames": args.frames,
        "min_dice_rca_mean": args.min_dice,
        "min_dice_rca_max": args.min_dice_rca_max,
        "max_node_sigma_mean": args.max_node_sigma,
        "max_node_sigma_max": args.max_node_sigma_max,
        "max_organ_sigma": _organ_thresholds(args.max_organ_sigma),
        "max_latent_sigma_mean": args.max_latent_sigma,
        "image_ids": image_ids,
    }


def run(args: argparse.Namespace) -> int:
    import polars as pl
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    from chexmask_u_tools.errors import InputError
    from chexmask_u_tools._atomic import atomic_path
    from chexmask_u_tools.hub.inputs import input_kind, open_table
    from chexmask_u_tools.hub.read import scan_parts
    from chexmask_u_tools.schema import CANONICAL_SCHEMA
    from chexmask_u_tools.select.filtering import (
        apply_filters,
        filter_report,
        filter_rules,
    )
    from chexmask_u_tools.select.rules import check_rules, parse_rules

    if not args.out.endswith(".parquet"):
        raise InputError(f"--out must end with .parquet, got {args.out!r}")
    if os.path.exists(args.out) and not args.overwrite:
        raise InputError(f"{args.out} exists; pass --overwrite to replace it")
    criteria = criteria_from_args(args)
    rules = parse_rules(args.rule)
    for rule in rules:
        if rule.action != "drop_image":
            raise InputError(
                f"--rule {rule.name!r} has action {rule.action!r}; filter keeps or removes whole rows: "
                "use 'chexmask-u export --rule' to mark organs or weight rows"
            )
    named = [*filter_rules(missing=args.missing, **criteria).values(), *rules]
    columns = column_mapping(args)
    if input_kind(args.source_path) in ("mirror", "hub"):
        # One lazy part per data file (or cache shard), for per-file progress.
        parts = scan_parts(
            args.source_path,
            sources=args.sources,
            frames=args.frames,
            revision=args.revision,
            cache_dir=args.cache_dir,
            use_cache=not args.no_cache,
            columns=columns,
            on_error=args.on_error,
        )
    else:  # the sample, one file or a cache folder: every input spec of open_table
        # --sources/--frames act as criteria below, so the report starts from every row of the input.
        lf = open_table(args.source_path, columns=columns or None, on_error=args.on_error)
        parts = [(args.source_path, lf)]
    whole = pl.concat([lf for _, lf in parts], how="vertical")
    check_rules(whole, named, fix=_CLI_FIX)
    unmatched = _unmatched_ids(whole, criteria["image_ids"])
    report = filter_report(whole, rules=rules, missing=args.missing, check_missing=False, **criteria)
    kept = 0
    schema = pl.DataFrame(schema=CANONICAL_SCHEMA).to_arrow().schema
    with atomic_path(args.out) as temporary, pq.ParquetWriter(temporary, schema, compression="zstd") as writer:
        for _, lf in tqdm(parts, desc="filtering", unit="file", disable=args.no_progress):
            subset = apply_filters(lf, rules=rules, missing=args.missing, check_missing=False, **criteria).collect()
            writer.write_table(subset.select(list(CANONICAL_SCHEMA)).to_arrow())
            kept += subset.height
    print(format_report(report))
    if unmatched:
        shown = ", ".join(repr(i) for i in unmatched[:5]) + (", ..." if len(unmatched) > 5 else "")
        print(
            f"warning: {len(unmatched)} of {len(set(criteria['image_ids']))} ids in {args.image_ids} are not in the input: {shown}",
            file=sys.stderr,
        )
    print(f"kept {kept} of {report['remaining'][0]} rows -> {args.out}")
    return 0


def _unmatched_ids(table, image_ids: list[str] | None) -> list[str]:
    """The listed ids that no row of ``table`` has (sorted), so that they can be reported."""
    import polars as pl

    if not image_ids:
        return []
    wanted = sorted(set(image_ids))
    found = set(table.filter(pl.col("image_id").is_in(wanted)).select(pl.col("image_id").unique()).collect()["image_id"])
    return [image_id for image_id in wanted if image_id not in found]
