"""Every script in tutorials/ runs offline and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.py"))
TIMEOUT_S = 180  # each tutorial aims for well under 60 s; the margin absorbs a loaded CI machine


def test_tutorials_exist():
    names = [p.name for p in TUTORIALS]
    for prefix in ("01_", "02_", "04_", "05_", "06_"):
        assert any(n.startswith(prefix) for n in names), f"no tutorial {prefix}*.py"


@pytest.mark.parametrize("script", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs(script, tmp_path):
    if script.stem.startswith(("03_", "04_", "05_")):
        pytest.importorskip("torch")
    env = dict(os.environ, HF_HUB_OFFLINE="1", MPLBACKEND="Agg", PYTHONHASHSEED="0")
    # No arguments: a tutorial must run as shown in its docstring; outputs land under the temporary cwd.
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    for png in tmp_path.rglob("*.png"):
        assert png.stat().st_size > 0
