"""``chexmask-u plot-stats TABLE --out DIR``: the dataset's uncertainty statistics as figures."""

from __future__ import annotations

import argparse
from pathlib import Path

from chexmask_u_tools.cli._args import add_column_argument, column_mapping


def register(subparsers: argparse._SubParsersAction) -> None:
    from chexmask_u_tools.hub.inputs import INPUT_SPEC_HELP

    parser = subparsers.add_parser(
        "plot-stats",
        help="figures of image-level uncertainty per source and against Dice RCA",
        description=(
            "Write PNG figures of a CheXmask(-U) table to DIR: mean node sigma per source (violin and "
            "histogram), mean latent sigma per source, node sigma vs Dice RCA (Max) (hexbin for large "
            "tables), Dice RCA per source, and a grid of example rows. Tables without uncertainty columns "
            "(the parent CheXmask dataset) get the Dice RCA figures and the grid. Sigma is in pixels of the "
            "rows' frame, so a table mixing the preprocessed and original frames is refused."
        ),
    )
    parser.add_argument("table", metavar="TABLE", help=INPUT_SPEC_HELP)
    add_column_argument(parser)
    parser.add_argument("--source", default=None, help="the parent database, when a single file does not say")
    parser.add_argument("--frame", choices=["preprocessed", "original"], default=None, help="the frame, when a single file does not say")
    parser.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import polars as pl

    from chexmask_u_tools.analysis.plots import (
        plot_sample_grid,
        plot_sigma_by_source,
        plot_sigma_vs_dice,
    )
    from chexmask_u_tools.cli.plot import load_table
    from chexmask_u_tools.errors import InputError

    table = load_table(args.table, args.source, args.frame, column_mapping(args))
    if table.height == 0:
        raise InputError(f"{args.table}: the table is empty")
    frames = sorted(table["frame"].drop_nulls().unique().to_list())
    if len(frames) > 1:
        raise InputError(
            f"{args.table}: rows of the {' and '.join(frames)} frames are mixed, and their sigmas are pixels of "
            "different grids; write one frame per table (e.g. chexmask-u filter --frames preprocessed)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    has = {
        name: table[name].drop_nulls().drop_nans().len() > 0
        for name in ("node_sigma_mean", "latent_sigma_mean", "dice_rca_max", "dice_rca_mean")
    }
    jobs = []
    if has["node_sigma_mean"]:
        jobs += [
            ("node_sigma_by_source.png", lambda p: plot_sigma_by_source(table, "node_sigma_mean", kind="violin", path=p)),
            ("node_sigma_hist.png", lambda p: plot_sigma_by_source(table, "node_sigma_mean", kind="hist", path=p)),
            ("sample_grid.png", lambda p: plot_sample_grid(table.filter(pl.col("landmarks_std").is_not_null()), n=4, path=p)),
        ]
        if has["dice_rca_max"]:
            jobs.append(("node_sigma_vs_dice.png", lambda p: plot_sigma_vs_dice(table, path=p)))
    else:
        print(f"{args.table}: no landmark std, so no node-sigma figures; drawing the Dice RCA figures and contours")
        jobs.append(("sample_grid.png", lambda p: plot_sample_grid(table, n=4, path=p, color_by="organ")))
        for dice in ("dice_rca_mean", "dice_rca_max"):
            if has[dice]:
                jobs.append((f"{dice}_by_source.png", lambda p, d=dice: plot_sigma_by_source(table, d, kind="box", unit="", path=p)))
    if has["latent_sigma_mean"]:
        jobs.append(("latent_sigma_by_source.png", lambda p: plot_sigma_by_source(table, "latent_sigma_mean", unit="", path=p)))
    for name, draw in jobs:
        draw(args.out / name)
        print(f"wrote {args.out / name}")
    return 0
