"""Atomic writes: a failed write leaves the old file, and leftovers of killed runs are cleaned up."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chexmask_u_tools._atomic import atomic_path, atomic_write_bytes, remove_stale_temporaries, temporary_name


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_leftovers_of_a_killed_run_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "table.parquet"
    code = (
        "import os, sys; from chexmask_u_tools._atomic import atomic_path\n"
        f"with atomic_path({str(target)!r}) as t:\n"
        "    t.write_bytes(b'partial'); os._exit(9)\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    leftovers = [p for p in tmp_path.iterdir() if p.name != "table.parquet"]
    assert len(leftovers) == 1 and not target.exists()
    atomic_write_bytes(target, b"done")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.parquet"]
    assert target.read_bytes() == b"done"


def test_a_live_writers_temporary_is_kept(tmp_path):
    target = tmp_path / "x"
    mine = temporary_name(target)
    mine.write_bytes(b"in progress")
    assert remove_stale_temporaries(target) == [mine]  # our own pid counts as finished: we are not writing it now
    other = target.with_name(".x.tmp-1-abcd")  # pid 1 is alive in any container
    other.write_bytes(b"busy")
    assert remove_stale_temporaries(target) == []
    assert other.exists()
