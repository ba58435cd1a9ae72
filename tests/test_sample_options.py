"""SampleOptions: validated once, shared by both datasets, keywords override; the sample steps; the decode kernel."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import polars as pl
import pytest

torch = pytest.importorskip("torch")

import chexmask_u_tools as cxu
from chexmask_u_tools.errors import InputError
from chexmask_u_tools.images.preprocess import (
    bilinear_taps,
    pad_to_square,
    resample_reduced,
    resize_levels,
)
from chexmask_u_tools.testing.images import write_demo_images
from chexmask_u_tools.train.datasets import CheXmaskUDataset, CheXmaskUIterableDataset
from chexmask_u_tools.train.options import SampleOptions
from chexmask_u_tools.train.sample import SampleBuilder


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    sample = cxu.load_sample()
    return pl.concat([sample.filter(pl.col("source") == s).head(2) for s in cxu.SOURCES])


@pytest.fixture(scope="module")
def roots(table, tmp_path_factory):
    return write_demo_images(table, tmp_path_factory.mktemp("images"))


def test_one_options_object_serves_both_datasets_like_keywords(table, roots):
    options = SampleOptions(size=40, masks="both", rules=["dice.mean>=0.7"], pixel_weights={"floor": 0.3})
    by_options = CheXmaskUDataset(table, roots, options=options)
    by_keywords = CheXmaskUDataset(table, roots, size=40, masks="both", rules=["dice.mean>=0.7"], pixel_weights={"floor": 0.3})
    streamed = list(CheXmaskUIterableDataset(table, roots, options=options, block_rows=3))
    assert by_options.options == by_keywords.options == options
    assert len(by_options) == len(streamed) > 0
    for i, b in enumerate(streamed):
        a, k = by_options[i], by_keywords[i]
        for key in ("image", "masks", "soft_masks", "pixel_weight", "landmarks"):
            torch.testing.assert_close(a[key], k[key])
            torch.testing.assert_close(a[key], b[key])


def test_keywords_replace_single_options_and_typos_are_named(table, roots):
    base = SampleOptions(size=32, masks="soft")
    dataset = CheXmaskUDataset(table, roots, options=base, size=24)
    assert dataset.options.size == 24 and dataset.options.masks == "soft"
    assert dataset[0]["masks"].shape == (3, 24, 24) and dataset[0]["masks"].dtype == torch.float32
    with pytest.raises(InputError, match="did you mean 'pixel_weights'"):
        CheXmaskUDataset(table, roots, pixel_weight=True)
    with pytest.raises(InputError, match="options must be a SampleOptions"):
        CheXmaskUDataset(table, roots, options={"size": 8})


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"frame": "square"}, "frame"),
        ({"size": 3}, "size"),
        ({"size": True}, "size"),
        ({"missing": "ignore"}, "missing"),
        ({"soft_missing": "zeros"}, "soft_missing"),
        ({"node_weighting": {"methd": "exp"}}, "node_weighting"),
        ({"node_weighting": {"method": "exp", "tau": -1}}, "tau"),
        ({"pixel_weights": {"floor": 2.0}}, "floor"),
        ({"pixel_weights": {"flor": 0.2}}, "pixel_weights"),
        ({"rules": ["dice.mean>>0.7"]}, "dice"),
        ({"transform": "flip"}, "transform"),
        ({"sample_weighting": "exp"}, "sample_weighting"),
        ({"fields": ("row",)}, "overwrite"),
        ({"labels": ("Edema", "Edema")}, "more than once"),
        ({"label_policy": {"uncertain": 0.5}}, "uncertain"),
        ({"label_policy": {"unsure": 0.0}}, "unknown keys"),
    ],
)
def test_bad_options_fail_at_construction(keywords, message):
    with pytest.raises(InputError, match=message):
        SampleOptions(**keywords)


def test_options_are_frozen_picklable_and_replace_revalidates():
    options = SampleOptions(size=None, rules=["dice.mean>=0.7"], cache_dir="x")
    assert options.size == 1024 and options.rules[0].needs
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.size = 5
    assert pickle.loads(pickle.dumps(options)) == options
    with pytest.raises(InputError, match="masks"):
        dataclasses.replace(options, masks="fuzzy")


def test_sample_steps_compose_to_build(table, roots):
    options = SampleOptions(size=48, masks="both")
    dataset = CheXmaskUDataset(table, roots, options=options)
    builder: SampleBuilder = dataset.builder
    record = dataset.rows.record(3, 3, options.label_policy)
    decoded, path = builder.read_image(record)
    assert decoded is not None and path is not None
    geometry = builder.geometry(record, decoded, path)
    assert geometry.out_size == (48, 48)
    pixels = builder.preprocess(record.source, decoded, geometry.out_size)
    targets = builder.targets(geometry)
    assert set(targets) == {"hard", "soft"} and targets["hard"].shape == (3, 48, 48)
    sample = builder.assemble(record, pixels, True, geometry, targets)
    torch.testing.assert_close(sample["image"], dataset[3]["image"])
    torch.testing.assert_close(sample["soft_masks"], dataset[3]["soft_masks"])


def test_resample_reduced_at_full_resolution_is_the_plain_resize():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 23), dtype=np.uint8)
    square, (top, left) = pad_to_square(image)
    direct = resample_reduced(image, 1, (16, 16), square.shape, (top, left), image.shape)
    expected = resize_levels(torch.from_numpy(square), (16, 16)).to(torch.uint8).numpy()
    assert np.abs(direct.astype(int) - expected.astype(int)).max() <= 1
    i0, i1, w0, w1 = bilinear_taps(16, 37, 0, 37, 1)
    assert (i0 >= 0).all() and (i1 < 37).all() and np.allclose(w0 + w1, 1.0)
