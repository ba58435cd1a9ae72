"""The command line in its own words: Ctrl-C says what was kept, errors name the command's flags, progress has a total."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import polars as pl
import pytest

import chexmask_u_tools as cxu
from chexmask_u_tools.cli import main
from chexmask_u_tools.hub import DEFAULT_REPO
from chexmask_u_tools.io.released import write_released


def _interrupt_when(process: subprocess.Popen, ready, timeout: float = 60.0) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            out, err = process.communicate()
            raise AssertionError(f"the command ended before it could be interrupted: {process.returncode}\n{err}")
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    return process.communicate(timeout=timeout)


@pytest.mark.slow
def test_ctrl_c_during_cache_prints_one_line_and_a_rerun_resumes(hub_dataset, tmp_path):
    server, _ = hub_dataset
    server.inject("slow", route="files", after_bytes=65536, seconds=0.1, times=None)
    command = [sys.executable, "-m", "chexmask_u_tools", "cache", DEFAULT_REPO, "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = _interrupt_when(process, lambda: any("/resolve/" in r.path or "cdn" in r.host for r in server.requests))
    assert process.returncode == 130
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "interrupted" in lines[0] and "kept" in lines[0] and "resume" in lines[0]
    server.clear_faults()
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr


@pytest.mark.slow
def test_ctrl_c_during_filter_writes_nothing(hub_dataset, tmp_path):
    server, _ = hub_dataset
    server.inject("slow", route="files", after_bytes=65536, seconds=0.1, times=None)
    out = tmp_path / "kept.parquet"
    command = [sys.executable, "-m", "chexmask_u_tools", "filter", DEFAULT_REPO, "--no-cache", "--out", str(out), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = _interrupt_when(process, lambda: any("/resolve/" in r.path or "cdn" in r.host for r in server.requests))
    assert process.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted; nothing was written" in lines[0], err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".kept")]


def _bad_file(tmp_path, row: int):
    table = cxu.load_sample().filter(pl.col("source") == "CheXpert").head(30)
    path = tmp_path / "Preprocessed" / "CheXpert.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_released(table, path)
    lines = path.read_text().splitlines(keepends=True)
    lines[row + 1] = re.sub(r'"(\d+),', '"oops,', lines[row + 1], count=1)
    path.write_text("".join(lines))
    return path


@pytest.mark.parametrize("command", ["filter", "export"])
def test_a_bad_row_names_the_flag_of_the_command(tmp_path, capsys, command):
    path = _bad_file(tmp_path, 17)
    arguments = [command, str(path), "--out", str(tmp_path / ("kept.parquet" if command == "filter" else "out")), "--no-progress"]
    assert main(arguments) == 1
    err = capsys.readouterr().err
    assert "row 17" in err and "CheXpert.csv" in err and "--on-error skip" in err and "on_error=" not in err
    assert main([*arguments, "--on-error", "skip"]) == 0


def test_a_command_without_the_flag_does_not_suggest_it(tmp_path, capsys):
    path = _bad_file(tmp_path, 17)
    assert main(["plot-stats", str(path), "--out", str(tmp_path / "s.png")]) == 1
    err = capsys.readouterr().err
    assert "row 17" in err and "on-error" not in err and "on_error" not in err


def test_python_spellings_become_the_commands_flags():
    from chexmask_u_tools.cli._messages import for_command_line
    from chexmask_u_tools.errors import InputError

    error = InputError("weak evidence; pass source='CheXpert' or frame='original', or columns={'a': 'b'}")
    assert for_command_line(error, {"--source", "--frame", "--column"}) == (
        "weak evidence; pass --source NAME or --frame NAME, or --column THEIRS=CANONICAL"
    )
    assert for_command_line(error, set()) == str(error)
    joined = InputError("join them first: read_metadata('CheXpert', path) and attach_metadata(table, metadata)")
    assert "--metadata FILE" in for_command_line(joined, {"--metadata"})


def test_cache_progress_has_a_total_and_an_eta(tmp_path, capsys):
    from chexmask_u_tools.testing.mirror import build_mirror

    mirror = build_mirror(tmp_path / "mirror")
    total = sum(path.stat().st_size for path in mirror.rglob("*") if path.suffix in (".csv", ".gz", ".xz", ".parquet"))
    assert main(["cache", str(mirror), "--cache-dir", str(tmp_path / "c"), "--workers", "1"]) == 0
    err = capsys.readouterr().err
    bars = [line for line in re.split(r"[\r\n]", err) if line.startswith("converting")]
    assert bars, err
    last = bars[-1]
    assert "100%" in last and "210 rows" in last and "<" in bars[0]  # a percentage, the rows converted, an ETA
    assert f"/{total / 2**20:.2f}M" in last  # the total: the data files' sizes


def test_experiment_ood_suggests_only_scores_that_work(tmp_path, capsys):
    table = cxu.load_sample().with_columns(landmarks_std=None, node_sigma_mean=None, node_sigma_max=None, latent_sigma=None,
                                            latent_sigma_mean=None)
    path = tmp_path / "t.parquet"
    table.write_parquet(path)
    assert main(["experiment", "ood", str(path)]) == 1
    err = capsys.readouterr().err
    assert "--missing drop" in err and "--scores latent_sigma_mean" not in err
    with_latent = cxu.load_sample().with_columns(landmarks_std=None, node_sigma_mean=None, node_sigma_max=None)
    with_latent.write_parquet(path)
    assert main(["experiment", "ood", str(path)]) == 1
    suggestion = re.search(r"--scores (\S+)", capsys.readouterr().err).group(1)
    assert main(["experiment", "ood", str(path), "--scores", suggestion]) == 0  # what it suggests works


def test_a_vindr_split_needs_the_per_image_flag_named_as_a_flag(tmp_path, capsys):
    out, table = tmp_path / "card.md", tmp_path / "t.parquet"
    cxu.load_sample().filter(pl.col("source").is_in(["VinDr-CXR", "CheXpert"])).write_parquet(table)
    assert main(["describe", str(table), "--out", str(out), "--patient-split"]) == 1
    err = capsys.readouterr().err
    assert "--per-image" in err and "per_image=True" not in err
    assert main(["describe", str(table), "--out", str(out), "--patient-split", "--per-image"]) == 0
    assert "each image is its own patient" in out.read_text()


def test_export_hub_folder_streams_and_is_quiet_without_progress(tmp_path, capsys):
    out = tmp_path / "folder"
    assert main(["export", "sample", "--out", str(out), "--hub-folder", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "kept 200 rows" in captured.out and "hub folder" not in captured.err.lower()
    assert cxu.read_table(out).height == 200
