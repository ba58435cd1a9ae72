"""``chexmask-u demo``: the toolkit's main job on the embedded sample, offline."""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from chexmask_u_tools.cli._format import print_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="summarise, filter and draw the embedded synthetic sample (no network)",
        description=(
            "Load the embedded synthetic CheXmask-U sample (200 rows, five sources), print a per-source "
            "uncertainty summary, keep the rows under an uncertainty threshold and draw a few of them."
        ),
    )
    parser.add_argument("--max-node-sigma", type=float, default=9.0, help="keep rows whose mean node sigma (px) is below this")
    parser.add_argument("--min-dice-rca-mean", type=float, default=0.7, help="keep rows whose Dice RCA (Mean) is at least this")
    parser.add_argument("--out", type=_figure_path, default=Path("chexmask_u_demo.png"), help="figure path (.png, .svg or .pdf)")
    parser.add_argument("--rows", type=_at_least_one, default=4, help="number of images in the figure (laid out in a grid)")
    parser.set_defaults(func=run)


def _figure_path(text: str) -> Path:
    # Checked while parsing, so that a wrong suffix fails before any work is done.
    if Path(text).suffix.lower() not in (".png", ".svg", ".pdf"):
        raise argparse.ArgumentTypeError(f"{text!r}: use a .png, .svg or .pdf file name")
    return Path(text)


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from chexmask_u_tools.analysis.plots import plot_sample_grid
    from chexmask_u_tools.io.sample import load_sample, sample_dir
    from chexmask_u_tools.select.uncertainty import node_sigma_mean, summary_by_source

    table = load_sample()
    print(f"Embedded sample: {len(table)} rows from {sample_dir()}\n")
    print("Uncertainty per source (sigma in px of the 1024 frame):")
    print_table(summary_by_source(table))

    keep = (node_sigma_mean() < args.max_node_sigma) & (pl.col("dice_rca_mean") >= args.min_dice_rca_mean)
    kept = table.filter(keep)
    counts = (
        table.group_by("source")
        .agg(rows=pl.len(), kept=keep.sum())
        .with_columns(kept_fraction=pl.col("kept") / pl.col("rows"))
        .sort("source")
    )
    print(
        f"\nKeeping rows with mean node sigma < {args.max_node_sigma:g} px "
        f"and Dice RCA (Mean) >= {args.min_dice_rca_mean:g}: {len(kept)} of {len(table)}"
    )
    print_table(counts)

    if kept.is_empty():
        print("\nNo row passes the thresholds; nothing to draw.")
        return 0
    plot_sample_grid(kept, n=args.rows, path=args.out)
    print(f"\nFigure: {args.out.resolve()}")
    return 0
