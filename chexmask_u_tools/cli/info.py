"""``chexmask-u info PATH``: what a CheXmask(-U) file or directory holds."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import polars as pl

from chexmask_u_tools.cli._args import add_column_argument, column_mapping
from chexmask_u_tools.cli._format import print_table


def register(subparsers: argparse._SubParsersAction) -> None:
    from chexmask_u_tools.hub.inputs import INPUT_SPEC_HELP

    parser = subparsers.add_parser(
        "info",
        help="summarise a CheXmask(-U) input: a file, a folder of files, a cache, a Hub id or the sample",
        description="Detect the layout of each file, count good and bad rows, and summarise uncertainty per source and frame.",
    )
    parser.add_argument("path", help=INPUT_SPEC_HELP)
    add_column_argument(parser)
    parser.add_argument("--source", default=None, help="the parent database, when a single file does not say")
    parser.add_argument("--frame", choices=["preprocessed", "original"], default=None, help="the frame, when a single file does not say")
    parser.set_defaults(func=run)


def _file_summary(file: str, label: str, args: argparse.Namespace) -> tuple[pl.DataFrame, dict]:
    from chexmask_u_tools.errors import SkippedRowsWarning
    from chexmask_u_tools.io.table import read_table

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SkippedRowsWarning)
        table = read_table(file, source=args.source, frame=args.frame, on_error="skip", columns=column_mapping(args))
    skipped = [w.message for w in caught if isinstance(w.message, SkippedRowsWarning)]
    for warning in skipped:
        for reason, count in warning.counts.items():
            print(f"{label}: skipped {count} row(s): {reason}")
    row = {"file": label, "rows": len(table) + sum(sum(w.counts.values()) for w in skipped), "kept": len(table)}
    return table, row


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from chexmask_u_tools.errors import InputError
    from chexmask_u_tools.hub.inputs import input_kind, open_table
    from chexmask_u_tools.io.sample import sample_dir, sample_files
    from chexmask_u_tools.io.table import data_files
    from chexmask_u_tools.select.uncertainty import summary_by_source

    kind = input_kind(args.path)
    if kind == "sample" and column_mapping(args):
        raise InputError("--column renames the columns of data files, but 'sample' is already canonical; drop it")
    if kind in ("sample", "file", "mirror"):
        # Files are read one by one so that bad rows are counted per file.
        if kind == "sample":
            base, files = sample_dir(), sample_files()
        elif kind == "file":
            base, files = None, [Path(args.path)]
        else:
            base, files = Path(args.path), data_files(args.path)
        if not files:
            print(f"no .csv, .csv.gz, .csv.xz or .parquet files under {args.path}")
            return 1
        tables, file_rows = [], []
        for file in tqdm(files, desc="reading", unit="file", disable=len(files) < 2):
            label = str(Path(file).relative_to(base)) if base is not None else str(file)
            table, row = _file_summary(file, label, args)
            frames = sorted(set(table["frame"].drop_nulls())) if len(table) else [args.frame]
            row.update(
                frame=",".join(f for f in frames if f) or None,
                with_std=table["landmarks_std"].is_not_null().sum(),
                with_latents=table["latent_sigma"].is_not_null().sum(),
                with_masks=table["rle_right_lung"].is_not_null().sum(),
            )
            file_rows.append(row)
            tables.append(table)
        print_table(pl.DataFrame(file_rows))
        combined = pl.concat(tables, how="diagonal_relaxed")  # canonical files may carry extra columns
        where = f"in {len(files)} file(s)"
    else:
        combined = open_table(args.path, source=args.source, frame=args.frame, columns=column_mapping(args)).collect()
        where = f"in the {kind} {args.path}"
    print(f"\n{len(combined)} rows {where}; uncertainty per source and frame (pixels of that frame):")
    print_table(summary_by_source(combined))
    return 0
