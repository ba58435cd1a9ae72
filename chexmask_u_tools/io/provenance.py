"""What produced a table of predictions, written into the file with it and read back.

``chexmask-u predict``, :func:`~chexmask_u_tools.model.predict.predict_to_parquet`
and the web viewer record a provenance (a flat dict of strings: the package
version, the weights as Hub id and revision, file and sha256, or ``random``
with its seed, the sample count, seed, dtype and roi-align rule) in their
outputs, so that a file of predictions made with untrained weights never
looks like any other:

* parquet: the JSON in the file's key-value metadata under :data:`PROVENANCE_KEY`;
* CSV (released layout): a last column ``Provenance`` holding the same JSON on
  every row (the readers ignore it; :func:`read_provenance` finds it).

``chexmask-u describe`` and :func:`~chexmask_u_tools.cohorts.describe` show it
on the dataset card.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from chexmask_u_tools.errors import FileReadError

__all__ = ["PROVENANCE_COLUMN", "PROVENANCE_KEY", "provenance_text", "read_provenance"]

PROVENANCE_KEY = "chexmask_u.provenance"
"""Key of the provenance JSON in a parquet file's key-value metadata."""

PROVENANCE_COLUMN = "Provenance"
"""Column of the provenance JSON in a CSV of predictions."""


def provenance_text(provenance: dict[str, str]) -> str:
    """The JSON a file stores (keys sorted, one line).

    Examples
    --------
    >>> provenance_text({"weights": "random", "seed": "0"})
    '{"seed": "0", "weights": "random"}'
    """
    return json.dumps({str(key): str(value) for key, value in provenance.items()}, sort_keys=True)


def read_provenance(path: str | os.PathLike) -> dict[str, str] | None:
    """The provenance recorded in a parquet or CSV file of predictions, or None when it holds none.

    Raises
    ------
    FileReadError
        A recorded provenance that is not a JSON object (a damaged file).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import polars as pl
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "p.csv"
    >>> pl.DataFrame({"Image ID": ["a.png"], "Provenance": [provenance_text({"weights": "random"})]}).write_csv(path)
    >>> read_provenance(path)
    {'weights': 'random'}
    """
    path = Path(path)
    text = None
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        metadata = pq.read_schema(path).metadata or {}
        raw = metadata.get(PROVENANCE_KEY.encode())
        text = None if raw is None else raw.decode("utf-8", errors="replace")
    elif path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8", errors="replace") as handle:
            head = handle.read(1 << 20)
        rows = csv.reader(io.StringIO(head))
        header = next(rows, [])
        if PROVENANCE_COLUMN in header:
            first = next(rows, None)
            column = header.index(PROVENANCE_COLUMN)
            text = first[column] if first is not None and len(first) > column else None
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as error:
        raise FileReadError(f"the provenance recorded in {str(path)!r} is not JSON ({error})") from None
    if not isinstance(value, dict):
        raise FileReadError(f"the provenance recorded in {str(path)!r} is not a JSON object")
    return {str(key): str(item) for key, item in value.items()}
