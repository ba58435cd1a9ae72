"""Exceptions raised by chexmask-u-tools.

Every error the package raises on bad input is a :class:`CheXmaskUError`, so
``except cxu.CheXmaskUError`` catches all of them.  Errors about a particular
record carry its location (file, row, image id) both as attributes and in the
message, because "row 183,204 of MIMIC-CXR-JPG.csv" is what a user needs to fix
the input.
"""

from __future__ import annotations

from typing import Any


class CheXmaskUError(Exception):
    """Base class of every exception raised by chexmask-u-tools."""


class InputError(CheXmaskUError, ValueError):
    """An argument has the wrong shape, dtype or value (not tied to a file row)."""


class RecordError(CheXmaskUError, ValueError):
    """A value inside a data record is malformed.

    Attributes
    ----------
    file, row, image_id, column:
        Where the bad value is; any of them may be ``None`` when unknown.
        ``row`` is the 0-based data row (header excluded), the row's index
        in the table a reader returns (pandas' ``iloc``, polars' ``row``);
        the message says so.
    fix:
        What the caller can pass to get past it (e.g. ``on_error="skip"``
        where the reader has that option), appended to the message; the
        command line rewrites it into its own flags.
    """

    def __init__(
        self,
        message: str,
        *,
        file: Any = None,
        row: int | None = None,
        image_id: str | None = None,
        column: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.reason = message
        self.file = None if file is None else str(file)
        self.row = row
        self.image_id = image_id
        self.column = column
        self.fix = fix
        super().__init__(self._compose())

    def _compose(self) -> str:
        where = []
        if self.file is not None:
            where.append(f"file {self.file!r}")
        if self.row is not None:
            where.append(f"row {self.row}, counted from 0 after the header")
        if self.image_id is not None:
            where.append(f"image id {self.image_id!r}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        text = f"{self.reason} ({', '.join(where)})" if where else self.reason
        return f"{text}; {self.fix}" if self.fix else text

    def located(
        self,
        *,
        file: Any = None,
        row: int | None = None,
        image_id: str | None = None,
        column: str | None = None,
    ) -> "RecordError":
        """Return a copy with the missing location fields filled in."""
        return type(self)(
            self.reason,
            file=self.file if self.file is not None else file,
            row=self.row if self.row is not None else row,
            image_id=self.image_id if self.image_id is not None else image_id,
            column=self.column if self.column is not None else column,
            fix=self.fix,
        )


SKIP_FIX = 'pass on_error="skip" to drop such rows'
"""The fix a reader with ``on_error=`` names for a row it could skip."""


class PointsParseError(RecordError):
    """A landmark / std / latent string could not be parsed into numbers."""


class RLEError(RecordError):
    """A run-length string is malformed or runs past the mask."""


class SchemaError(CheXmaskUError, ValueError):
    """A file's columns match no known CheXmask(-U) variant."""


class FileReadError(CheXmaskUError, OSError):
    """A file could not be read (missing, truncated, corrupt)."""


class HubError(CheXmaskUError, RuntimeError):
    """The Hugging Face Hub (or a local mirror of it) could not serve a request."""


class WeightsError(CheXmaskUError, ValueError):
    """Model weights are missing, unreadable, or do not fit the architecture."""


class ImageError(CheXmaskUError, ValueError):
    """An image file is unreadable or not usable (size, depth, channels)."""


class SkippedRowsWarning(UserWarning):
    """Rows were dropped under ``on_error="skip"``.

    Attributes
    ----------
    file:
        The file read.
    total:
        Rows in the file.
    counts:
        Reason -> number of rows dropped for it.
    """

    def __init__(self, file: str, total: int, counts: dict[str, int]) -> None:
        self.file = file
        self.total = total
        self.counts = dict(counts)
        dropped = sum(self.counts.values())
        reasons = "; ".join(f"{n} x {reason}" for reason, n in self.counts.items())
        super().__init__(f"{file}: skipped {dropped} of {total} rows ({reasons})")


class ColumnNameWarning(UserWarning):
    """A file's column is a near miss of a known name whose field the file otherwise lacks.

    The column is not read (only exact names are), so its field stays empty:
    the message names the closest known name and the ``columns=`` mapping
    that reads it.

    Attributes
    ----------
    file, column, closest:
        The file, its column, and the known name it nearly spells.
    """

    def __init__(self, message: str, *, file: str, column: str, closest: str) -> None:
        self.file = file
        self.column = column
        self.closest = closest
        super().__init__(message)


class IntegrityWarning(UserWarning):
    """Part of what was read could not be checked; the message says which part, and which reader checks it."""
