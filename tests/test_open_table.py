"""open_table: one input spec for every reader and command."""

from __future__ import annotations

import polars as pl
import pytest

import chexmask_u_tools as cxu
from chexmask_u_tools.errors import FileReadError, InputError
from chexmask_u_tools.hub.cache import build_cache
from chexmask_u_tools.hub.inputs import input_kind
from chexmask_u_tools.testing.mirror import build_mirror


def _sorted(table: pl.DataFrame) -> pl.DataFrame:
    return table.sort("source", "image_id")


def test_every_kind_of_input_gives_the_same_rows(tmp_path):
    sample = cxu.load_sample()
    one_file = cxu.sample_files()[0]
    assert input_kind("sample") == "sample" and input_kind(one_file) == "file"
    assert _sorted(cxu.open_table("sample").collect()).equals(_sorted(sample))
    assert cxu.open_table(one_file).collect().equals(cxu.read_table(one_file))
    mirror = build_mirror(tmp_path / "mirror", rows_per_source=6)
    assert input_kind(mirror) == "mirror"
    from_mirror = cxu.open_table(mirror, frames="preprocessed", use_cache=False).collect()
    assert from_mirror.height > 0 and set(from_mirror["frame"]) == {"preprocessed"}
    cache = build_cache(mirror, cache_dir=tmp_path / "cache", progress=False)
    assert input_kind(cache) == "cache"
    from_cache = cxu.open_table(cache, frames="preprocessed").collect()
    assert _sorted(from_cache).equals(_sorted(from_mirror))


def test_selection_by_source_and_bad_specs(tmp_path):
    chexpert = cxu.open_table("sample", sources=["chexpert"]).collect()
    assert set(chexpert["source"]) == {"CheXpert"} and chexpert.height == 40
    with pytest.raises(InputError, match="unknown source"):
        cxu.open_table("sample", sources="Chexpurt")
    with pytest.raises(FileReadError, match="not found"):
        cxu.open_table(tmp_path / "missing.csv")
    (tmp_path / "data").mkdir()
    with pytest.raises(FileReadError, match="not found"):
        cxu.open_table(str(tmp_path / "data" / "typo"))
    with pytest.raises(InputError, match="--source"):
        cxu.open_table("sample", source="CheXpert")
    with pytest.raises(InputError, match="--revision"):
        cxu.open_table("sample", revision="main")
