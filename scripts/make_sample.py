"""Generate the embedded synthetic CheXmask-U sample shipped in chexmask_u_tools/data/sample/.

The sample is synthetic (no patient data): a linear shape model (mean shape
plus the leading principal modes) is fitted to the real CheXmask rows in
``../shared/data/chexmask-real-subset`` and sampled; per-node sigmas grow at
the lung apices and bases and along the lower heart border, image-level sigma
varies by source and a minority of "hard" rows get larger sigma, larger
latent sigma and lower Dice RCA, so the OOD and filtering examples have
something to find.  Masks are rasterized from the integer landmarks exactly as
the released masks were.

Each source is written in the released layout of one CheXmask-U variant, with
the quirks the real files have: Padchest with ``Dice RCA (Max)`` before
``(Mean)`` and their values swapped, and Height/Width written as floats.

Usage:  python scripts/make_sample.py [--rows-per-source 36] [--seed 0]
"""

from __future__ import annotations

import argparse
import lzma
from pathlib import Path

import numpy as np
import polars as pl

import chexmask_u_tools as cxu
from chexmask_u_tools._atomic import atomic_path
from chexmask_u_tools.layout import ORGAN_SLICES
from chexmask_u_tools.masks.raster import rasterize_organs
from chexmask_u_tools.io.released import to_released, write_released
from chexmask_u_tools.io.rle import rle_encode
from chexmask_u_tools.schema import CANONICAL_SCHEMA, LANDMARKS_DTYPE, LATENT_DTYPE
from chexmask_u_tools.sources import REGISTRY
from chexmask_u_tools.select.uncertainty import add_summaries

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "chexmask-real-subset"
OUT = ROOT / "chexmask_u_tools" / "data" / "sample"

# (variant, median image sigma in px) per source: sigma differs by source as in the paper's figures.
SOURCES = {
    "ChestX-ray8": ("chexmask-u", 7.6),
    "CheXpert": ("chexmask-u", 7.9),
    "MIMIC-CXR-JPG": ("short", 7.1),
    "Padchest": ("short", 7.4),
    "VinDr-CXR": ("chexmask-u", 6.8),
}
N_MODES = 6
HARD_FRACTION = 0.15


def fit_shape_model(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean (240,), modes (K, 240), mode std (K,)) of flattened landmark sets."""
    flat = landmarks.reshape(len(landmarks), -1).astype(np.float64)
    mean = flat.mean(axis=0)
    _, singular, vt = np.linalg.svd(flat - mean, full_matrices=False)
    scale = singular[:N_MODES] / np.sqrt(len(flat) - 1)
    return mean, vt[:N_MODES], scale


def node_profile(shape: np.ndarray) -> np.ndarray:
    """(120,) relative sigma: high at lung apices and bases and at the lower heart border."""
    profile = np.empty(len(shape))
    for organ, part in ORGAN_SLICES.items():
        y = shape[part, 1]
        height = (y - y.min()) / max(np.ptp(y), 1.0)
        if organ == "heart":
            profile[part] = 0.8 + 0.7 * height**2
        else:
            profile[part] = 0.75 + 0.9 * (np.abs(2 * height - 1) ** 3)
    return profile


def image_id(source: str, index: int, rng: np.random.Generator) -> str:
    return REGISTRY[source].sample_id(index, rng)


def make_source(source: str, rows: int, model, rng: np.random.Generator) -> pl.DataFrame:
    mean, modes, scale = model
    _, median_sigma = SOURCES[source]
    coefficients = np.clip(rng.standard_normal((rows, len(scale))), -2.5, 2.5) * scale
    landmarks = np.round((mean + coefficients @ modes).reshape(rows, 120, 2))
    hard = rng.random(rows) < HARD_FRACTION
    image_sigma = median_sigma * np.exp(0.18 * rng.standard_normal(rows)) * np.where(hard, 2.2, 1.0)
    profiles = np.stack([node_profile(shape) for shape in landmarks])
    node_sigma = image_sigma[:, None] * profiles / profiles.mean(axis=1, keepdims=True)
    node_sigma *= np.exp(0.12 * rng.standard_normal(node_sigma.shape))
    anisotropy = np.exp(0.15 * rng.standard_normal((rows, 120)))
    std = np.round(np.stack([node_sigma * anisotropy, node_sigma / anisotropy], axis=-1), 2)
    latent = 0.93 + 0.035 * np.log(image_sigma / median_sigma)[:, None] + 0.02 * rng.standard_normal((rows, 64))
    latent = np.round(np.clip(latent, 0.5, 1.5), 4)
    dice_mean = np.clip(0.86 - 0.025 * (image_sigma - median_sigma) + 0.03 * rng.standard_normal(rows), 0.3, 0.97)
    dice_max = np.clip(dice_mean + rng.uniform(0.01, 0.06, rows), 0.0, 0.99)
    masks = rasterize_organs(landmarks, 1024, 1024)
    table = pl.DataFrame(
        {
            "source": [source] * rows,
            "image_id": [image_id(source, i, rng) for i in range(rows)],
            "frame": ["preprocessed"] * rows,
            "height": np.full(rows, 1024, dtype=np.int32),
            "width": np.full(rows, 1024, dtype=np.int32),
            "dice_rca_mean": dice_mean,
            "dice_rca_max": dice_max,
            "landmarks": pl.Series(landmarks.astype(np.float32), dtype=LANDMARKS_DTYPE),
            "landmarks_std": pl.Series(std.astype(np.float32), dtype=LANDMARKS_DTYPE),
            "latent_sigma": pl.Series(latent.astype(np.float32), dtype=LATENT_DTYPE),
            "rle_right_lung": [rle_encode(m[0]) for m in masks],
            "rle_left_lung": [rle_encode(m[1]) for m in masks],
            "rle_heart": [rle_encode(m[2]) for m in masks],
        }
    )
    return add_summaries(table).select(CANONICAL_SCHEMA.names())


def write_source(table: pl.DataFrame, source: str) -> Path:
    variant, _ = SOURCES[source]
    path = OUT / "Preprocessed" / f"{source}.csv.xz"
    path.parent.mkdir(parents=True, exist_ok=True)
    if source == "Padchest":
        # Reproduce the real Padchest quirks: Max before Mean with swapped values, float sizes.
        out = to_released(table, variant)
        out = out.rename({"Dice RCA (Mean)": "Dice RCA (Max)", "Dice RCA (Max)": "Dice RCA (Mean)"})
        out = out.select(["ImageID", "Dice RCA (Max)", "Dice RCA (Mean)", *out.columns[3:]])
        out = out.with_columns(pl.format("{}.0", "Height").alias("Height"), pl.format("{}.0", "Width").alias("Width"))
        with atomic_path(path) as temporary, lzma.open(temporary, "wb", preset=9 | lzma.PRESET_EXTREME) as handle:
            out.write_csv(handle)
    else:
        write_released(table, path, variant)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-source", type=int, default=36)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    real = cxu.read_tables(sorted(REAL.glob("*.csv")))
    model = fit_shape_model(real["landmarks"].to_numpy())
    rng = np.random.default_rng(args.seed)
    total = 0
    for source in SOURCES:
        table = make_source(source, args.rows_per_source, model, rng)
        path = write_source(table, source)
        total += path.stat().st_size
        print(f"{path.relative_to(ROOT)}: {len(table)} rows, {path.stat().st_size / 1e3:.0f} kB")
    print(f"total {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
