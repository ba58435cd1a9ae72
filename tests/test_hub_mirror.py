"""The Hub-shaped test mirror (chexmask_u_tools.testing.mirror) and the fake Hub serving it (conftest).

The mirror holds every released column variant of SPEC section 2 in every
container (csv, csv.gz, csv.xz, parquet), both frames, a physician file whose
rows name their source, and non-data files that discovery must ignore.
"""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path

import polars as pl
import pytest
from conftest import SHA, expected_table, fake_hub

from chexmask_u_tools.hub.discovery import discover
from chexmask_u_tools.hub.location import LocalMirror
from chexmask_u_tools.testing.mirror import MIRROR_LAYOUT as LAYOUT
from chexmask_u_tools.testing.mirror import build_mirror


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    return build_mirror(tmp_path_factory.mktemp("mirror"))


def _header(path: Path) -> list[str]:
    if path.name.endswith(".parquet"):
        return pl.read_parquet_schema(path).names()
    opener = {".gz": gzip.open, ".xz": lzma.open}.get(path.suffix, open)
    with opener(path, "rt") as handle:
        return handle.readline().strip().split(",")


def test_mirror_holds_every_variant(mirror):
    found = discover(LocalMirror(mirror))
    assert {item.path for item in found.files} == set(LAYOUT)
    assert {item.format for item in found.files} == {"csv", "csv.gz", "csv.xz", "parquet"}
    headers = {path: _header(mirror / path) for path in LAYOUT}
    assert {"Landmarks (Mean)", "Landmarks (Std)", "latents"} <= set(headers["Preprocessed/CheXpert.csv"])
    assert {"Mean", "Std"} <= set(headers["Preprocessed/Padchest.csv.gz"])
    assert {"Mean", "Std"} <= set(headers["Preprocessed/ChestX-ray8.parquet"])
    assert "Landmarks" in headers["OriginalResolution/VinDr-CXR.csv"]
    assert "Landmarks (Std)" not in headers["OriginalResolution/VinDr-CXR.csv"]
    assert {"ImageID", "Dataset"} <= set(headers["Physician/annotations.csv"])
    with lzma.open(mirror / "Preprocessed/MIMIC-CXR-JPG.csv.xz", "rt") as handle:
        assert '"[[' in handle.read(5000)  # numpy-printed landmark arrays


def test_fake_hub_answers_like_the_hub(tmp_path, mirror):
    repo, api = fake_hub(tmp_path, mirror)
    assert repo.revision == SHA
    listed = {entry.path: entry for entry in repo.list_files()}
    assert "Preprocessed/CheXpert.csv" in listed and "Preprocessed" not in listed
    with repo.open("README.md") as handle:
        assert handle.read().startswith(b"# CheXmask-U")
    assert expected_table(mirror).height == 40 * 5 + 10
