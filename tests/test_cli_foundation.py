from __future__ import annotations

import subprocess
import sys

import polars as pl

import chexmask_u_tools as cxu
from chexmask_u_tools.cli import main


def test_demo_prints_summary_and_writes_figure(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["demo", "--out", str(out), "--max-node-sigma", "8.5"]) == 0
    printed = capsys.readouterr().out
    for source in cxu.SOURCES:
        assert source in printed
    assert "Keeping rows with mean node sigma < 8.5 px" in printed
    assert str(out.resolve()) in printed
    assert out.stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_with_nothing_kept(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "x.png"), "--max-node-sigma", "0"]) == 0
    assert "nothing to draw" in capsys.readouterr().out
    assert not (tmp_path / "x.png").exists()


def test_info_on_directory_and_file(tmp_path, capsys):
    assert main(["info", str(cxu.sample_dir())]) == 0
    printed = capsys.readouterr().out
    assert "200 rows in 5 file(s)" in printed
    bad = tmp_path / "CheXpert.csv"
    released = cxu.to_released(cxu.load_sample().filter(pl.col("source") == "CheXpert").head(4))
    released.with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(pl.lit("1,2")).otherwise(pl.col("Landmarks (Mean)")).alias("Landmarks (Mean)")
    ).write_csv(bad)
    assert main(["info", str(bad)]) == 0
    printed = capsys.readouterr().out
    assert "skipped 1 row(s): landmarks has 2 numbers, expected 240" in printed
    assert "3 rows in 1 file(s)" in printed


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["info", str(tmp_path / "absent.csv")]) == 1
    assert "error: file not found" in capsys.readouterr().err


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "chexmask_u_tools", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("demo", "info"):
        assert command in result.stdout
