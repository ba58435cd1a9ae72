"""The real-subset tests hold for any CheXmask file dropped into their folder (issue 22 item 20).

They once assumed what the two files at hand happen to be: a file stem equal to the source name
(the release writes ``ChestX-Ray8.csv``), a ``Landmarks`` column and no std, ``Height`` always
written (Padchest rows leave it empty; some write ``1024.0``), ``.csv`` only.  Here realistic
files of each kind, built from the sample with ``write_released`` and edited as the release's
quirks are, join a few real rows (when the real subset is present) in a temporary folder, and the
real-subset tests run on it in a child pytest (``$CHEXMASK_REAL_SUBSET``, ``-m real_subset``).
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import chexmask_u_tools as cxu
from conftest import REAL_SUBSET, REAL_SUBSET_ENV

ROOT = Path(__file__).resolve().parents[1]


def _sample(source: str, rows: int = 6) -> pl.DataFrame:
    return cxu.load_sample().filter(pl.col("source") == source).head(rows)


def _write_text_csv(frame: pl.DataFrame, path: Path) -> Path:
    text = frame.write_csv()
    path.write_bytes(gzip.compress(text.encode()) if path.name.endswith(".gz") else text.encode())
    return path


def drop_realistic_files(folder: Path) -> list[Path]:
    """Files of the release's other shapes, each with the quirks the old tests tripped on."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    # the parent dataset's layout under the release's own spelling of the name (stem != source name)
    path = folder / "ChestX-Ray8.csv"
    cxu.write_released(_sample("ChestX-ray8"), path, "chexmask")
    written.append(path)
    # CheXmask-U layout with std and latents; an empty Height, a float Height, and the Dice pair swapped
    released = cxu.to_released(_sample("Padchest")).cast(pl.String)
    row = pl.int_range(pl.len())
    released = released.with_columns(
        pl.when(row == 1).then(pl.lit(None, pl.String)).when(row == 2).then(pl.lit("1024.0")).otherwise(pl.col("Height")).alias("Height"),
        pl.when(row == 3).then(pl.col("Dice RCA (Max)")).otherwise(pl.col("Dice RCA (Mean)")).alias("Dice RCA (Mean)"),
        pl.when(row == 3).then(pl.col("Dice RCA (Mean)")).otherwise(pl.col("Dice RCA (Max)")).alias("Dice RCA (Max)"),
    )
    written.append(_write_text_csv(released, folder / "Padchest.csv"))
    # the short Mean/Std names, gzip-compressed
    written.append(_write_text_csv(cxu.to_released(_sample("VinDr-CXR"), "short").cast(pl.String), folder / "VinDr-CXR.csv.gz"))
    # numpy-printed (120, 2) point arrays, a part file of a source
    path = folder / "MIMIC-CXR-JPG_part2.csv"
    cxu.write_released(_sample("MIMIC-CXR-JPG"), path, points_format="numpy")
    written.append(path)
    return written


def test_dropped_files_are_what_broke_the_old_tests(tmp_path):
    files = drop_realistic_files(tmp_path)
    assert [p.name for p in files] == ["ChestX-Ray8.csv", "Padchest.csv", "VinDr-CXR.csv.gz", "MIMIC-CXR-JPG_part2.csv"]
    padchest = pl.read_csv(files[1], infer_schema=False)
    assert padchest["Height"].to_list()[1:3] == [None, "1024.0"]  # what pandas read as NaN
    assert cxu.read_table(files[0])["source"].unique().to_list() == ["ChestX-ray8"]  # not the stem


@pytest.mark.slow
def test_real_subset_tests_hold_for_any_chexmask_file(tmp_path):
    folder = tmp_path / "subset"
    drop_realistic_files(folder)
    if REAL_SUBSET.is_dir():  # a few real rows too, as released
        for path in cxu.io.table.data_files(REAL_SUBSET):
            _write_text_csv(pl.read_csv(path, infer_schema=False).head(4), folder / path.name)
    env = {**os.environ, REAL_SUBSET_ENV: str(folder), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "real_subset", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'inner'}",
         "-o", "addopts=", str(ROOT / "tests")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in summary and not any(word in summary for word in ("skipped", "failed", "error")), summary
    assert int(summary.split(" passed")[0].split()[-1]) >= 12, summary
