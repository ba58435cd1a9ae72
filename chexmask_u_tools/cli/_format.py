"""Plain-text tables for the command line."""

from __future__ import annotations

import polars as pl


def print_table(table: pl.DataFrame, float_precision: int = 3) -> None:
    """Print a small DataFrame as an aligned text table without polars' box drawing."""
    with pl.Config(
        tbl_formatting="ASCII_MARKDOWN",
        tbl_hide_column_data_types=True,
        tbl_hide_dataframe_shape=True,
        float_precision=float_precision,
        tbl_rows=100,
        tbl_cols=30,
        tbl_width_chars=200,
        fmt_str_lengths=40,
    ):
        print(table)
