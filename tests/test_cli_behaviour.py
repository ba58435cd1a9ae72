"""The command line says what it does: one input spec, early argument checks, clear exits, readable figures."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import polars as pl
from PIL import Image

from chexmask_u_tools.cli import main
from chexmask_u_tools.io.sample import load_sample


def test_version_flag(capsys):
    try:
        main(["--version"])
    except SystemExit as stop:
        assert stop.code == 0
    assert capsys.readouterr().out.strip().startswith("chexmask-u 0.")


def test_info_accepts_every_input_spec(tmp_path, capsys):
    assert main(["info", "sample"]) == 0
    out = capsys.readouterr().out
    assert "200 rows in 5 file(s)" in out and "per source and frame" in out
    path = tmp_path / "subset.parquet"
    load_sample().head(7).write_parquet(path)
    assert main(["info", str(path)]) == 0
    assert "7 rows in 1 file(s)" in capsys.readouterr().out


def test_info_into_a_closed_pipe_prints_no_traceback():
    process = subprocess.Popen(
        [sys.executable, "-m", "chexmask_u_tools", "info", "sample"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process.stdout.read(20)
    process.stdout.close()
    assert process.wait(timeout=120) == 0
    assert b"Traceback" not in process.stderr.read()


def test_demo_checks_its_arguments_before_working(tmp_path, capsys):
    for argv, message in (
        (["demo", "--out", str(tmp_path / "x.jpg")], "use a .png, .svg or .pdf"),
        (["demo", "--rows", "0"], "--rows: must be at least 1"),
    ):
        try:
            main(argv)
        except SystemExit as stop:
            assert stop.code == 2
        err = capsys.readouterr()
        assert message in err.err and "Embedded sample" not in err.out


def test_demo_lays_out_many_rows_in_a_grid(tmp_path):
    assert main(["demo", "--rows", "12", "--out", str(tmp_path / "demo.png")]) == 0
    with Image.open(tmp_path / "demo.png") as image:
        width, height = image.size
    assert width < 1600 and height > 600  # 5 panels a line, 3 lines; not a 12-panel strip


def test_plot_takes_source_and_frame_flags_and_draws_the_image(tmp_path, capsys):
    table = load_sample().filter(pl.col("source") == "CheXpert").head(3)
    path = tmp_path / "no_name.parquet"
    table.write_parquet(path)
    image = tmp_path / "xray.png"
    Image.fromarray(np.full((1024, 1024), 255, dtype=np.uint8)).save(image)
    plain, over = tmp_path / "plain.png", tmp_path / "over.png"
    assert main(["plot", "0", "--table", str(path), "--source", "CheXpert", "--out", str(plain)]) == 0
    assert main(["plot", "0", "--table", str(path), "--image", str(image), "--out", str(over)]) == 0
    blank = np.asarray(Image.open(plain).convert("L"), dtype=float)
    white = np.asarray(Image.open(over).convert("L"), dtype=float)
    assert blank.shape == white.shape
    assert white.mean() > blank.mean() + 5  # the white X-ray shows under the contours


def test_plot_stats_without_uncertainty_draws_dice_and_contours(tmp_path, capsys):
    table = load_sample().with_columns(
        pl.lit(None).cast(pl.Array(pl.Float32, (120, 2))).alias("landmarks_std"),
        pl.lit(None).cast(pl.Array(pl.Float32, 64)).alias("latent_sigma"),
        *(pl.lit(None, dtype=pl.Float32).alias(c) for c in ("node_sigma_mean", "node_sigma_max", "latent_sigma_mean")),
    )
    path = tmp_path / "parent.parquet"
    table.write_parquet(path)
    assert main(["plot-stats", str(path), "--out", str(tmp_path / "figs")]) == 0
    names = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert names == ["dice_rca_max_by_source.png", "dice_rca_mean_by_source.png", "sample_grid.png"]


def test_plot_stats_refuses_a_table_mixing_frames(tmp_path, capsys):
    table = load_sample().head(4)
    mixed = pl.concat([table, table.with_columns(pl.lit("original").alias("frame"))])
    path = tmp_path / "mixed.parquet"
    mixed.write_parquet(path)
    assert main(["plot-stats", str(path), "--out", str(tmp_path / "figs")]) == 1
    assert "frames are mixed" in capsys.readouterr().err


def test_summary_keeps_the_frames_apart():
    from chexmask_u_tools.select.uncertainty import summary_by_source

    table = load_sample().filter(pl.col("source") == "CheXpert").head(4)
    mixed = pl.concat([table, table.with_columns(pl.lit("original").alias("frame"), pl.col("node_sigma_mean") * 2)])
    summary = summary_by_source(mixed)
    assert summary.select("source", "frame", "rows").rows() == [("CheXpert", "original", 4), ("CheXpert", "preprocessed", 4)]
    medians = dict(zip(summary["frame"], summary["node_sigma_median"]))
    assert medians["original"] == pytest.approx(2 * medians["preprocessed"])


def test_experiment_ood_on_rows_without_std_says_so(tmp_path, capsys, real_tables):
    from chexmask_u_tools.cli import main

    without_std = [path for path, table in real_tables if table["landmarks_std"].null_count() == table.height]
    if not without_std:
        pytest.skip("every real file has std")
    path = without_std[0]
    assert main(["experiment", "ood", str(path)]) == 1
    err = capsys.readouterr().err
    assert "needs landmarks_std" in err and "--missing drop" in err
    assert main(["experiment", "ood", "sample", "--scores", "node_sigma_mean", "--dice", "dice_rca_mean"]) == 0
    out = capsys.readouterr().out
    assert "node_sigma_mean" in out and "latent_sigma_mean" not in out


def test_plot_refuses_an_id_two_rows_share_and_the_flags_choose(tmp_path, capsys):

    table = load_sample().head(3)
    both = pl.concat([table, table.with_columns(frame=pl.lit("original"), height=pl.lit(2000), width=pl.lit(2000))])
    path = tmp_path / "both.parquet"
    both.write_parquet(path)
    key = table["image_id"][0]
    assert main(["plot", key, "--table", str(path), "--out", str(tmp_path / "a.png")]) == 1
    err = capsys.readouterr().err
    assert "2 rows have image id" in err and "row 0" in err and "row 3" in err
    assert "--source NAME or --frame NAME" in err and "source=" not in err
    assert main(["plot", key, "--table", str(path), "--frame", "original", "--out", str(tmp_path / "b.png")]) == 0
    assert main(["plot", "3", "--table", str(path), "--out", str(tmp_path / "c.png")]) == 0
