"""``chexmask-u cite``: BibTeX for the CheXmask-U paper, the CheXmask dataset and this toolkit."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from chexmask_u_tools.citation import CITATIONS

    parser = subparsers.add_parser(
        "cite",
        help="print BibTeX entries to cite (the paper, the dataset, this toolkit)",
        description="Print the BibTeX entries of the CheXmask-U paper, the CheXmask dataset and chexmask-u-tools.",
    )
    parser.add_argument("which", nargs="*", choices=list(CITATIONS), help="only these entries (default: all)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from chexmask_u_tools.citation import cite

    print(cite(*args.which), end="")
    return 0
