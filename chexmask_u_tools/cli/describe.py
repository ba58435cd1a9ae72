"""``chexmask-u describe``: a Markdown dataset card of a cohort (counts, patients, quality, citation)."""

from __future__ import annotations

import argparse

from chexmask_u_tools.cli._args import add_cohort_arguments, add_column_argument, apply_cohort_arguments, column_mapping


def register(subparsers: argparse._SubParsersAction) -> None:
    from chexmask_u_tools.hub.inputs import INPUT_SPEC_HELP

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
    parser.add_argument("input", metavar="INPUT", help=INPUT_SPEC_HELP)
    add_column_argument(parser)
    parser.add_argument("--out", required=True, help="the card (.md); figures are written beside it")
    add_cohort_arguments(parser)
    parser.add_argument("--rule", action="append", default=[], metavar="RULE", help="a rule in text form, e.g. dice.mean>=0.7 (repeatable)")
    parser.add_argument("--title", default="CheXmask-U cohort")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from chexmask_u_tools.cohorts import describe
    from chexmask_u_tools.hub.inputs import open_table
    from chexmask_u_tools.io.provenance import read_provenance

    table = open_table(args.input, columns=column_mapping(args) or None).collect()
    table = apply_cohort_arguments(table, args)
    provenance = read_provenance(args.input) if os.path.isfile(args.input) else None  # a file of predictions
    describe(table, rules=args.rule, title=args.title, out=args.out, provenance=provenance)
    print(f"wrote {args.out}")
    return 0
