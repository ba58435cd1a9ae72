from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
from huggingface_hub.errors import RevisionNotFoundError
from huggingface_hub.hf_api import RepoFile, RepoFolder

from chexmask_u_tools import read_table
from chexmask_u_tools.hub.discovery import discover
from chexmask_u_tools.hub.location import DEFAULT_REPO, HubRepo, LocalMirror

REAL_SUBSET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chexmask-real-subset"
REAL_SUBSET_ENV = "CHEXMASK_REAL_SUBSET"
"""Environment variable naming another folder of CheXmask files for the real-subset tests (any released layout,
any of the five sources; tests/test_real_subset_files.py runs them on realistic files dropped into a copy)."""


@pytest.fixture(scope="session")
def real_subset_dir() -> Path:
    """The real CheXmask files next to the checkout (or in ``$CHEXMASK_REAL_SUBSET``); tests using it skip when absent.

    Tests reading it hold for any CheXmask file in the folder: they find the files with ``data_files``, read them
    with ``read_table`` (or name columns by the released layouts) and assume no source, column set or frame.
    """
    folder = Path(os.environ.get(REAL_SUBSET_ENV) or REAL_SUBSET)
    if not folder.is_dir():
        pytest.skip(f"real CheXmask subset not found at {folder}")
    return folder


@pytest.fixture(scope="session")
def real_tables(real_subset_dir) -> list[tuple[Path, pl.DataFrame]]:
    """``(file, read_table(file))`` for every CheXmask file of the real subset."""
    from chexmask_u_tools.io.table import data_files

    return [(path, read_table(path)) for path in data_files(real_subset_dir)]


@pytest.fixture(scope="session", autouse=True)
def session_temp_dir(tmp_path_factory) -> Path:
    """Every temporary file of the run (``tempfile``, subprocesses, Gradio, torch) under pytest's base folder.

    pytest removes that folder when the whole run passes (``tmp_path_retention_policy = "failed"``) and
    keeps it when a test fails, so a passing run leaves nothing behind in the system's temp folder.
    """
    folder = tmp_path_factory.mktemp("tmp", numbered=False)
    saved_env, saved_default = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = str(folder)
    yield folder
    tempfile.tempdir = saved_default
    if saved_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved_env


def run_python(code: str, *, timeout: float = 900, stderr_tail: int = 3000, **env: str) -> str:
    """The stdout of ``python -c code`` in a fresh interpreter with ``env`` added; its exit status must be 0.

    Native code (the numba kernels, with ``NUMBA_BOUNDSCHECK=1`` or ``NUMBA_DISABLE_JIT=1``) runs there, so
    that a crash fails the calling test instead of the run.
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=timeout,
                          env=dict(os.environ, **env))
    assert done.returncode == 0, done.stderr[-stderr_tail:]
    return done.stdout


def pytest_collection_modifyitems(config, items):
    for item in items:  # tests/test_real_subset_files.py selects them with -m real_subset
        if "real_subset_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_subset)


def pytest_configure(config):
    config.addinivalue_line("markers", "real_subset: reads the real CheXmask files (fixture real_subset_dir)")


# --------------------------------------------------------------------------- Hub fakes
# A fake ``HfApi`` and ``HfFileSystem`` answering from a Hub-shaped local mirror
# (:func:`chexmask_u_tools.testing.mirror.build_mirror`).

SHA = "0123456789abcdef0123456789abcdef01234567"


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


# --------------------------------------------------------------------------- Hub emulator
# The real huggingface_hub client against chexmask_u_tools.testing.hub_server.HubEmulator,
# a standard-library HTTP server on 127.0.0.1 (see that module for the routes and faults).
# huggingface_hub reads HF_ENDPOINT once, at import: HubEmulator.patch sets the
# environment *and* huggingface_hub.constants (ENDPOINT, URL template, offline flag,
# cache and token paths), routes any other host through the emulator as a proxy (so a
# request meant elsewhere is recorded as CONNECT), and resets the shared HTTP session.


@pytest.fixture
def hub_emulator(tmp_path, monkeypatch):
    """A running :class:`HubEmulator` that ``huggingface_hub`` in this process talks to; no repo yet.

    ``HF_HUB_OFFLINE`` is cleared, ``HF_HOME``/``HF_HUB_CACHE`` and ``CHEXMASK_U_CACHE``
    point into ``tmp_path``.  Add repos with ``hub_emulator.add_repo(repo_id, dir_or_files,
    repo_type="dataset"|"model")``; inject faults with ``hub_emulator.inject(...)``;
    every request is in ``hub_emulator.requests``.
    """
    from huggingface_hub import close_session

    from chexmask_u_tools.testing.hub_server import HubEmulator

    monkeypatch.setenv("CHEXMASK_U_CACHE", str(tmp_path / "chexmask-u-cache"))
    with HubEmulator(page_size=4, lfs_threshold=4096) as server:
        server.patch(monkeypatch, tmp_path / "hf-home")
        yield server
    close_session()  # drop connections to the stopped server and its proxy settings


@pytest.fixture
def hub_dataset(hub_emulator, tmp_path) -> tuple[object, Path]:
    """The test mirror (``build_mirror``) served as the dataset repo :data:`DEFAULT_REPO`: (emulator, mirror dir)."""
    from chexmask_u_tools.testing.mirror import build_mirror

    mirror = build_mirror(tmp_path / "hub-mirror")
    hub_emulator.add_repo(DEFAULT_REPO, mirror, repo_type="dataset")
    return hub_emulator, mirror
