"""``chexmask-u export``: subset parquet, PNG masks in each frame and size, manifest, atomic and safe names."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import chexmask_u_tools as cxu
from chexmask_u_tools.cli import main
from chexmask_u_tools.cli.export import mask_file_name
from chexmask_u_tools.masks.frames import to_original_frame
from chexmask_u_tools.testing.images import demo_image_path, write_demo_images
from chexmask_u_tools.masks.raster import rasterize_organs
from chexmask_u_tools.select.rules import apply_rules
from chexmask_u_tools.masks.soft import soft_mask_organs


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    sample = cxu.load_sample()
    return pl.concat([sample.filter(pl.col("source") == s).head(3) for s in cxu.SOURCES])


@pytest.fixture(scope="module")
def table_file(table, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("input") / "subset.parquet"
    table.write_parquet(path)
    return path


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_export_hard_png_preprocessed(table, table_file, tmp_path, capsys):
    out = tmp_path / "export"
    rules = ["image.mean<=10", "organ.heart.mean<=8:drop_organ"]
    code = main(["export", str(table_file), "--out", str(out), "--rule", rules[0], "--rule", rules[1],
                 "--min-dice", "0.7", "--png", "--size", "64", "--weights", "exp", "--no-progress"])
    assert code == 0
    assert "kept" in capsys.readouterr().out
    subset = pl.read_parquet(out / "subset.parquet")
    expected = apply_rules(table, [*rules, "dice.mean>=0.7"])
    assert 0 < subset.height < table.height
    assert subset["image_id"].to_list() == expected["image_id"].to_list()
    assert subset["mask_valid_heart"].to_list() == expected["mask_valid_heart"].to_list()
    sigma = expected["node_sigma_mean"].to_numpy()
    np.testing.assert_allclose(subset["sample_weight"].to_numpy(), np.clip(np.exp(-sigma / 8), 0.05, 1), rtol=1e-5)
    for row in subset.head(4).iter_rows(named=True):
        png = np.asarray(Image.open(out / row["mask_png"]))
        assert png.shape == (64, 64, 3) and png.dtype == np.uint8
        masks = rasterize_organs(np.asarray(row["landmarks"], dtype=np.float64) / 16, 64, 64)
        np.testing.assert_array_equal(png.transpose(2, 0, 1), masks.astype(np.uint8) * 255)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows_in"] == table.height and manifest["rows_out"] == subset.height
    assert manifest["rules"][-1] == "dice.mean>=0.7" and manifest["masks"]["channels"] == ["right_lung", "left_lung", "heart"]
    assert [r["failed"] for r in manifest["rule_report"]] == [
        int((table["node_sigma_mean"] > 10).sum()),
        int((table["sigma_heart"] > 8).sum()),
        int((table["dice_rca_mean"] < 0.7).sum()),
    ]
    assert not _leftovers(tmp_path)


def test_export_soft_png_and_parquet_only(table, table_file, tmp_path):
    out = tmp_path / "soft"
    assert main(["export", str(table_file), "--out", str(out), "--png", "--masks", "soft", "--size", "48", "--no-progress"]) == 0
    subset = pl.read_parquet(out / "subset.parquet")
    assert subset.height == table.height and (subset["rule_weight"] == 1).all()
    row = subset.row(2, named=True)
    soft = soft_mask_organs(np.asarray(row["landmarks"]) * 48 / 1024, np.asarray(row["landmarks_std"]) * 48 / 1024, 48, 48)
    png = np.asarray(Image.open(out / row["mask_png"])).transpose(2, 0, 1)
    np.testing.assert_array_equal(png, np.rint(soft * 255).astype(np.uint8))
    plain = tmp_path / "plain"
    assert main(["export", "sample", "--out", str(plain), "--max-node-sigma", "8", "--sources", "padchest"]) == 0
    subset = pl.read_parquet(plain / "subset.parquet")
    sample = cxu.load_sample()
    assert subset.height == int(((sample["source"] == "Padchest") & (sample["node_sigma_mean"] <= 8)).sum())
    assert not (plain / "masks").exists() and "mask_png" not in subset.columns


def test_export_original_frame_needs_image_sizes(table, table_file, tmp_path):
    roots = write_demo_images(table, tmp_path / "images")
    out = tmp_path / "orig"
    assert main(["export", str(table_file), "--out", str(out), "--png", "--frame", "original", "--no-progress"]) == 1
    assert not out.exists() and not _leftovers(tmp_path)
    images = [f"{source}={root}" for source, root in roots.items()]
    assert main(["export", str(table_file), "--out", str(out), "--png", "--frame", "original", "--images", *images,
                 "--no-progress"]) == 0
    subset = pl.read_parquet(out / "subset.parquet")
    for row in subset.head(3).iter_rows(named=True):
        image = Image.open(roots[row["source"]] / demo_image_path(row["source"], row["image_id"]))
        png = np.asarray(Image.open(out / row["mask_png"]))
        assert png.shape[:2] == (image.height, image.width)
        landmarks = to_original_frame(np.asarray(row["landmarks"]), image.height, image.width, round_clip=False)
        np.testing.assert_array_equal(png.transpose(2, 0, 1) > 0, rasterize_organs(landmarks, image.height, image.width))
    assert main(["export", str(table_file), "--out", str(tmp_path / "one"), "--png", "--frame", "original", "--size", "32",
                 "--images", str(tmp_path / "images" / "CheXpert"), "--sources", "CheXpert", "--no-progress"]) == 0


def test_existing_output_and_overwrite(table_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(table_file), "--out", str(out)]) == 1
    assert (out / "keep.txt").read_text() == "mine"
    assert main(["export", str(table_file), "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "subset.parquet"]
    assert not _leftovers(tmp_path)
    assert main(["export", str(table_file), "--out", str(tmp_path / "x"), "--rule", "image.mean>=3"]) == 1
    assert main(["export", str(table_file), "--out", str(tmp_path / "x"), "--size", "2", "--png"]) == 1


def test_hostile_ids_stay_inside_the_output(table, tmp_path):
    hostile = ["../../escape", "/etc/passwd", "a/b/../../c.png", "..", "x" * 300, "dup/a", "dup_a"]
    rows = table.head(len(hostile)).with_columns(pl.Series("image_id", hostile))
    source = tmp_path / "hostile.parquet"
    rows.write_parquet(source)
    out = tmp_path / "deep" / "out"
    assert main(["export", str(source), "--out", str(out), "--png", "--size", "16", "--no-progress"]) == 0
    written = sorted(p for p in out.rglob("*.png"))
    assert len(written) == len(hostile)  # "dup/a" and "dup_a" do not collide
    assert all(out.resolve() in p.resolve().parents for p in written)
    assert not any(p.name.startswith(".") for p in written)


@settings(max_examples=80, deadline=None)
@given(source=st.text(min_size=1, max_size=20), image_id=st.text(min_size=1, max_size=200))
def test_mask_file_names_are_safe(source, image_id):
    name = mask_file_name(source, image_id)
    parts = PurePosixPath(name).parts
    assert len(parts) == 3 and parts[0] == "masks" and name.endswith(".png")
    assert all(part not in ("", ".", "..") and "\\" not in part for part in parts)
    assert all(c.isascii() and (c.isalnum() or c in "._-/") for c in name)
    assert mask_file_name(source, image_id + "x") != name


def test_export_refuses_rows_whose_pngs_would_collide(table_file, table, tmp_path, capsys):
    both_frames = pl.concat([table.head(2), table.head(2).with_columns(pl.lit("original").alias("frame"))])
    path = tmp_path / "both.parquet"
    both_frames.write_parquet(path)
    out = tmp_path / "export"
    assert main(["export", str(path), "--out", str(out), "--png", "--size", "32", "--no-progress"]) == 1
    assert "appear in more than one row" in capsys.readouterr().err
    assert not out.exists() and _leftovers(tmp_path) == []
    assert main(["export", str(path), "--frames", "preprocessed", "--out", str(out), "--png", "--size", "32", "--no-progress"]) == 0
    assert "kept 2 rows" in capsys.readouterr().out
    assert len(list((out / "masks").rglob("*.png"))) == 2


def test_export_soft_masks_need_std(tmp_path, capsys):
    table = cxu.load_sample().head(2).with_columns(pl.lit(None).cast(pl.Array(pl.Float32, (120, 2))).alias("landmarks_std"))
    path = tmp_path / "no_std.parquet"
    table.write_parquet(path)
    assert main(["export", str(path), "--out", str(tmp_path / "o"), "--png", "--masks", "soft", "--no-progress"]) == 1
    assert "has no landmark std" in capsys.readouterr().err


def test_rerun_restores_an_overwrite_killed_between_its_renames(table_file, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(table_file), "--out", str(out), "--no-progress"]) == 0
    before = (out / "subset.parquet").read_bytes()
    # What a SIGKILL between the two renames of --overwrite leaves: OUT moved aside, the new output staged.
    dead_pid = 2**22 + 12345  # beyond pid_max of common kernels: no such process
    (out).rename(tmp_path / f".export.old-{dead_pid}")
    (tmp_path / f".export.tmp-{dead_pid}").mkdir()
    assert main(["export", str(table_file), "--out", str(out), "--min-dice", "0.99", "--no-progress"]) == 1
    err_out = capsys.readouterr()
    assert "restored" in err_out.out and "exists; pass --overwrite" in err_out.err
    assert (out / "subset.parquet").read_bytes() == before
    assert _leftovers(tmp_path) == []
