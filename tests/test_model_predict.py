"""Prediction on private images: seeding, batching, resumable output, CLI, torchrun sharding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

torch = pytest.importorskip("torch")

from chexmask_u_tools.cli import main  # noqa: E402
from chexmask_u_tools.images.read import list_images  # noqa: E402
from chexmask_u_tools.model import HybridGNet  # noqa: E402
from chexmask_u_tools.model.predict import draw_eps, parts_dir, predict, predict_batch, predict_to_parquet, to_model_input
from chexmask_u_tools.model.pretrained import load_pretrained  # noqa: E402
from chexmask_u_tools.schema import CANONICAL_SCHEMA  # noqa: E402

SIZE = 64
GOOD = ["a/img0.png", "img1.png", "img2.jpg", "img3.png", "rgba.png", "wide16.png"]
BAD = ["notes.png", "truncated.png"]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    (root / "a").mkdir()
    rng = np.random.default_rng(0)
    for name in GOOD[:4]:
        image = rng.integers(0, 256, size=(64, 80), dtype=np.uint8)
        image[:, :6] = 0  # a black border for --crop-border
        Image.fromarray(image).save(root / name)
    rgba = rng.integers(0, 256, size=(70, 50, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
    Image.fromarray(rng.integers(0, 4096, size=(40, 90)).astype(np.uint16)).save(root / "wide16.png")
    (root / "notes.png").write_text("this is not a PNG")
    data = (root / "img1.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 3])
    return root


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = HybridGNet(input_size=SIZE)
    root = tmp_path_factory.mktemp("weights")
    (root / "v1_skip").mkdir()
    (root / "v1_skip" / "config.json").write_text(json.dumps({"inputsize": SIZE, "roi_align": "nominal"}))
    torch.save({f"model.{k}": v for k, v in model.state_dict().items()}, root / "v1_skip" / "pytorch_model.bin")
    return root


@pytest.fixture(scope="module")
def model(weights_dir) -> HybridGNet:
    return load_pretrained(path=weights_dir)


@pytest.fixture(scope="module")
def model64(model) -> HybridGNet:
    """float64 + nominal rule: stable arithmetic, so comparisons isolate the bookkeeping."""
    double = HybridGNet(input_size=SIZE, roi_align="nominal").double().eval()
    double.load_state_dict(model.state_dict())
    return double


def _landmark_arrays(table: pl.DataFrame, column: str = "landmarks") -> np.ndarray:
    return np.stack([np.asarray(v) for v in table[column].to_list()])


def test_draws_depend_only_on_seed_and_id():
    a = draw_eps(7, ["x", "y", "z"], 4)
    b = draw_eps(7, ["z", "x"], 4)
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(draw_eps(8, ["x"], 4)[0], a[0])


def test_predict_batch_statistics_match_manual_samples(model):
    images = torch.rand(2, 1, SIZE, SIZE)
    eps = torch.randn(2, 6, 64)
    stats = predict_batch(model, images, eps)
    samples, encoding = model.sample_landmarks(images, eps)
    samples = samples.detach().double().numpy() * 1024
    np.testing.assert_allclose(stats["mean"].numpy(), samples.mean(axis=1), atol=1e-9)
    np.testing.assert_allclose(stats["std"].numpy(), samples.std(axis=1, ddof=0), atol=1e-9)
    np.testing.assert_allclose(stats["latent_sigma"].numpy(), np.exp(encoding.logvar.detach().double().numpy() / 2), rtol=1e-12)


def test_resize_matches_bilinear_half_pixel_rule():
    square = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    out = to_model_input([square], 8, "cpu")[0, 0].numpy() * 255
    # align_corners=False: output pixel i samples input coordinate (i + 0.5) / 2 - 0.5, clamped.
    coords = np.clip((np.arange(8) + 0.5) / 2 - 0.5, 0, 3)
    rows = np.array([np.interp(coords, np.arange(4), r) for r in square.astype(float)])
    expected = np.array([np.interp(coords, np.arange(4), c) for c in rows.T]).T
    np.testing.assert_allclose(out, np.round(expected), atol=1e-4)


def test_results_independent_of_batch_size_and_order(image_dir, model64):
    items = [item for item in list_images(image_dir) if item[0] in GOOD]
    one = predict(items_as_paths(items), model64, batch_size=1, n_samples=5, frames=("preprocessed",))
    many = predict(items_as_paths(items[::-1]), model64, batch_size=4, n_samples=5, frames=("preprocessed",))
    assert one["image_id"].to_list() == many["image_id"].to_list()
    np.testing.assert_allclose(_landmark_arrays(one), _landmark_arrays(many), rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(_landmark_arrays(one, "landmarks_std"), _landmark_arrays(many, "landmarks_std"), atol=1e-4)


def items_as_paths(items):
    return [path for _, path in items]


def test_predict_to_parquet_resumes_and_reports_bad_images(tmp_path, image_dir, model64):
    out = tmp_path / "preds.parquet"
    first = [image_dir / "img1.png", image_dir / "notes.png"]
    report = predict_to_parquet(first, out, model64, n_samples=3, batch_size=2)
    assert report.done == 1 and [f[0] for f in report.failed] == [str(image_dir / "notes.png")]
    assert "1 failed" in report.summary()
    everything = [image_dir / name for name in GOOD[2:]] + first
    report = predict_to_parquet(everything, out, model64, n_samples=3, batch_size=2, flush_every=1)
    assert report.skipped == 1 and report.done == len(GOOD) - 2 and len(report.failed) == 1
    assert not parts_dir(out).exists()
    table = pl.read_parquet(out)
    assert table.schema == CANONICAL_SCHEMA
    assert table["image_id"].n_unique() == len(GOOD) - 1 and table.height == 2 * (len(GOOD) - 1)
    fresh = predict(everything[:-1], model64, n_samples=3, batch_size=3)
    np.testing.assert_allclose(_landmark_arrays(table), _landmark_arrays(fresh), atol=1e-4)


def test_any_failure_on_one_image_is_that_images_failure(tmp_path, image_dir, model64, monkeypatch):
    import importlib

    predict_module = importlib.import_module("chexmask_u_tools.model.predict")  # the package exports a function of that name

    real_read = predict_module.read_image
    failures = {"img1.png": MemoryError("cannot allocate"), "img3.png": OSError(5, "Input/output error"),
                "a/img0.png": ValueError("decoder bug")}  # fmt: skip

    def flaky_read(path, **kwargs):
        for name, error in failures.items():
            if str(path).endswith(name):
                raise error
        return real_read(path, **kwargs)

    monkeypatch.setattr(predict_module, "read_image", flaky_read)
    out = tmp_path / "preds.parquet"
    report = predict_to_parquet(image_dir, out, model64, n_samples=2, batch_size=2, workers=2)
    reasons = dict(report.failed)
    assert set(reasons) == set(failures) | set(BAD)
    assert "MemoryError: cannot allocate" in reasons["img1.png"] and "OSError" in reasons["img3.png"]
    assert "ValueError: decoder bug" in reasons["a/img0.png"]
    assert report.done == len(GOOD) - len(failures)
    assert sorted(pl.read_parquet(out)["image_id"].unique().to_list()) == sorted(set(GOOD) - set(failures))


def test_original_frame_rows(image_dir, model):
    table = predict([image_dir / "wide16.png"], model, n_samples=3)
    assert table["frame"].to_list() == ["preprocessed", "original"]
    pre, orig = table.row(0, named=True), table.row(1, named=True)
    assert (pre["height"], pre["width"]) == (1024, 1024) and (orig["height"], orig["width"]) == (40, 90)
    points = np.asarray(orig["landmarks"])
    assert (points >= 0).all() and (points[:, 0] <= 89).all() and (points[:, 1] <= 39).all()
    # std scales by 1024 / max(h, w)
    np.testing.assert_allclose(np.asarray(orig["landmarks_std"]), np.asarray(pre["landmarks_std"]) * 90 / 1024, rtol=1e-5)


def test_cli_end_to_end(tmp_path, image_dir, weights_dir, capsys):
    out, csv = tmp_path / "preds.parquet", tmp_path / "released.csv"
    code = main(
        [
            "predict", str(image_dir), "--out", str(out), "--weights", str(weights_dir), "--samples", "3",
            "--batch-size", "4", "--no-progress", "--crop-border", "--csv", str(csv), "--workers", "2",
        ]
    )  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "2 failed" in err and "notes.png" in err and "truncated.png" in err
    table = pl.read_parquet(out)
    assert sorted(table["image_id"].unique().to_list()) == sorted(GOOD)
    assert table.filter(pl.col("frame") == "original")["rle_heart"].null_count() == 0
    released = pl.read_csv(csv)
    assert released.height == len(GOOD) and "Landmarks (Std)" in released.columns and "Image ID" in released.columns
    # a second run with the same settings has nothing left to do (other settings are refused: see the provenance test)
    again = ["predict", str(image_dir), "--out", str(out), "--weights", str(weights_dir), "--samples", "3", "--crop-border", "--no-progress"]
    assert main(again) == 0
    assert f"{len(GOOD)} already done" in capsys.readouterr().err


def test_cli_errors(tmp_path, weights_dir, capsys):
    (tmp_path / "empty").mkdir()
    args = ["predict", str(tmp_path / "empty"), "--out", str(tmp_path / "o.parquet"), "--weights", str(weights_dir)]
    assert main(args) == 1
    assert "no image files" in capsys.readouterr().err
    bad_weights = tmp_path / "bad.bin"
    torch.save({"encoder.fc_mu.weight": torch.zeros(2)}, bad_weights)
    args = ["predict", str(tmp_path / "empty"), "--out", str(tmp_path / "o.parquet"), "--weights", str(bad_weights)]
    assert main(args) == 1
    assert "missing keys" in capsys.readouterr().err


def test_torchrun_two_cpu_processes_equal_one(tmp_path, image_dir, weights_dir):
    common = ["--weights", str(weights_dir), "--samples", "3", "--batch-size", "2", "--no-progress", "--device", "cpu"]
    common += ["--dtype", "fp64"]  # stable arithmetic: any difference would come from the sharding
    single = tmp_path / "single.parquet"
    assert main(["predict", str(image_dir), "--out", str(single), *common]) == 0
    sharded = tmp_path / "sharded.parquet"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "chexmask_u_tools", "predict", str(image_dir), "--out", str(sharded), *common,
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 failed" in result.stderr
    a, b = pl.read_parquet(single), pl.read_parquet(sharded)
    assert a.select("image_id", "frame").equals(b.select("image_id", "frame"))
    np.testing.assert_allclose(_landmark_arrays(a), _landmark_arrays(b), atol=1e-4)
    np.testing.assert_allclose(_landmark_arrays(a, "landmarks_std"), _landmark_arrays(b, "landmarks_std"), atol=1e-4)
    assert not parts_dir(sharded).exists()


def test_cli_nothing_predicted_exits_nonzero_and_writes_nothing(tmp_path, image_dir, weights_dir, capsys):
    listing = tmp_path / "bad.txt"
    listing.write_text("".join(f"{image_dir / name}\n" for name in BAD))
    out = tmp_path / "o.parquet"
    assert main(["predict", str(listing), "--out", str(out), "--weights", str(weights_dir), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "2 failed" in err and "none of the 2 input image(s) could be predicted; nothing was written" in err
    assert not out.exists() and not parts_dir(out).exists()


@pytest.mark.slow
def test_cli_random_weights_are_accepted_loudly(tmp_path, image_dir, capsys):
    out = tmp_path / "r.parquet"
    args = ["predict", str(image_dir / "img1.png"), "--out", str(out), "--weights", "random", "--samples", "2", "--no-progress"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("WARNING: --weights random") == 2 and "meaningless" in err  # before and after the run
    assert pl.read_parquet(out)["image_id"].to_list() == ["img1.png", "img1.png"]


_NO_TORCH = """
import sys
sys.modules["torch"] = None  # as if the [torch] extra were not installed
from chexmask_u_tools.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", ["predict", "experiment"])
def test_cli_without_torch_names_the_extra(tmp_path, image_dir, command):
    if command == "predict":
        args = ["predict", str(image_dir), "--out", str(tmp_path / "o.parquet")]
    else:
        args = ["experiment", "corruption", str(image_dir), "--out", str(tmp_path / "o.csv"), "--weights", "random"]
    result = subprocess.run([sys.executable, "-c", _NO_TORCH, *args], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == f"chexmask-u {command}: error: needs the [torch] extra: pip install 'chexmask-u-tools[torch]'"


@pytest.mark.slow
def test_predictions_carry_their_provenance_into_files_and_cards(tmp_path, image_dir, weights_dir, capsys):
    import chexmask_u_tools as cxu

    out, csv = tmp_path / "r.parquet", tmp_path / "r.csv"
    args = ["predict", str(image_dir / "img1.png"), "--out", str(out), "--csv", str(csv), "--weights", "random",
            "--seed", "7", "--samples", "2", "--no-progress"]
    assert main(args) == 0
    recorded = cxu.read_provenance(out)
    assert recorded["weights"] == "random" and recorded["weights.seed"] == "7" and recorded["samples"] == "2"
    assert recorded["seed"] == "7" and recorded["dtype"] == "fp32" and recorded["roi_align"] == "torchvision"
    assert recorded["tool"].startswith(f"chexmask-u-tools {cxu.__version__}")
    assert cxu.read_provenance(csv) == recorded
    assert cxu.read_table(csv).height == 1  # the Provenance column does not get in the readers' way
    card_path = tmp_path / "card.md"
    assert main(["describe", str(out), "--out", str(card_path)]) == 0
    card = card_path.read_text()
    assert "## Predictions" in card and "untrained random weights (seed 7)" in card
    # Other weights into the same output would mix predictions: refused.
    again = ["predict", str(image_dir / "img2.png"), "--out", str(out), "--weights", str(weights_dir), "--samples", "2", "--no-progress"]
    assert main(again) == 1
    err = capsys.readouterr().err
    assert "holds predictions made with other settings" in err and "weights" in err
    published = tmp_path / "p.parquet"
    assert main(["predict", str(image_dir / "img1.png"), "--out", str(published), "--weights", str(weights_dir),
                 "--samples", "2", "--no-progress"]) == 0
    local = cxu.read_provenance(published)
    assert local["weights"] == "file" and len(local["weights.sha256"]) == 64
