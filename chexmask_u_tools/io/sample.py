"""The embedded synthetic CheXmask-U sample: runs the toolkit with no network.

``chexmask_u_tools/data/sample/`` is laid out like the Hub dataset repo, one
file per source in ``Preprocessed/``, each in the released layout of one
CheXmask-U variant (with the real files' quirks).  The rows are synthetic, made
by ``scripts/make_sample.py`` from a shape model fitted to real CheXmask rows;
they contain no patient data and no images.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from chexmask_u_tools.io.table import data_files, read_tables


def sample_dir() -> Path:
    """Directory of the embedded sample, laid out like the Hub dataset repo."""
    return Path(__file__).resolve().parent.parent / "data" / "sample"


def sample_files() -> list[Path]:
    """The sample's files, one per source."""
    return data_files(sample_dir())


def load_sample() -> pl.DataFrame:
    """The whole embedded sample as one canonical table (all five sources)."""
    return read_tables(sample_files())
