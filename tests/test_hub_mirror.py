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
from chexmask_u_tools.hub.location import DEFAULT_REPO, LocalMirror
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


def test_fake_hub_answers_like_the_hub(tmp_path, mirror, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    repo, _ = fake_hub(tmp_path, mirror)
    assert repo.revision == SHA
    listed = {entry.path: entry for entry in repo.list_files()}
    assert "Preprocessed/CheXpert.csv" in listed and "Preprocessed" not in listed
    with repo.open("README.md") as handle:
        assert handle.read().startswith(b"# CheXmask-U")
    assert expected_table(mirror).height == 40 * 5 + 10


# --------------------------------------------------------------------------- the Hub emulator itself
# chexmask_u_tools.testing.hub_server.HubEmulator answers huggingface_hub's own client
# (fixtures hub_emulator / hub_dataset in conftest.py).


def test_emulator_answers_huggingface_hub_for_dataset_repos(hub_dataset):
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.hf_api import RepoFile, RepoFolder

    hub, mirror = hub_dataset
    api = HfApi()
    sha = hub.sha(DEFAULT_REPO)
    assert api.dataset_info(DEFAULT_REPO, revision="main").sha == sha
    assert api.repo_info(DEFAULT_REPO, repo_type="dataset").sha == sha
    tree = list(api.list_repo_tree(DEFAULT_REPO, repo_type="dataset", recursive=True))
    assert {item.path for item in tree if isinstance(item, RepoFile)} == {*LAYOUT, "README.md", ".gitattributes"}
    assert {item.path for item in tree if isinstance(item, RepoFolder)} == {"OriginalResolution", "Physician", "Preprocessed"}
    top = list(api.list_repo_tree(DEFAULT_REPO, repo_type="dataset"))
    assert {item.path for item in top} == {"OriginalResolution", "Physician", "Preprocessed", "README.md", ".gitattributes"}
    inside = list(api.list_repo_tree(DEFAULT_REPO, "Preprocessed", repo_type="dataset"))
    assert len(inside) == 4 and all(item.path.startswith("Preprocessed/") for item in inside)
    assert sum("/tree/" in r.path for r in hub.requests) >= 5  # page_size=4: Link rel="next" was followed
    small = hf_hub_download(DEFAULT_REPO, "README.md", repo_type="dataset")
    large = hf_hub_download(DEFAULT_REPO, "Preprocessed/Padchest.csv.gz", repo_type="dataset")
    assert Path(small).read_bytes() == (mirror / "README.md").read_bytes()
    assert Path(large).read_bytes() == (mirror / "Preprocessed/Padchest.csv.gz").read_bytes()
    meta = get_hf_file_metadata(hf_hub_url(DEFAULT_REPO, "Preprocessed/Padchest.csv.gz", repo_type="dataset"))
    assert meta.commit_hash == sha and meta.size == (mirror / "Preprocessed/Padchest.csv.gz").stat().st_size
    assert meta.location.startswith(hub.cdn_url + "/_cdn/")  # the 302 to the second host name
    assert not [r for r in hub.requests if r.method == "CONNECT"]


def test_emulator_error_codes_map_to_huggingface_hub_errors(hub_dataset):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import (
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    hub, _ = hub_dataset
    with pytest.raises(RepositoryNotFoundError):
        HfApi().dataset_info("someone/nothing-here")
    with pytest.raises(RevisionNotFoundError):
        HfApi().dataset_info(DEFAULT_REPO, revision="v0-missing")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(DEFAULT_REPO, "Preprocessed/missing.csv", repo_type="dataset")
    assert {r.status for r in hub.requests} == {404}


def test_emulator_serves_ranges(hub_dataset):
    from huggingface_hub import get_session

    hub, mirror = hub_dataset
    data = (mirror / "README.md").read_bytes()
    url = f"{hub.url}/datasets/{DEFAULT_REPO}/resolve/main/README.md"
    part = get_session().get(url, headers={"Range": "bytes=2-5"})
    assert part.status_code == 206 and part.content == data[2:6]
    assert part.headers["Content-Range"] == f"bytes 2-5/{len(data)}"
    assert get_session().get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    assert get_session().head(url).headers["X-Repo-Commit"] == hub.sha(DEFAULT_REPO)


def test_emulator_serves_model_repos(hub_emulator, tmp_path):
    """A model repo for load_pretrained-style downloads: ``/{id}/resolve/{rev}/{path}`` and ``/api/models/...``."""
    from huggingface_hub import HfApi, hf_hub_download

    weights = bytes(range(256)) * 40  # large enough to be an LFS file (302 to the CDN name)
    sha = hub_emulator.add_repo(
        "someone/model", {"sub/config.json": b'{"a": 1}', "sub/pytorch_model.bin": weights}, repo_type="model"
    )
    assert HfApi().model_info("someone/model").sha == sha
    path = hf_hub_download("someone/model", "pytorch_model.bin", subfolder="sub", cache_dir=tmp_path / "c")
    assert Path(path).read_bytes() == weights
    assert Path(hf_hub_download("someone/model", "sub/config.json", cache_dir=tmp_path / "c")).read_bytes() == b'{"a": 1}'
    assert (tmp_path / "c" / "models--someone--model" / "refs" / "main").read_text() == sha
    served = [(r.host, r.status) for r in hub_emulator.requests if "pytorch_model.bin" in r.path]
    assert served == [(f"127.0.0.1:{hub_emulator.port}", 302), (f"localhost:{hub_emulator.port}", 200)]


def test_emulator_proxy_catches_a_client_that_ignores_hf_endpoint(hub_emulator):
    """What the HF_ENDPOINT tests rely on: a request for another host reaches the emulator as a CONNECT.

    polars' native ``hf://`` client (what ``scan`` used before) talks to huggingface.co whatever
    HF_ENDPOINT says; through the fixture's proxy settings it is caught and refused.
    """
    with pytest.raises(pl.exceptions.PolarsError):
        pl.scan_csv("hf://datasets/someone/data/file.csv").collect()
    assert [r.host for r in hub_emulator.requests if r.method == "CONNECT"] == ["huggingface.co:443"]
