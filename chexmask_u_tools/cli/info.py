"""``chexmask-u info PATH``: what a CheXmask(-U) file or directory holds."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import polars as pl

from chexmask_u_tools.cli._format import print_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="summarise a CheXmask(-U) file or a directory of them",
        description="Detect the layout of each file, count good and bad rows, and summarise uncertainty per source.",
    )
    parser.add_argument("path", help="a .csv/.csv.gz/.csv.xz/.parquet file, a directory of them, or an fsspec URL")
    parser.add_argument("--source", default=None, help="the parent database, when the file does not say")
    parser.add_argument("--frame", choices=["preprocessed", "original"], default=None)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from chexmask_u_tools.errors import SkippedRowsWarning
    from chexmask_u_tools.io.table import data_files, read_table
    from chexmask_u_tools.select.uncertainty import summary_by_source

    path = Path(args.path)
    files = data_files(path) if path.is_dir() else [args.path]
    if not files:
        print(f"no .csv, .csv.gz, .csv.xz or .parquet files under {path}")
        return 1
    tables, file_rows = [], []
    for file in tqdm(files, desc="reading", unit="file", disable=len(files) < 2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SkippedRowsWarning)
            table = read_table(file, source=args.source, frame=args.frame, on_error="skip")
        skipped = [w.message for w in caught if isinstance(w.message, SkippedRowsWarning)]
        file_rows.append(
            {
                "file": str(Path(file).relative_to(path)) if path.is_dir() else str(file),
                "rows": len(table) + sum(sum(w.counts.values()) for w in skipped),
                "kept": len(table),
                "frame": table["frame"][0] if len(table) else args.frame,
                "with_std": table["landmarks_std"].is_not_null().sum(),
                "with_latents": table["latent_sigma"].is_not_null().sum(),
                "with_masks": table["rle_right_lung"].is_not_null().sum(),
            }
        )
        for warning in skipped:
            for reason, count in warning.counts.items():
                print(f"{file}: skipped {count} row(s): {reason}")
        tables.append(table)
    print_table(pl.DataFrame(file_rows))
    combined = pl.concat(tables)
    print(f"\n{len(combined)} rows in {len(files)} file(s); uncertainty per source:")
    print_table(summary_by_source(combined))
    return 0
