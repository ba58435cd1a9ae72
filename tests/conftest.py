from __future__ import annotations

from pathlib import Path

import pytest

REAL_SUBSET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chexmask-real-subset"


@pytest.fixture(scope="session")
def real_subset_dir() -> Path:
    """The real CheXmask rows next to the checkout; tests using it skip when absent."""
    if not REAL_SUBSET.is_dir():
        pytest.skip(f"real CheXmask subset not found at {REAL_SUBSET}")
    return REAL_SUBSET
