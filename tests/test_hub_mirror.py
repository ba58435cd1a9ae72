"""A Hub-shaped local directory built from the embedded sample, and a fake Hub serving it.

Imported by the other hub / cache tests (``from test_hub_mirror import ...``).
The mirror holds every released column variant of SPEC section 2 in every
container (csv, csv.gz, csv.xz, parquet), both frames, a physician file whose
rows name their source, and non-data files that discovery must ignore.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
from huggingface_hub.errors import RevisionNotFoundError
from huggingface_hub.hf_api import RepoFile, RepoFolder

from chexmask_u_tools import read_table
from chexmask_u_tools.hub import DEFAULT_REPO, HubRepo, LocalMirror, discover
from chexmask_u_tools.released import write_released
from chexmask_u_tools.sample import load_sample

SHA = "0123456789abcdef0123456789abcdef01234567"

#: repo path -> (sources in it, released variant, points format)
LAYOUT = {
    "Preprocessed/CheXpert.csv": (["CheXpert"], "chexmask-u", "flat"),
    "Preprocessed/Padchest.csv.gz": (["Padchest"], "short", "flat"),
    "Preprocessed/MIMIC-CXR-JPG.csv.xz": (["MIMIC-CXR-JPG"], "chexmask-u", "numpy"),
    "Preprocessed/ChestX-ray8.parquet": (["ChestX-ray8"], "short", "flat"),
    "OriginalResolution/VinDr-CXR.csv": (["VinDr-CXR"], "chexmask", "flat"),
    "Physician/annotations.csv": (["CheXpert", "VinDr-CXR"], "physician", "flat"),
}


def build_mirror(root: Path, rows_per_source: int = 40) -> Path:
    """Write the Hub-shaped mirror under ``root`` and return it."""
    sample = load_sample()
    for path, (sources, variant, points) in LAYOUT.items():
        table = sample.filter(pl.col("source").is_in(sources))
        table = table.group_by("source", maintain_order=True).head(5 if variant == "physician" else rows_per_source)
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        write_released(table, target, variant, points_format=points)
    (root / "README.md").write_text("# CheXmask-U (test mirror)\n")
    (root / ".gitattributes").write_text("*.csv filter=lfs\n")
    return root


def expected_table(root: Path, paths: list[str] | None = None) -> pl.DataFrame:
    """What every reader must return: ``read_table`` of each data file, in path order."""
    found = discover(LocalMirror(root))
    frames = [
        read_table(root / item.path, source=item.source, frame=item.frame)
        for item in found.files
        if paths is None or item.path in paths
    ]
    return pl.concat(frames)


class FakeHfApi:
    """The two ``HfApi`` methods the Hub code calls, answering from a local directory and recording calls."""

    def __init__(self, root: Path, sha: str = SHA, revisions: tuple[str, ...] = ("main",)) -> None:
        self.root = root
        self.sha = sha
        self.revisions = set(revisions) | {sha}
        self.calls: list[tuple[str, str, dict]] = []

    def repo_info(self, repo_id, *, revision=None, repo_type=None, **kwargs):
        self.calls.append(("repo_info", repo_id, {"revision": revision, "repo_type": repo_type, **kwargs}))
        if revision not in self.revisions:
            response = SimpleNamespace(headers={}, request=None)
            raise RevisionNotFoundError(f"Invalid rev id: {revision}", response=response)
        return SimpleNamespace(id=repo_id, sha=self.sha)

    def list_repo_tree(self, repo_id, path_in_repo=None, *, recursive=False, revision=None, repo_type=None, **kwargs):
        self.calls.append(("list_repo_tree", repo_id, {"revision": revision, "repo_type": repo_type, "recursive": recursive}))
        for path in sorted(self.root.rglob("*")):
            relative = path.relative_to(self.root).as_posix()
            if path.is_dir():
                yield RepoFolder(path=relative, oid="f" * 40)
                continue
            data = path.read_bytes()
            lfs = None
            if not relative.endswith(".md") and not relative.startswith("."):
                lfs = {"size": len(data), "oid": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            yield RepoFile(path=relative, size=len(data), oid=hashlib.sha1(data).hexdigest(), lfs=lfs)


def fake_hub_fs(tmp: Path, mirror: Path, repo_id: str = DEFAULT_REPO, sha: str = SHA) -> DirFileSystem:
    """An fsspec filesystem answering ``datasets/{repo}@{sha}/{path}`` like ``HfFileSystem`` does."""
    owner, name = repo_id.split("/")
    base = tmp / "hub-fs" / "datasets" / owner
    base.mkdir(parents=True, exist_ok=True)
    link = base / f"{name}@{sha}"
    if not link.exists():
        os.symlink(mirror, link)
    return DirFileSystem(path=str(tmp / "hub-fs"), fs=LocalFileSystem())


def fake_hub(tmp: Path, mirror: Path, **kwargs) -> tuple[HubRepo, FakeHfApi]:
    api = FakeHfApi(mirror)
    return HubRepo(DEFAULT_REPO, kwargs.pop("revision", None), api=api, fs=fake_hub_fs(tmp, mirror), **kwargs), api


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
