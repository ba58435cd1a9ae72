"""Every script in tutorials/ runs offline, exits 0 and produces what it promises.

Each tutorial also asserts its own results (shapes, counts, round trips); this
test checks the files it must leave behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.py"))
TIMEOUT_S = 180  # each tutorial aims for well under 60 s; the margin absorbs a loaded CI machine

#: tutorial -> files (relative to its working directory) it must write: PNG figures and parquet tables.
EXPECTED_OUTPUTS = {
    "01_load_filter": ["tutorial_output/01/kept.parquet"],
    "02_masks_soft_masks_bands": [
        f"tutorial_output/02/{name}.png"
        for name in ("contours_blank", "contours_image", "band_2sigma", "soft_mask", "soft_mask_heart")
    ],
    "03_uncertainty_aware_training": ["tutorial_output/03/training_sample.png"],
    "04_recompute_uncertainty": ["tutorial_output/04/predictions.parquet", "tutorial_output/04/patient1_prediction.png"],
    "05_corruption_and_ood": [
        f"tutorial_output/05/{name}.png" for name in ("ood_roc_sample", "uncertainty_vs_noise", "uncertainty_vs_occlusion")
    ],
    "06_cohort": ["tutorial_output/06/card.md", "tutorial_output/06/card_dice_rca.png", "tutorial_output/06/card_node_sigma.png"],
}
NEEDS_TORCH = ("03_", "04_", "05_")


def test_every_tutorial_declares_its_outputs():
    names = {p.stem for p in TUTORIALS}
    assert set(EXPECTED_OUTPUTS) <= names
    assert all(EXPECTED_OUTPUTS.get(name) for name in names), "a tutorial without declared outputs"


@pytest.mark.slow
@pytest.mark.parametrize("script", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs_and_writes_its_outputs(script, tmp_path):
    if script.stem.startswith(NEEDS_TORCH):
        pytest.importorskip("torch")
    env = dict(os.environ, HF_HUB_OFFLINE="1", MPLBACKEND="Agg", PYTHONHASHSEED="0")
    # No arguments: a tutorial must run as shown in its docstring; outputs land under the temporary cwd.
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    for relative in EXPECTED_OUTPUTS[script.stem]:
        path = tmp_path / relative
        assert path.is_file(), f"{script.name} did not write {relative}"
        if path.suffix == ".png":
            with Image.open(path) as image:
                assert image.format == "PNG" and min(image.size) >= 100
        elif path.suffix == ".md":
            assert path.read_text(encoding="utf-8").startswith("#")
        else:
            assert pl.read_parquet(path).height > 0
