"""Files in, canonical table out, and back: parsing, RLE, the table readers and the released-layout writers."""

from __future__ import annotations

from chexmask_u_tools.io.arrays import table_from_arrays
from chexmask_u_tools.io.pandas import to_pandas
from chexmask_u_tools.io.parsing import format_points, parse_numbers, parse_points
from chexmask_u_tools.io.provenance import read_provenance
from chexmask_u_tools.io.released import to_released, write_released
from chexmask_u_tools.io.rle import (
    rle_decode,
    rle_decode_many,
    rle_encode,
    rle_encode_many,
    rle_method,
    rle_problems,
)
from chexmask_u_tools.io.sample import load_sample, sample_dir, sample_files
from chexmask_u_tools.io.table import (
    detect_layout,
    map_columns,
    read_table,
    read_tables,
    scan_table,
)

__all__ = [
    "detect_layout",
    "format_points",
    "load_sample",
    "map_columns",
    "parse_numbers",
    "parse_points",
    "read_provenance",
    "read_table",
    "read_tables",
    "rle_decode",
    "rle_decode_many",
    "rle_encode",
    "rle_encode_many",
    "rle_method",
    "rle_problems",
    "sample_dir",
    "sample_files",
    "scan_table",
    "table_from_arrays",
    "to_pandas",
    "to_released",
    "write_released",
]
