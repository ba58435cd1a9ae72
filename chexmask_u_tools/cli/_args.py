"""Arguments shared by the commands that read data: ``--column THEIRS=KNOWN`` (repeatable)."""

from __future__ import annotations

import argparse
import difflib

from chexmask_u_tools.errors import InputError

__all__ = [
    "COLUMN_HELP",
    "add_cohort_arguments",
    "add_column_argument",
    "add_on_error_argument",
    "apply_cohort_arguments",
    "column_mapping",
    "parse_column_pairs",
    "split_fractions",
]

COLUMN_HELP = (
    "read the data files' column THEIRS as the known column KNOWN, a canonical name (image_id, landmarks, "
    "landmarks_std, ...) or a released one ('Landmarks (Mean)'), for files whose column names no reader knows "
    "(repeatable)"
)
"""How ``--help`` describes ``--column``."""


def add_column_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--column THEIRS=KNOWN`` (repeatable) to a command's parser; read it with :func:`column_mapping`."""
    parser.add_argument("--column", action="append", default=[], metavar="THEIRS=KNOWN", help=COLUMN_HELP)


def add_on_error_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--on-error raise|skip`` (the readers' ``on_error=``) to a command that reads data rows."""
    parser.add_argument(
        "--on-error", choices=["raise", "skip"], default="raise",
        help="a malformed row: stop and name it (raise, the default), or drop it and count it (skip)",
    )


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


def add_cohort_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the cohort options (``--metadata``, ``--patient-split`` ...) shared by ``describe`` and ``export``."""
    parser.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="[SOURCE=]PATH",
        help="a source's metadata folder or file (repeatable); without SOURCE= the source is detected from the columns",
    )
    parser.add_argument("--matched-only", action="store_true", help="keep only the rows that --metadata matched")
    parser.add_argument("--patient-split", action="store_true", help="add a patient-level split column (80/10/10 by default)")
    parser.add_argument("--fractions", nargs="+", default=None, metavar="NAME=F", help="split fractions, e.g. train=0.8 val=0.1 test=0.1")
    parser.add_argument("--seed", type=int, default=0, help="seed of --patient-split")
    parser.add_argument("--official-split", action="store_true", help="with --patient-split: keep each source's official split")
    parser.add_argument(
        "--per-image", action="store_true",
        help="with --patient-split: split the rows of a source that publishes no patient ids (VinDr-CXR) image by image",
    )
    parser.add_argument("--duplicates", choices=["raise", "first"], default="raise", help="duplicate ids in metadata files")


def split_fractions(values: list[str] | None) -> dict[str, float] | None:
    """``["train=0.8", ...]`` -> ``{"train": 0.8, ...}`` (None when not given); a malformed value names ``--fractions``.

    Examples
    --------
    >>> split_fractions(["train=0.8", "test=0.2"])
    {'train': 0.8, 'test': 0.2}
    """
    if values is None:
        return None
    fractions = {}
    for value in values:
        name, sep, number = value.partition("=")
        try:
            fractions[name.strip()] = float(number)
        except ValueError:
            sep = ""
        if not sep:
            raise InputError(f"--fractions: expected NAME=FRACTION, got {value!r}")
    return fractions


def apply_cohort_arguments(table, args: argparse.Namespace):
    """Join ``--metadata`` and add ``--patient-split`` to ``table`` (eager); prints the join report."""
    from chexmask_u_tools.cohorts import attach_metadata, patient_split, read_metadata
    from chexmask_u_tools.sources import canonical_source

    metadata = []
    for item in args.metadata:
        name, sep, path = item.partition("=")
        if sep and canonical_source(name) is not None:
            metadata.append(read_metadata(name, path, duplicates=args.duplicates))
        else:
            metadata.append(read_metadata(None, item, duplicates=args.duplicates))
    if args.matched_only and not metadata:
        raise InputError("--matched-only needs --metadata")
    for flag, given in (("--official-split", args.official_split), ("--per-image", args.per_image)):
        if given and not args.patient_split:
            raise InputError(f"{flag} only applies with --patient-split")
    if metadata:
        table, report = attach_metadata(table, metadata, how="inner" if args.matched_only else "left", return_report=True)
        print(report)
    if args.patient_split:
        table = patient_split(
            table, split_fractions(args.fractions), seed=args.seed, official_split=args.official_split, per_image=args.per_image
        )
    return table
