"""``chexmask-u describe``: a Markdown dataset card of a cohort (counts, patients, quality, citation)."""

from __future__ import annotations

import argparse

from chexmask_u_tools.cli._args import add_column_argument, column_mapping


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "describe",
        help="write a Markdown dataset card (counts, patients per split, quality, citation)",
        description=(
            "Describe INPUT ('sample' for the embedded sample, a CheXmask-U file, or a folder of them) as a "
            "Markdown card: rows each --rule removed, counts per source, split and view, patients per split "
            "with the leakage check, Dice RCA and node-sigma quantiles per source (figures beside --out), and "
            "the citation block.  --metadata joins each source's own metadata files first (views, patients, "
            "official splits, labels); --patient-split adds a patient-level split."
        ),
    )
    parser.add_argument("input", metavar="INPUT", help="'sample', a CheXmask-U file, or a folder of them")
    add_column_argument(parser)
    parser.add_argument("--out", required=True, help="the card (.md); figures are written beside it")
    parser.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="[SOURCE=]PATH",
        help="a source's metadata folder or file (repeatable); without SOURCE= the source is detected from the columns",
    )
    parser.add_argument("--matched-only", action="store_true", help="keep only the rows that --metadata matched")
    parser.add_argument("--rule", action="append", default=[], metavar="RULE", help="a rule in text form, e.g. dice.mean>=0.7 (repeatable)")
    parser.add_argument("--patient-split", action="store_true", help="add a patient-level split (80/10/10 by default)")
    parser.add_argument("--fractions", nargs="+", default=None, metavar="NAME=F", help="split fractions, e.g. train=0.8 val=0.1 test=0.1")
    parser.add_argument("--seed", type=int, default=0, help="seed of --patient-split")
    parser.add_argument("--official-split", action="store_true", help="with --patient-split: keep each source's official split")
    parser.add_argument("--duplicates", choices=["raise", "first"], default="raise", help="duplicate ids in metadata files")
    parser.add_argument("--title", default="CheXmask-U cohort")
    parser.set_defaults(func=run)


def _load(text: str, columns: dict[str, str] | None = None):
    from pathlib import Path

    from chexmask_u_tools.errors import InputError
    from chexmask_u_tools.io import load_sample, read_table, read_tables
    from chexmask_u_tools.io.table import data_files

    if text == "sample":
        if columns:
            raise InputError("--column renames the columns of data files, but 'sample' is already canonical; drop it")
        return load_sample()
    path = Path(text)
    if path.is_dir():
        files = data_files(path)
        if not files:
            raise InputError(f"no CheXmask-U data file in {path}")
        return read_tables(files, columns=columns)
    if path.is_file():
        return read_table(path, columns=columns)
    raise InputError(f"INPUT {text!r} is neither 'sample' nor an existing file or folder")


def _fractions(values: list[str] | None) -> dict[str, float] | None:
    from chexmask_u_tools.errors import InputError

    if values is None:
        return None
    fractions = {}
    for value in values:
        name, sep, number = value.partition("=")
        try:
            fractions[name.strip()] = float(number)
        except ValueError:
            sep = ""
        if not sep:
            raise InputError(f"--fractions: expected NAME=FRACTION, got {value!r}")
    return fractions


def run(args: argparse.Namespace) -> int:
    from chexmask_u_tools.cohorts import (
        attach_metadata,
        describe,
        patient_split,
        read_metadata,
    )
    from chexmask_u_tools.errors import InputError
    from chexmask_u_tools.sources import canonical_source

    table = _load(args.input, column_mapping(args))
    metadata = []
    for item in args.metadata:
        name, sep, path = item.partition("=")
        if sep and canonical_source(name) is not None:
            metadata.append(read_metadata(name, path, duplicates=args.duplicates))
        else:
            metadata.append(read_metadata(None, item, duplicates=args.duplicates))
    if metadata:
        table, report = attach_metadata(table, metadata, how="inner" if args.matched_only else "left", return_report=True)
        print(report)
    if args.matched_only and not metadata:
        raise InputError("--matched-only needs --metadata")
    if args.official_split and not args.patient_split:
        raise InputError("--official-split only applies with --patient-split")
    if args.patient_split:
        table = patient_split(table, _fractions(args.fractions), seed=args.seed, official_split=args.official_split)
    describe(table, rules=args.rule, title=args.title, out=args.out)
    print(f"wrote {args.out}")
    return 0
