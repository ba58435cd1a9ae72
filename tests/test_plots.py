"""Every plot writes a non-empty image of the expected size; bad input fails clearly."""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
import pytest
from PIL import Image

from chexmask_u_tools.analysis import plots
from chexmask_u_tools.cli import main
from chexmask_u_tools.errors import InputError
from chexmask_u_tools.io.sample import load_sample


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    return load_sample()


@pytest.fixture(scope="module")
def row_arrays(table):
    return plots.row_arrays(table.row(5, named=True))


def check_png(path, size) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == size
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 5, "the picture is blank"
    return pixels


def test_contours_on_canvas_and_image(tmp_path, row_arrays):
    landmarks, std, size = row_arrays
    fig = plots.plot_contours(landmarks, std, size=size, path=tmp_path / "c.png")
    assert fig.axes[-1].get_ylabel() == "node sigma (px)"
    check_png(tmp_path / "c.png", (640, 560))
    image = np.zeros((1024, 1024), dtype=np.uint8)
    image[::2] = 200
    plots.plot_contours(landmarks, None, image=image, width_px=300, height_px=250, path=tmp_path / "i.png")
    check_png(tmp_path / "i.png", (300, 250))
    plots.plot_contours(landmarks, std, path=tmp_path / "c.svg")
    assert (tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")
    assert not list(tmp_path.glob(".*")), "no temporary file left behind"


def test_node_colours_follow_sigma(tmp_path, row_arrays):
    landmarks, std, _ = row_arrays
    fig = plots.plot_contours(landmarks, std)
    scatter = [c for c in fig.axes[0].collections if c.get_array() is not None][0]
    np.testing.assert_allclose(np.asarray(scatter.get_array()), std.mean(axis=1), rtol=1e-6)


def test_nan_sigmas(tmp_path, row_arrays):
    landmarks, std, _ = row_arrays
    partial = std.copy()
    partial[:3] = np.nan
    with pytest.warns(UserWarning, match="3 of 120 node sigmas are NaN"):
        plots.plot_contours(landmarks, partial, path=tmp_path / "nan.png")
    check_png(tmp_path / "nan.png", (640, 560))
    with pytest.raises(InputError, match="every node sigma is NaN"):
        plots.plot_contours(landmarks, np.full((120, 2), np.nan))
    with pytest.raises(InputError, match=r"\(120, 2\)"):
        plots.plot_contours(landmarks[:10], std)


def test_sample_grid(tmp_path, table):
    plots.plot_sample_grid(table, n=3, path=tmp_path / "grid.png")
    check_png(tmp_path / "grid.png", (260 * 3 + 110, 310))
    # Rows without RLE masks are rasterized from their landmarks instead.
    no_masks = table.with_columns(pl.lit(None, dtype=pl.String).alias("rle_heart"))
    plots.plot_sample_grid(no_masks, n=1, path=tmp_path / "grid1.png")
    check_png(tmp_path / "grid1.png", (370, 310))
    with pytest.raises(InputError, match="empty"):
        plots.plot_sample_grid(table.clear())
    with pytest.raises(InputError, match="landmark std"):
        plots.plot_sample_grid(table.with_columns(pl.lit(None).cast(table.schema["landmarks_std"]).alias("landmarks_std")))


@pytest.mark.parametrize("kind", ["violin", "box", "hist"])
def test_sigma_by_source(tmp_path, table, kind):
    fig = plots.plot_sigma_by_source(table, kind=kind, path=tmp_path / f"{kind}.png")
    check_png(tmp_path / f"{kind}.png", (720, 420))
    if kind != "hist":
        labels = [t.get_text().split("\n")[0] for t in fig.axes[0].get_xticklabels()]
        assert sorted(labels) == sorted(table["source"].unique().to_list())


def test_sigma_stats_bad_input(table):
    with pytest.raises(InputError, match="no finite value"):
        plots.plot_sigma_by_source(table.with_columns(pl.lit(float("nan")).alias("node_sigma_mean")))
    with pytest.raises(InputError, match="no finite value"):
        plots.plot_sigma_vs_dice(table.clear())
    with pytest.raises(InputError, match="no column"):
        plots.plot_sigma_by_source(table, column="nope")
    with pytest.raises(InputError, match="kind"):
        plots.plot_sigma_by_source(table, kind="pie")


@pytest.mark.parametrize("hexbin", [False, True])
def test_sigma_vs_dice(tmp_path, table, hexbin):
    fig = plots.plot_sigma_vs_dice(table, hexbin=hexbin, path=tmp_path / "sd.png")
    check_png(tmp_path / "sd.png", (600, 480))
    assert (len(fig.axes) == 2) == hexbin  # the hexbin gets a count colorbar


def test_corruption_box_plot_and_roc(tmp_path):
    results = pl.DataFrame(
        {
            "image_id": ["a", "b"] * 3,
            "kind": ["noise"] * 6,
            "severity": [0.0, 0.0, 50.0, 50.0, 100.0, 100.0],
            "node_sigma_mean": [5.0, 6.0, 7.0, 8.0, 9.0, 12.0],
            "latent_sigma_mean": [0.9, 0.92, 0.95, 0.97, 1.0, 1.1],
        }
    )
    fig = plots.plot_uncertainty_vs_corruption(results, path=tmp_path / "box.png")
    assert len(fig.axes) == 2
    check_png(tmp_path / "box.png", (900, 400))
    with pytest.raises(InputError, match="empty"):
        plots.plot_uncertainty_vs_corruption(results.clear())
    labels = np.array([0, 0, 1, 1, 0, 1], dtype=bool)
    plots.plot_roc(labels, {"a": np.arange(6.0), "b": np.array([1, 2, 3, 3, 0, 5.0])}, path=tmp_path / "roc.png")
    check_png(tmp_path / "roc.png", (480, 460))


def test_band_and_soft_mask(tmp_path, row_arrays):
    landmarks, std, size = row_arrays
    plots.plot_band(landmarks, std, 2.0, size=size, path=tmp_path / "band.png")
    check_png(tmp_path / "band.png", (640, 560))
    plots.plot_soft_mask(landmarks, std, size=size, path=tmp_path / "soft.png")
    check_png(tmp_path / "soft.png", (640, 560))
    plots.plot_soft_mask(landmarks, std, organ="heart", size=size, path=tmp_path / "soft_heart.png")
    with pytest.raises(InputError, match="NaN"):
        plots.plot_band(landmarks, np.full((120, 2), np.nan), 2.0)
    with pytest.raises(InputError, match="k must be"):
        plots.plot_band(landmarks, std, 0.0)


def test_find_row(table):
    image_id = table["image_id"][7]
    assert plots.find_row(table, image_id)["image_id"] == image_id
    assert plots.find_row(table, 7)["image_id"] == image_id
    assert plots.find_row(table, "7")["image_id"] == image_id
    with pytest.raises(InputError, match="not in the table"):
        plots.find_row(table, "no/such/image.png")
    with pytest.raises(InputError, match="out of range"):
        plots.find_row(table, 200)
    with pytest.raises(InputError, match="empty"):
        plots.find_row(table.clear(), 0)


def test_cli_plot(tmp_path, table, capsys):
    out = tmp_path / "row.png"
    assert main(["plot", table["image_id"][3], "--table", "sample", "--out", str(out)]) == 0
    check_png(out, (640, 560))
    # An X-ray of another size is padded and resized into the 1024 frame.
    Image.fromarray((np.arange(300 * 200) % 255).astype(np.uint8).reshape(300, 200)).save(tmp_path / "x.png")
    assert main(["plot", "3", "--table", "sample", "--image", str(tmp_path / "x.png"), "--out", str(out)]) == 0
    assert main(["plot", "missing-id", "--table", "sample", "--out", str(tmp_path / "m.png")]) == 1
    assert "image id 'missing-id' is not in the table" in capsys.readouterr().err
    assert not (tmp_path / "m.png").exists()


def test_cli_plot_stats(tmp_path, table):
    path = tmp_path / "t.parquet"
    table.write_parquet(path)
    assert main(["plot-stats", str(path), "--out", str(tmp_path / "figs")]) == 0
    names = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert names == [
        "latent_sigma_by_source.png", "node_sigma_by_source.png", "node_sigma_hist.png",
        "node_sigma_vs_dice.png", "sample_grid.png",
    ]
    for name in names:
        assert (tmp_path / "figs" / name).stat().st_size > 1000


def test_cli_experiment_ood(tmp_path, capsys):
    assert main(["experiment", "ood", "sample", "--roc", str(tmp_path / "roc.png")]) == 0
    text = capsys.readouterr().out
    assert "node_sigma_mean" in text and "latent_sigma_mean" in text
    check_png(tmp_path / "roc.png", (480, 460))


def test_no_pyplot_state():
    import sys

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plots.plot_sigma_by_source(load_sample())
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []
