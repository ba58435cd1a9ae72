"""PyTorch datasets on a synthetic image tree of all five sources: frames, sizes, masks, weights,
missing images, workers, sharding and geometric transforms."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

import chexmask_u_tools as cxu  # noqa: E402
from chexmask_u_tools.errors import ImageError, InputError  # noqa: E402
from chexmask_u_tools.masks.frames import convert_table_frame, to_original_frame  # noqa: E402
from chexmask_u_tools.images.preprocess import crop_black_border, pad_to_square  # noqa: E402
from chexmask_u_tools.images.read import read_image, read_image_reduced  # noqa: E402
from chexmask_u_tools.images.resolver import ImageResolver, MissingImageError  # noqa: E402
from chexmask_u_tools.testing.images import demo_image_path, write_demo_images  # noqa: E402
from chexmask_u_tools.masks.raster import rasterize_organs  # noqa: E402
from chexmask_u_tools.select.rules import organ_rule  # noqa: E402
from chexmask_u_tools.masks.soft import soft_mask_organs  # noqa: E402
from chexmask_u_tools.train.datasets import CheXmaskUDataset, CheXmaskUIterableDataset
from chexmask_u_tools.train.transforms import RandomAffine, apply_affine
from chexmask_u_tools.select.weights import SampleWeighting, node_weights  # noqa: E402

RLE = ("rle_right_lung", "rle_left_lung", "rle_heart")


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    sample = cxu.load_sample()
    return pl.concat([sample.filter(pl.col("source") == s).head(4) for s in cxu.SOURCES])


@pytest.fixture(scope="module")
def roots(table, tmp_path_factory) -> dict[str, Path]:
    return write_demo_images(table, tmp_path_factory.mktemp("images"))


def _lung_contrast(sample) -> float:
    """Mean image inside the lungs minus outside (the demo images have dark lungs)."""
    image = sample["image"][0]
    masks = sample["masks"].bool() if sample["masks"].dtype == torch.bool else sample["masks"] > 0.5
    lungs = masks[0] | masks[1]
    body = ~(lungs | masks[2]) & (image > 0)  # outside the organs, not in the zero padding
    return float(image[lungs].mean() - image[body].mean())


def test_preprocessed_1024_reproduces_released_masks_and_model_input(table, roots):
    dataset = CheXmaskUDataset(table, roots, size=1024)
    assert len(dataset) == 20
    for i in (0, 5, 9, 13, 18):  # every source
        sample = dataset[i]
        row = table.row(i, named=True)
        released = np.stack([cxu.rle_decode(row[c], 1024, 1024) for c in RLE])
        np.testing.assert_array_equal(sample["masks"].numpy(), released)
        np.testing.assert_allclose(sample["landmarks"].numpy(), np.asarray(row["landmarks"]), atol=1e-4)
        path = roots[row["source"]] / demo_image_path(row["source"], row["image_id"])
        pixels = read_image(path)
        assert sample["original_size"].tolist() == list(pixels.shape)
        square, _ = pad_to_square(pixels)
        expected = torch.nn.functional.interpolate(
            torch.from_numpy(square)[None, None].float(), size=(1024, 1024), mode="bilinear", align_corners=False
        ).round()[0] / 255.0
        torch.testing.assert_close(sample["image"], expected, atol=1.01 / 255, rtol=0)
        assert _lung_contrast(sample) < -0.2


@pytest.mark.parametrize("size", [256, 100])
def test_preprocessed_other_sizes(table, roots, size):
    sample = CheXmaskUDataset(table, roots, size=size)[3]
    landmarks = np.asarray(table["landmarks"][3].to_numpy(), dtype=np.float64) * size / 1024
    np.testing.assert_allclose(sample["landmarks"].numpy(), landmarks, rtol=1e-5)
    np.testing.assert_allclose(sample["std"].numpy(), table["landmarks_std"][3].to_numpy() * size / 1024, rtol=1e-5)
    np.testing.assert_array_equal(sample["masks"].numpy(), rasterize_organs(landmarks, size, size))
    assert sample["image"].shape == (1, size, size)
    assert _lung_contrast(sample) < -0.2


def test_original_frame_native_and_resized(table, roots):
    native = CheXmaskUDataset(table, roots, frame="original", size=None)
    resized = CheXmaskUDataset(table, roots, frame="original", size=128)
    for i in (1, 2, 6):
        a, b = native[i], resized[i]
        h, w = a["original_size"].tolist()
        assert a["image"].shape == (1, h, w) and b["image"].shape == (1, 128, 128)
        lm = to_original_frame(table["landmarks"][i].to_numpy(), h, w, round_clip=False)
        np.testing.assert_allclose(a["landmarks"].numpy(), lm, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(b["landmarks"].numpy(), lm * [128 / w, 128 / h], rtol=1e-5, atol=1e-3)
        std = table["landmarks_std"][i].to_numpy() * max(h, w) / 1024
        np.testing.assert_allclose(a["std"].numpy(), std, rtol=1e-5)
        np.testing.assert_allclose(b["std"].numpy(), std * [128 / w, 128 / h], rtol=1e-5)
        path = roots[table["source"][i]] / demo_image_path(table["source"][i], table["image_id"][i])
        np.testing.assert_allclose(a["image"][0].numpy(), read_image(path) / 255.0, atol=1e-6)
        assert _lung_contrast(a) < -0.2 and _lung_contrast(b) < -0.2


def test_original_frame_rows_and_size_mismatch(table, roots):
    sizes = [read_image(roots[s] / demo_image_path(s, i)).shape for s, i in table.select("source", "image_id").iter_rows()]
    original = convert_table_frame(table, "original", original_height=[s[0] for s in sizes],
                                   original_width=[s[1] for s in sizes], round_clip=False)
    back = CheXmaskUDataset(original, roots, size=1024)
    for i in (0, 1, 2):
        np.testing.assert_allclose(back[i]["landmarks"].numpy(), table["landmarks"][i].to_numpy(), atol=1e-2)
    # Row 0 is 256x256: claim 512x512 (same aspect) and 256x300 (different aspect).
    doubled = original.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.col(c) * 2).otherwise(pl.col(c)).alias(c)
                                    for c in ("height", "width"))
    doubled = doubled.with_columns(pl.Series("landmarks", original["landmarks"].to_numpy() * np.where(np.arange(20) == 0, 2, 1)[:, None, None],
                                             dtype=original.schema["landmarks"]))
    with pytest.raises(ImageError, match=r"is 256x256 \(WxH\) but the row says 512x512.*rescale"):
        CheXmaskUDataset(doubled, roots, frame="original", size=None)[0]
    fixed = CheXmaskUDataset(doubled, roots, frame="original", size=None, size_mismatch="rescale")[0]
    np.testing.assert_allclose(fixed["landmarks"].numpy(), original["landmarks"][0].to_numpy(), atol=1e-3)
    skewed = original.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(300).otherwise(pl.col("width")).cast(pl.Int32).alias("width"))
    with pytest.raises(ImageError, match="aspect ratio differs"):
        CheXmaskUDataset(skewed, roots, size=64, size_mismatch="rescale")[0]


def test_soft_masks_weights_and_rules(table, roots):
    rules = [organ_rule(7.0, organ="heart"), "image.mean<=9:weight=0.5"]
    weighting = SampleWeighting("exp", tau=8.0, clip=(0.05, 1.0))
    dataset = CheXmaskUDataset(table, roots, size=96, masks="both", rules=rules, sample_weighting=weighting,
                               node_weighting={"method": "exp", "tau": 6.0}, pixel_weights={"floor": 0.2})
    sigma = table["node_sigma_mean"].to_numpy()
    heart = table["sigma_heart"].to_numpy()
    seen_invalid = False
    for i in range(len(dataset)):
        sample = dataset[i]
        expected_weight = np.clip(np.exp(-sigma[i] / 8.0), 0.05, 1.0) * (0.5 if sigma[i] > 9.0 else 1.0)
        assert float(sample["sample_weight"]) == pytest.approx(expected_weight, rel=1e-5)
        assert sample["mask_valid"].tolist() == [True, True, bool(heart[i] <= 7.0)]
        seen_invalid |= not sample["mask_valid"][2]
    assert seen_invalid
    sample = dataset[4]
    soft = soft_mask_organs(sample["landmarks"].numpy(), sample["std"].numpy(), 96, 96)
    np.testing.assert_allclose(sample["soft_masks"].numpy(), soft, atol=1e-6)
    assert sample["masks"].dtype == torch.bool and sample["soft_masks"].dtype == torch.float32
    np.testing.assert_allclose(sample["pixel_weight"].numpy(), 0.2 + 0.8 * np.abs(2 * soft - 1), atol=1e-5)
    np.testing.assert_allclose(sample["node_weight"].numpy(), node_weights(table["landmarks_std"][4].to_numpy(), "exp", tau=6.0), rtol=1e-5)
    soft_only = CheXmaskUDataset(table, roots, size=96, masks="soft")[4]
    assert soft_only["masks"].dtype == torch.float32 and "soft_masks" not in soft_only


def test_rows_without_std(table, roots):
    holes = table.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(None).otherwise(pl.col("landmarks_std")).alias("landmarks_std"))
    with pytest.raises(InputError, match=r"needs landmarks_std, but 1 of 20 rows have none.*soft_missing='hard'"):
        CheXmaskUDataset(holes, roots, size=64, masks="soft", pixel_weights=True)
    sample = CheXmaskUDataset(holes, roots, size=64, masks="soft", pixel_weights=True, soft_missing="hard")[2]
    assert not sample["has_std"] and torch.isnan(sample["std"]).all()
    assert torch.equal(sample["node_weight"], torch.ones(120))
    assert set(sample["masks"].unique().tolist()) <= {0.0, 1.0}


def test_missing_image_policies(table, roots, tmp_path):
    # A copy of the tree without one VinDr image.
    lost = table.filter(pl.col("source") == "VinDr-CXR")["image_id"][1]
    resolver = ImageResolver(roots, resolver=lambda s, i: [tmp_path / "gone.png"] if i == lost else None)
    copy_roots = {s: r for s, r in roots.items() if s != "VinDr-CXR"}
    vindr_copy = tmp_path / "vindr"
    for image_id in table.filter(pl.col("source") == "VinDr-CXR")["image_id"]:
        if image_id != lost:
            target = vindr_copy / demo_image_path("VinDr-CXR", image_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((roots["VinDr-CXR"] / demo_image_path("VinDr-CXR", image_id)).read_bytes())
    copy_roots["VinDr-CXR"] = vindr_copy
    index = table["image_id"].to_list().index(lost)

    with pytest.raises(MissingImageError) as info:  # found when the dataset is built, not mid-epoch
        CheXmaskUDataset(table, copy_roots, size=64)
    assert lost in str(info.value) and str(vindr_copy / "train" / f"{lost}.png") in str(info.value)
    assert len(info.value.tried) == 15
    assert "1 of 20 rows have no image on disk (VinDr-CXR: 1 of 4)" in str(info.value) and "missing='skip'" in str(info.value)
    assert CheXmaskUIterableDataset(table, copy_roots, size=64).check_images().found == 19
    del resolver

    with pytest.warns(UserWarning, match="skipped 1 of 20"):
        skipping = CheXmaskUDataset(table, copy_roots, size=64, missing="skip")
    assert len(skipping) == 19 and skipping.skipped == 1
    assert lost not in {skipping[i]["image_id"] for i in range(19)}

    masks_only = CheXmaskUDataset(table, copy_roots, size=64, missing="masks_only")
    sample = masks_only[index]
    assert not sample["has_image"] and sample["image"].abs().sum() == 0 and sample["masks"].any()
    assert masks_only[0]["has_image"]
    with pytest.raises(ImageError, match="original frame cannot be built"):
        CheXmaskUDataset(table, copy_roots, frame="original", size=64, missing="masks_only")[index]
    pure = CheXmaskUDataset(table, None, size=64, missing="masks_only")[0]
    assert not pure["has_image"] and pure["masks"].any()
    with pytest.raises(InputError, match="masks_only"):
        CheXmaskUDataset(table, None)

    iterable = CheXmaskUIterableDataset(table, copy_roots, size=32, missing="skip", block_rows=7)
    with pytest.warns(UserWarning, match="skipped 1 rows"):
        ids = [s["image_id"] for s in iterable]
    assert len(ids) == 19 and lost not in ids
    with pytest.raises(MissingImageError):
        list(CheXmaskUIterableDataset(table, copy_roots, size=32, block_rows=7))


def test_unreadable_image_raises(table, roots, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    dataset = CheXmaskUDataset(table, ImageResolver(resolver=lambda s, i: bad), size=32)
    with pytest.raises(ImageError, match="not a readable image"):
        dataset[0]


def _rows(loader) -> list[int]:
    return [int(r) for batch in loader for r in batch["row"]]


def test_dataloader_two_workers_no_duplicates(table, roots):
    dataset = CheXmaskUDataset(table, roots, size=32)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2, shuffle=True)
    rows = _rows(loader)
    assert sorted(rows) == list(range(20))
    iterable = CheXmaskUIterableDataset(table, roots, size=32, block_rows=3, rules=["image.mean<=10"])
    loader = torch.utils.data.DataLoader(iterable, batch_size=4, num_workers=2)
    rows = _rows(loader)
    expected = np.flatnonzero(table["node_sigma_mean"].to_numpy() <= 10.0).tolist()
    assert sorted(rows) == expected and len(rows) == len(iterable)


@pytest.mark.slow
def test_lazy_iterable_in_fork_and_spawn_workers(table, roots, tmp_path):
    # Workers read the mapped row store, never polars: any start method works.
    path = tmp_path / "t.parquet"
    table.write_parquet(path)
    lazy = CheXmaskUIterableDataset(pl.scan_parquet(path), roots, size=16, block_rows=4)
    forked = torch.utils.data.DataLoader(lazy, batch_size=4, num_workers=1, multiprocessing_context="fork")
    assert sorted(_rows(forked)) == list(range(20))
    spawned = torch.utils.data.DataLoader(lazy, batch_size=4, num_workers=2, multiprocessing_context="spawn")
    assert sorted(_rows(spawned)) == list(range(20))


def test_sharding_across_ranks_and_workers(table, roots):
    seen: Counter[int] = Counter()
    for rank in range(3):
        shard = CheXmaskUIterableDataset(table, roots, size=16, block_rows=2, rank=rank, world_size=3, shuffle=True, seed=5)
        rows = _rows(torch.utils.data.DataLoader(shard, batch_size=2, num_workers=2))
        assert 2 <= len(rows) <= 8  # 10 blocks over 3 ranks x 2 workers
        seen.update(rows)
    assert sorted(seen) == list(range(20)) and set(seen.values()) == {1}
    seen.clear()
    for rank in range(4):  # in-process iteration: one worker per rank
        seen.update(int(s["row"]) for s in CheXmaskUIterableDataset(table, roots, size=16, block_rows=3, rank=rank, world_size=4))
    assert sorted(seen) == list(range(20)) and set(seen.values()) == {1}
    one = CheXmaskUIterableDataset(table, roots, size=16, block_rows=4, shuffle=True, seed=1)
    first = [int(s["row"]) for s in one]
    one.set_epoch(1)
    second = [int(s["row"]) for s in one]
    assert sorted(first) == sorted(second) == list(range(20)) and first != second
    with pytest.raises(InputError):
        CheXmaskUIterableDataset(table, roots, rank=3, world_size=3)


def test_iterable_matches_map_style_on_a_lazy_scan(table, roots, tmp_path):
    path = tmp_path / "t.parquet"
    table.write_parquet(path)
    kwargs = dict(size=48, masks="both", rules=["dice.mean>=0.75"], sample_weighting=SampleWeighting("rank"))
    mapped = CheXmaskUDataset(pl.scan_parquet(path), roots, **kwargs)
    streamed = list(CheXmaskUIterableDataset(pl.scan_parquet(path), roots, block_rows=6, **kwargs))
    assert len(streamed) == len(mapped) > 0
    for a, b in zip((mapped[i] for i in range(len(mapped))), streamed):
        assert a["image_id"] == b["image_id"]
        for key in ("image", "masks", "soft_masks", "landmarks", "sample_weight", "node_weight"):
            torch.testing.assert_close(a[key], b[key])


def _dilate(mask: np.ndarray) -> np.ndarray:
    """8-neighbour dilation by one pixel of (..., H, W) bool masks."""
    padded = np.pad(mask, [(0, 0)] * (mask.ndim - 2) + [(1, 1), (1, 1)])
    h, w = mask.shape[-2:]
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[..., dy : dy + h, dx : dx + w]
    return out


def test_random_affine_flip_and_rotation(table, roots):
    base = CheXmaskUDataset(table, roots, size=64, masks="both", pixel_weights=True)[7]
    flipped = RandomAffine(hflip=1.0)(base)
    assert flipped["flipped"]
    torch.testing.assert_close(flipped["image"], torch.flip(base["image"], [-1]))
    assert torch.equal(flipped["masks"][0], torch.flip(base["masks"][1], [-1]))  # lung on image left stays channel 0
    assert torch.equal(flipped["masks"][2], torch.flip(base["masks"][2], [-1]))
    torch.testing.assert_close(flipped["soft_masks"][1], torch.flip(base["soft_masks"][0], [-1]))
    torch.testing.assert_close(flipped["landmarks"][:, 0], 63 - base["landmarks"][:, 0])
    torch.testing.assert_close(flipped["std"], base["std"])
    anatomy = RandomAffine(hflip=1.0, lungs="anatomy")(base)
    assert torch.equal(anatomy["masks"][0], torch.flip(base["masks"][0], [-1]))
    # Landmarks stay on their masks, up to one boundary pixel (truncation of mirrored vertices).
    drawn = rasterize_organs(anatomy["landmarks"].numpy().astype(np.float64), 64, 64)
    moved = anatomy["masks"].numpy()
    assert not (drawn & ~_dilate(moved)).any() and not (moved & ~_dilate(drawn)).any()
    quarter = np.array([[0.0, -1.0], [1.0, 0.0]])  # 90 degrees about the centre
    centre = np.array([31.5, 31.5])
    turned = apply_affine(base, quarter, centre - quarter @ centre, False)
    torch.testing.assert_close(turned["image"], torch.rot90(base["image"], -1, [-2, -1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(turned["std"], base["std"][:, [1, 0]])
    torch.testing.assert_close(turned["pixel_weight"], torch.rot90(base["pixel_weight"], -1, [-2, -1]), atol=1e-5, rtol=0)
    generator = torch.Generator().manual_seed(0)
    warped = RandomAffine(degrees=15, translate=0.1, scale=(0.9, 1.1), generator=generator)(base)
    drawn = rasterize_organs(np.clip(warped["landmarks"].numpy(), -100, 200).astype(np.float64), 64, 64)
    moved = warped["masks"].numpy()
    overlap = (drawn & moved).sum() / max((drawn | moved).sum(), 1)
    assert overlap > 0.85
    assert warped["pixel_weight"].min() >= 0.1 - 1e-6 and warped["pixel_weight"].max() <= 1 + 1e-6


def test_bad_arguments(table, roots):
    for kwargs in (dict(frame="square"), dict(size=3), dict(masks="fuzzy"), dict(missing="ignore"), dict(size_mismatch="fix")):
        with pytest.raises(InputError):
            CheXmaskUDataset(table, roots, **kwargs)
    with pytest.raises(InputError):
        CheXmaskUDataset(table.drop("landmarks"), roots)
    with pytest.raises(InputError):
        CheXmaskUIterableDataset(table, roots, block_rows=0)
    with pytest.raises(IndexError):
        CheXmaskUDataset(table, roots)[20]


def test_modules_without_torch_import_without_torch():
    code = "import sys; sys.modules['torch'] = None\nimport chexmask_u_tools.select.rules, chexmask_u_tools.select.weights, chexmask_u_tools.images.resolver"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_real_rows_masks_match_the_released_masks(real_tables):
    real = pl.concat([table.head(6) for _, table in real_tables])
    # the dataset draws preprocessed-frame masks at size 1024: compare the rows of that frame
    real = real.filter((pl.col("frame") == "preprocessed") & (pl.col("height") == 1024) & (pl.col("width") == 1024))
    assert real.height
    dataset = CheXmaskUDataset(real, None, size=1024, missing="masks_only", masks="hard")
    for i in range(len(dataset)):
        row = real.row(i, named=True)
        released = np.stack([cxu.rle_decode(row[c], row["height"], row["width"]) for c in RLE])
        np.testing.assert_array_equal(dataset[i]["masks"].numpy(), released)
        assert bool(dataset[i]["has_std"]) == (row["landmarks_std"] is not None)


class _Lookup:
    """Resolver callable: every row's image is one file (picklable, unlike a lambda)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, source: str, image_id: str) -> Path:
        return self.path


def _smooth_image(height: int, width: int, border: tuple[int, int, int, int] = (0, 0, 0, 0)) -> np.ndarray:
    """A smooth picture (ramps and a blob, 20..235) with black margins (top, bottom, left, right)."""
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    pixels = 20 + 120 * xx + 60 * yy + 35 * np.exp(-((xx - 0.3) ** 2 + (yy - 0.6) ** 2) / 0.02)
    pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    top, bottom, left, right = border
    pixels[:top], pixels[height - bottom :], pixels[:, :left], pixels[:, width - right :] = 0, 0, 0, 0
    return pixels


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
@pytest.mark.parametrize(
    ("frame", "shape"),
    [("preprocessed", (1203, 1001)), ("original", (1203, 1001))],  # padded left and right / stretched
)
def test_fast_decode_keeps_the_full_resolution_geometry(table, tmp_path, suffix, frame, shape):
    path = tmp_path / f"image{suffix}"
    Image.fromarray(_smooth_image(*shape)).save(path, quality=95)
    rows = table.filter(pl.col("source") == "CheXpert").head(1)
    size = 128
    options = dict(frame=frame, size=size, missing="raise")
    if frame == "original":
        rows = rows.with_columns(pl.lit(shape[0]).alias("height"), pl.lit(shape[1]).alias("width"))
    fast = CheXmaskUDataset(rows, _Lookup(path), fast_decode=True, **options)[0]
    exact = CheXmaskUDataset(rows, _Lookup(path), fast_decode=False, **options)[0]
    assert fast["image"].shape == exact["image"].shape == (1, size, size)
    for key in ("landmarks", "std", "masks", "original_size"):
        torch.testing.assert_close(fast[key], exact[key], rtol=0, atol=0, equal_nan=True)
    difference = (fast["image"] - exact["image"]).abs()[0].numpy() * 255
    # A misplaced or mis-scaled image shows on the ramps (1..2 gray levels per
    # output pixel); the block averaging alone stays below a level, except
    # where the image meets the zero padding (blended over k pixels, not 1).
    assert difference.mean() < 0.5
    assert np.quantile(difference, 0.98) <= 2.0
    if frame == "original":
        assert difference.max() <= 2.0


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_fast_decode_border_crop_is_block_accurate(table, tmp_path, suffix):
    path = tmp_path / f"bordered{suffix}"
    Image.fromarray(_smooth_image(899, 1150, border=(37, 0, 45, 29))).save(path, quality=95)
    rows = table.filter(pl.col("source") == "MIMIC-CXR-JPG").head(1)
    size = 128
    fast = CheXmaskUDataset(rows, _Lookup(path), size=size)[0]
    # The crop box found on the reduced image, in full-resolution pixels...
    reduced, k, (height, width) = read_image_reduced(path, size)
    assert k == 8 and (height, width) == (899, 1150)
    _, (top, left, h, w) = crop_black_border(reduced)
    box = (top * k, left * k, min((top + h) * k, height), min((left + w) * k, width))
    # ...is within k - 1 pixels of the full-resolution one (JPEG ringing: one more),
    full = read_image(path)
    _, (ftop, fleft, fh, fw) = crop_black_border(full)
    slack = k - 1 + (suffix == ".jpg")
    assert 0 <= ftop - box[0] <= slack and 0 <= fleft - box[1] <= slack
    assert 0 <= box[2] - (ftop + fh) <= slack and 0 <= box[3] - (fleft + fw) <= slack
    # and the image is that box padded and resized with the full-resolution geometry.
    square, _ = pad_to_square(full[box[0] : box[2], box[1] : box[3]])
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(square)[None, None].float(), size=(size, size), mode="bilinear", align_corners=False
    ).round()[0] / 255.0
    difference = (fast["image"] - expected).abs()[0].numpy() * 255
    # Away from the box edges (where the block averaging blends the kept black
    # border over k pixels) a shift by a third of a pixel would show.
    inside = torch.nn.functional.max_pool2d((expected == 0).float()[None], 5, stride=1, padding=2)[0, 0].numpy() == 0
    assert inside.mean() > 0.6 and difference[inside].mean() < 0.3


def test_fast_decode_leaves_images_near_the_output_size_alone(table, roots):
    # The demo images (256..300 px) are less than twice 256: decoded in full, same pixels.
    fast = CheXmaskUDataset(table, roots, size=256)
    exact = CheXmaskUDataset(table, roots, size=256, fast_decode=False)
    for i in (0, 5, 9, 13, 18):
        torch.testing.assert_close(fast[i]["image"], exact[i]["image"], rtol=0, atol=0)


def test_fast_decode_through_the_iterable_dataset(table, tmp_path):
    big = {}
    for source in cxu.SOURCES:
        big[source] = tmp_path / f"{source}.jpg"
        Image.fromarray(_smooth_image(700, 560)).save(big[source], quality=95)

    def resolver(source: str, image_id: str) -> Path:
        return big[source]

    mapped = CheXmaskUDataset(table, resolver, size=64)
    streamed = CheXmaskUIterableDataset(table, resolver, size=64, block_rows=4)
    by_row = {int(s["row"]): s["image"] for s in streamed}
    assert len(by_row) == len(mapped)
    for i in range(len(mapped)):
        torch.testing.assert_close(mapped[i]["image"], by_row[i], rtol=0, atol=0)


def test_uint8_images_hold_the_same_levels(table, roots):
    floats = CheXmaskUDataset(table, roots, size=100)
    levels = CheXmaskUDataset(table, roots, size=100, image_dtype="uint8")
    for i in (0, 9, 18):
        a, b = floats[i], levels[i]
        assert b["image"].dtype == torch.uint8 and b["image"].shape == (1, 100, 100)
        torch.testing.assert_close(b["image"].float() / 255, a["image"], rtol=0, atol=0)
    masks_only = CheXmaskUDataset(table, None, size=64, missing="masks_only", image_dtype="uint8")[0]
    assert masks_only["image"].dtype == torch.uint8 and not masks_only["image"].any()
    turned = RandomAffine(degrees=20, generator=torch.Generator().manual_seed(1))(levels[0])
    assert turned["image"].dtype == torch.uint8 and turned["image"].float().mean() > 10
    batch = next(iter(torch.utils.data.DataLoader(levels, batch_size=4)))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (4, 1, 100, 100)
    with pytest.raises(InputError, match="image_dtype"):
        CheXmaskUDataset(table, roots, image_dtype="float16")


def test_decode_cache_hits_and_invalidation(table, tmp_path):
    path = tmp_path / "image.jpg"
    Image.fromarray(_smooth_image(700, 560)).save(path, quality=95)
    rows = table.filter(pl.col("source") == "CheXpert").head(2)
    cache = tmp_path / "cache"
    plain = CheXmaskUDataset(rows, _Lookup(path), size=64)
    cached = CheXmaskUDataset(rows, _Lookup(path), size=64, cache_dir=cache)
    first = cached[0]
    entries = sorted(cache.rglob("*.npz"))
    assert len(entries) == 1 and not list(cache.rglob("*.part"))
    torch.testing.assert_close(first["image"], plain[0]["image"], rtol=0, atol=0)
    torch.testing.assert_close(cached[1]["image"], plain[1]["image"], rtol=0, atol=0)  # same file: a hit
    assert sorted(cache.rglob("*.npz")) == entries
    # A hit reads the entry, not the image: a planted entry shows through.
    with np.load(entries[0]) as stored:
        meta = stored["meta"].copy()
        planted = np.full_like(stored["pixels"], 200)
    np.savez(entries[0], pixels=planted, meta=meta)
    assert float(cached[0]["image"].max()) == pytest.approx(200 / 255)
    # Other options use other entries; a damaged entry is decoded again and rewritten.
    CheXmaskUDataset(rows, _Lookup(path), size=32, cache_dir=cache)[0]
    assert len(list(cache.rglob("*.npz"))) == 2
    entries[0].write_bytes(b"damaged")
    torch.testing.assert_close(cached[0]["image"], plain[0]["image"], rtol=0, atol=0)
    # Rewriting the image changes its modification time and size: a new entry, the new pixels.
    Image.fromarray(_smooth_image(560, 700)).save(path, quality=90)
    os.utime(path, ns=(1, 1))
    torch.testing.assert_close(cached[0]["image"], plain[0]["image"], rtol=0, atol=0)
    assert len(list(cache.rglob("*.npz"))) == 3


@pytest.mark.slow
def test_lazy_csv_scan_in_spawned_workers(table, roots, tmp_path):
    # scan_table of a CSV checks rows with a Python function, which polars
    # pickles with cloudpickle when a spawned worker receives the dataset.
    import lzma

    from chexmask_u_tools.io.sample import sample_files

    source_file = next(p for p in sample_files() if p.name.startswith("VinDr-CXR"))
    csv = tmp_path / "VinDr-CXR.csv"
    csv.write_bytes(lzma.decompress(source_file.read_bytes()))
    scan = cxu.scan_table(csv).head(6)
    expected = scan.collect()
    images = write_demo_images(expected, tmp_path / "images")
    dataset = CheXmaskUIterableDataset(scan, images, size=16, block_rows=2)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, multiprocessing_context="spawn")
    ids = [i for batch in loader for i in batch["image_id"]]
    assert sorted(ids) == sorted(expected["image_id"].to_list())
