"""Errors in the command line's own words: the library's Python spellings rewritten into the command's flags.

The library's messages name the Python argument that fixes a problem
(``on_error="skip"``, ``source=``, ``columns={...}``, ``attach_metadata(...)``),
because that is what a Python user types.  On the command line the same
advice must name the flag.  :func:`for_command_line` rewrites each known
spelling into the flag of the command that failed, and only into a flag that
command has: a skippable row's ``on_error="skip"`` advice is dropped from a
command without ``--on-error`` rather than suggesting a flag that does not
exist.  One table here, instead of a CLI variant of every message.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from chexmask_u_tools.errors import SKIP_FIX, CheXmaskUError, RecordError

__all__ = ["FLAG_SPELLINGS", "for_command_line"]

#: (Python spelling as a regular expression, the flag it needs, the command line's spelling).
FLAG_SPELLINGS: tuple[tuple[str, str, str], ...] = (
    (re.escape(SKIP_FIX), "--on-error", "pass --on-error skip to drop such rows"),
    (r"\bon_error=['\"]skip['\"]", "--on-error", "--on-error skip"),
    (r"\bsources=/frames=", "--sources", "--sources / --frames"),
    (r"\bsource=(?:\(\w+\)|'[^']*'|\"[^\"]*\"|\.\.\.)?", "--source", "--source NAME"),
    (r"\bframe=(?:'[^']*'|\"[^\"]*\"|\.\.\.)?", "--frame", "--frame NAME"),
    (r"\bcolumns=\{[^}]*\}\}?|\bcolumns=", "--column", "--column THEIRS=CANONICAL"),
    (r"\bmissing=['\"](drop|keep|skip|masks_only)['\"]", "--missing", r"--missing \1"),
    (r"\bduplicates=['\"](\w+)['\"]", "--duplicates", r"--duplicates \1"),
    (r"\bper_image=True", "--per-image", "--per-image"),
    (r"\boverwrite=True", "--overwrite", "--overwrite"),
    (r"\bofficial_split=True", "--official-split", "--official-split"),
    (r"\(attach_metadata\(\.\.\., how='inner'\)\)", "--matched-only", "(--matched-only)"),
    (
        r"[Rr]ead the database's metadata with (?:cxu\.)?read_metadata\([^)]*\) and join it with (?:cxu\.)?attach_metadata\([^)]*\)",
        "--metadata",
        "Join the database's metadata with --metadata FILE",
    ),
    (r"(?:cxu\.)?read_metadata\([^)]*\)(?:,| and| then)* (?:cxu\.)?attach_metadata\([^)]*\)", "--metadata", "--metadata FILE"),
    (r"(?:cxu\.)?attach_metadata\([^)]*\)|\battach_metadata\b", "--metadata", "--metadata FILE"),
)


def for_command_line(error: CheXmaskUError, flags: Collection[str]) -> str:
    """The message of ``error`` with its Python fixes spelt as the command's ``flags`` (its option strings).

    Examples
    --------
    >>> from chexmask_u_tools.errors import RecordError, SKIP_FIX
    >>> bad = RecordError("landmarks contains a non-numeric value", file="a.csv", row=17, fix=SKIP_FIX)
    >>> for_command_line(bad, {"--on-error", "--out"}).endswith("pass --on-error skip to drop such rows")
    True
    >>> "on_error" in for_command_line(bad, {"--out"}) or "--on-error" in for_command_line(bad, {"--out"})
    False
    """
    if isinstance(error, RecordError) and error.fix == SKIP_FIX and "--on-error" not in flags:
        text = RecordError(error.reason, file=error.file, row=error.row, image_id=error.image_id, column=error.column).args[0]
    else:
        text = str(error)
    for pattern, flag, spelling in FLAG_SPELLINGS:
        if flag in flags:
            text = re.sub(pattern, spelling, text)
    return text
