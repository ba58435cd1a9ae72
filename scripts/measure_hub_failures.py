"""Time to fail on a dead file and on a 403, with the default RetryPolicy, against the Hub emulator.

Reference approach in the same run: reading the same file with ``huggingface_hub.HfFileSystem``
(its own backoff: 6 tries, 1-8 s apart), which the toolkit used before.

    python scripts/measure_hub_failures.py           # 503 dead file and 403, ours vs HfFileSystem (~35 s)
    python scripts/measure_hub_failures.py --stall   # a body that stalls forever, ours only (~45 s)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pytest

from chexmask_u_tools.errors import HubError
from chexmask_u_tools.hub import DEFAULT_REPO, load
from chexmask_u_tools.testing.hub_server import HubEmulator
from chexmask_u_tools.testing.mirror import build_mirror

PATH = "Preprocessed/Padchest.csv.gz"


def ours() -> tuple[float, str]:
    start = time.monotonic()
    try:
        list(load(DEFAULT_REPO, sources="Padchest", frames="preprocessed", use_cache=False))
    except HubError as error:
        return time.monotonic() - start, str(error)
    raise AssertionError("the read did not fail")


def reference() -> tuple[float, str]:
    from huggingface_hub import HfFileSystem

    start = time.monotonic()
    try:
        with HfFileSystem(skip_instance_cache=True).open(f"datasets/{DEFAULT_REPO}/{PATH}", "rb") as handle:
            handle.read()
    except OSError as error:  # HfHubHTTPError and FileNotFoundError are OSErrors
        return time.monotonic() - start, f"{type(error).__name__}: {str(error).splitlines()[0]}"
    raise AssertionError("the read did not fail")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stall", action="store_true", help="measure a body that stalls forever (ours only)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, HubEmulator() as hub, pytest.MonkeyPatch.context() as patch:
        hub.add_repo(DEFAULT_REPO, build_mirror(Path(tmp) / "mirror"))
        hub.patch(patch, Path(tmp) / "hf-home")
        cases = [("stall", {"kind": "stall", "after_bytes": 1500, "seconds": 600.0})] if args.stall else [
            ("503 forever", {"kind": "status", "status": 503}),
            ("403", {"kind": "status", "status": 403}),
        ]
        for name, fault in cases:
            hub.clear_faults()
            hub.inject(match=PATH, times=None, **fault)
            before = len(hub.requests)
            seconds, message = ours()
            requests = len(hub.requests) - before
            print(f"{name}: chexmask-u-tools default RetryPolicy: failed after {seconds:.1f} s, {requests} requests: {message[:160]}")
            if not args.stall:
                before = len(hub.requests)
                ref_seconds, ref_message = reference()
                ref_requests = len(hub.requests) - before
                print(
                    f"{name}: HfFileSystem (reference): failed after {ref_seconds:.1f} s, {ref_requests} requests: "
                    f"{ref_message[:120]}"
                )
                print(f"{name}: time ratio reference / ours = {ref_seconds / max(seconds, 1e-3):.1f}")


if __name__ == "__main__":
    main()
