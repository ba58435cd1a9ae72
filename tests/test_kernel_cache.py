"""Start-up: the package imports without numba, and runs where no kernel cache can be written (one warning)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import chexmask_u_tools
from conftest import run_python

PACKAGE = Path(chexmask_u_tools.__file__).resolve().parent

_NO_CACHE = """
import json, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import numpy as np
    import chexmask_u_tools as cxu
    from chexmask_u_tools.kernels import fill, rle, soft, weights  # every kernel is defined (none compiles)
    from chexmask_u_tools.kernels.jit import KernelCacheWarning, caching_enabled
    sample = cxu.load_sample().head(4)
    landmarks = sample["landmarks"].to_numpy().astype(np.float64)
    same = []
    for method in ("kernel", "numpy"):
        same.append([
            cxu.rle_decode(sample["rle_heart"][k], 1024, 1024, method=method).tobytes() for k in range(4)
        ] + [
            cxu.rle_encode(cxu.rle_decode(sample["rle_left_lung"][0], 1024, 1024), method=method),
            cxu.rasterize_organs(landmarks, 256, 256, from_size=(1024, 1024), method=method).tobytes(),
            cxu.label_map(landmarks, 100, 90, from_size=(1024, 1024), method=method).tobytes(),
        ])
    released = cxu.rle_decode(sample["rle_heart"][0], 1024, 1024)
    drawn = cxu.rasterize_organs(landmarks[0], 1024, 1024)[2]
print(json.dumps({
    "package": cxu.__file__,
    "caching": caching_enabled(),
    "warnings": [str(w.message) for w in caught if issubclass(w.category, KernelCacheWarning)],
    "kernel_equals_numpy": same[0] == same[1],
    "released_mask_redrawn": bool((released == drawn).all()),
}))
"""


@pytest.mark.slow
def test_no_writable_cache_folder_compiles_without_caching_and_says_so_once(tmp_path):
    # numba tries NUMBA_CACHE_DIR, the package's __pycache__, then the user's cache folder (under HOME or
    # XDG_CACHE_HOME).  Tests run as root, so read-only modes do not stop writes: the first and the last are
    # regular files here, and a copy of the package has a regular file where its kernels' __pycache__ would be.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    copy = tmp_path / "site"
    shutil.copytree(PACKAGE, copy / "chexmask_u_tools", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "chexmask_u_tools" / "kernels" / "__pycache__").write_text("")
    env = dict(
        os.environ, PYTHONPATH=str(copy), NUMBA_CACHE_DIR=str(blocker), HOME=str(blocker),
        XDG_CACHE_HOME=str(blocker), PYTHONDONTWRITEBYTECODE="1",
    )
    done = subprocess.run(
        [sys.executable, "-c", _NO_CACHE], capture_output=True, text=True, env=env, cwd=copy, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(report["package"]).resolve().is_relative_to(copy.resolve())
    assert report["caching"] is False
    assert len(report["warnings"]) == 1 and "NUMBA_CACHE_DIR" in report["warnings"][0]
    assert report["kernel_equals_numpy"] and report["released_mask_redrawn"]
    assert not list(copy.rglob("*.nbi")) and blocker.read_text() == ""  # nothing was cached anywhere


def test_import_loads_no_numba_and_compiles_nothing():
    code = (
        "import sys, chexmask_u_tools as cxu\n"
        "assert 'numba' not in sys.modules, 'numba imported by the package'\n"
        "cxu.rle_decode('1 2', 2, 2, method='numpy')\n"
        "cxu.rasterize([[0, 0], [1, 1]], 2, 2, method='numpy')\n"
        "assert 'numba' not in sys.modules, 'numba imported by the numpy references'\n"
        "print('ok')"
    )
    assert run_python(code, timeout=120, stderr_tail=2000).strip() == "ok"
