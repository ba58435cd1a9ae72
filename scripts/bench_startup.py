"""Benchmark: start-up of the package and of its compiled kernels, each in a fresh process.

Prints, for fresh Python processes:

* ``import chexmask_u_tools`` (warm: files in the OS cache, bytecode compiled);
* the first ``rasterize_organs`` + ``soft_mask_organs`` + ``rle_decode`` of a
  sample row (512 x 512 masks from the 1024 frame, the row's std), each timed:
  - with a cold numba cache (a fresh ``NUMBA_CACHE_DIR``: the kernels compile,
    what the first use on a machine costs),
  - with that cache warm (a second process: the kernels load from disk),
  - with no writable cache folder at all (``NUMBA_CACHE_DIR`` and ``HOME`` a
    regular file, a copy of the package whose kernels' ``__pycache__`` is a
    file: every process compiles; one ``KernelCacheWarning``).

Targets (issue 21): import <= 1.5 s, the three first calls <= 1 s together
with a warm cache.  Each row is the median of ``--repeat`` processes.

    python scripts/bench_startup.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

IMPORT = """
import time
start = time.perf_counter()
import chexmask_u_tools
print(time.perf_counter() - start)
"""

FIRST_CALLS = """
import json, time, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    start = time.perf_counter()
    import chexmask_u_tools as cxu
    import numpy as np
    imported = time.perf_counter()
    row = cxu.load_sample().row(0, named=True)
    landmarks, std = np.asarray(row["landmarks"]), np.asarray(row["landmarks_std"])
    times = {"import": imported - start}
    start = time.perf_counter()
    cxu.rasterize_organs(landmarks, 512, 512, from_size=(1024, 1024))
    times["rasterize_organs"] = time.perf_counter() - start
    start = time.perf_counter()
    cxu.soft_mask_organs(landmarks, std, 512, 512, from_size=(1024, 1024))
    times["soft_mask_organs"] = time.perf_counter() - start
    start = time.perf_counter()
    cxu.rle_decode(row["rle_heart"], 1024, 1024)
    times["rle_decode"] = time.perf_counter() - start
from chexmask_u_tools.kernels.jit import KernelCacheWarning
times["cache_warnings"] = sum(issubclass(w.category, KernelCacheWarning) for w in caught)
print(json.dumps(times))
"""


def run(code: str, env: dict, cwd: Path = ROOT) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, check=False)
    if done.returncode:
        raise SystemExit(done.stderr)
    return done.stdout.strip().splitlines()[-1]


def first_calls(env: dict, repeat: int, cwd: Path = ROOT) -> dict:
    runs = [json.loads(run(FIRST_CALLS, env, cwd)) for _ in range(repeat)]
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def no_cache_copy(folder: Path) -> Path:
    """A copy of the package whose kernels' ``__pycache__`` is a regular file (numba's in-tree cache fails)."""
    shutil.copytree(ROOT / "chexmask_u_tools", folder / "chexmask_u_tools", ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "chexmask_u_tools" / "kernels" / "__pycache__").write_text("not a folder")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    base = dict(os.environ, PYTHONPATH=str(ROOT))
    base.pop("NUMBA_CACHE_DIR", None)
    run(IMPORT, base)  # bytecode compiled, files in the OS cache
    imports = statistics.median(float(run(IMPORT, base)) for _ in range(args.repeat))
    with tempfile.TemporaryDirectory() as directory:
        cache_env = dict(base, NUMBA_CACHE_DIR=str(Path(directory) / "numba"))
        cold = first_calls(cache_env, 1)
        warm = first_calls(cache_env, args.repeat)
        blocker = Path(directory) / "not-a-folder"
        blocker.write_text("")
        copy = no_cache_copy(Path(directory) / "copy")
        none_env = dict(
            base, PYTHONPATH=str(copy), NUMBA_CACHE_DIR=str(blocker), HOME=str(blocker), XDG_CACHE_HOME=str(blocker),
            PYTHONDONTWRITEBYTECODE="1",
        )
        none = first_calls(none_env, 1, cwd=copy)

    calls = ("rasterize_organs", "soft_mask_organs", "rle_decode")
    print(f"Start-up in fresh processes (median of {args.repeat}; the compile rows: one process)")
    print()
    print("| what | import | rasterize_organs | soft_mask_organs | rle_decode | first three calls | target |")
    print("|---|---|---|---|---|---|---|")
    print(f"| import chexmask_u_tools (warm) | {imports:.2f} s | | | | | <= 1.5 s |")
    for name, times, target in (
        ("first calls, cold numba cache (compile)", cold, "prints the cost"),
        ("first calls, warm numba cache", warm, "<= 1 s"),
        ("first calls, no writable cache (compile, one warning)", none, "works, says so once"),
    ):
        total = sum(times[c] for c in calls)
        cells = " | ".join(f"{times[c]:.2f} s" for c in calls)
        print(f"| {name} | {times['import']:.2f} s | {cells} | {total:.2f} s | {target} |")
    print()
    print(f"KernelCacheWarning count without a writable cache: {none['cache_warnings']:g} (with a cache: "
          f"{warm['cache_warnings']:g})")


if __name__ == "__main__":
    main()
