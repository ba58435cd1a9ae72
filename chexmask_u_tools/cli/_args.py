"""Arguments shared by the commands that read data: ``--column THEIRS=KNOWN`` (repeatable)."""

from __future__ import annotations

import argparse
import difflib

from chexmask_u_tools.errors import InputError

__all__ = ["COLUMN_HELP", "add_column_argument", "column_mapping", "parse_column_pairs"]

COLUMN_HELP = (
    "read the data files' column THEIRS as the known column KNOWN, a canonical name (image_id, landmarks, "
    "landmarks_std, ...) or a released one ('Landmarks (Mean)'), for files whose column names no reader knows "
    "(repeatable)"
)
"""How ``--help`` describes ``--column``."""


def add_column_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--column THEIRS=KNOWN`` (repeatable) to a command's parser; read it with :func:`column_mapping`."""
    parser.add_argument("--column", action="append", default=[], metavar="THEIRS=KNOWN", help=COLUMN_HELP)


def parse_column_pairs(values: list[str] | None) -> dict[str, str]:
    """``["THEIRS=KNOWN", ...]`` -> ``{"THEIRS": "KNOWN"}``, the ``columns=`` of the readers.

    The value is split at its last ``=`` (no known name holds one), so a
    column of the file may itself contain ``=``.

    Raises
    ------
    InputError
        A value without ``=`` or with an empty side, a column given twice, or
        a target no reader knows (with the closest known name), each naming
        ``--column``.

    Examples
    --------
    >>> parse_column_pairs(["img=image_id", "lm=Landmarks (Mean)"])
    {'img': 'image_id', 'lm': 'Landmarks (Mean)'}
    >>> parse_column_pairs(None)
    {}
    """
    from chexmask_u_tools.io.table import (
        known_column_names,  # here: `chexmask-u --help` stays light
    )

    mapping: dict[str, str] = {}
    known = known_column_names()
    for value in values or []:
        theirs, equals, ours = value.rpartition("=")
        theirs, ours = theirs.strip(), ours.strip()
        if not equals or not theirs or not ours:
            raise InputError(
                f"--column {value!r}: expected THEIRS=KNOWN, the file's column name, '=', then a known name "
                "(e.g. --column 'img=image_id')"
            )
        if theirs in mapping:
            raise InputError(f"--column: the column {theirs!r} is given twice ({mapping[theirs]!r} and {ours!r})")
        if ours not in known:
            close = difflib.get_close_matches(ours, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"--column {value!r}: {ours!r} is not a column name any reader knows{hint}; known names are {known}")
        mapping[theirs] = ours
    return mapping


def column_mapping(args: argparse.Namespace) -> dict[str, str] | None:
    """The ``columns=`` mapping of a parsed command line (None when no ``--column`` was given)."""
    return parse_column_pairs(getattr(args, "column", None)) or None
