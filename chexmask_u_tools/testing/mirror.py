"""A local directory laid out like the CheXmask-U dataset repo, built from the embedded sample.

It holds every released column variant in every container (csv, csv.gz,
csv.xz, parquet), both frames, a physician file whose rows name their source,
and non-data files that discovery must ignore: what the Hub tests, the cache
tests and the benchmarks read instead of the real repo.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from chexmask_u_tools.io.released import write_released
from chexmask_u_tools.io.sample import load_sample

__all__ = ["MIRROR_LAYOUT", "build_mirror"]

#: repo path -> (sources in it, released variant, points format)
MIRROR_LAYOUT = {
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
    for path, (sources, variant, points) in MIRROR_LAYOUT.items():
        table = sample.filter(pl.col("source").is_in(sources))
        table = table.group_by("source", maintain_order=True).head(5 if variant == "physician" else rows_per_source)
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        write_released(table, target, variant, points_format=points)
    (root / "README.md").write_text("# CheXmask-U (test mirror)\n")
    (root / ".gitattributes").write_text("*.csv filter=lfs\n")
    return root
