"""Tutorial 02: hard masks, soft masks and uncertainty bands, with pictures (offline).

Run:  python tutorials/02_masks_soft_masks_bands.py [--out DIR]

Hard masks are the released run-length masks, which the toolkit also redraws
pixel for pixel from the landmarks.  A soft mask gives each pixel the
probability that it belongs to the organ when every landmark moves with its
released std; the +-k sigma band marks where membership is uncertain.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from chexmask_u_tools import ORGAN_SLICES, ORGANS, load_sample, rle_decode
from chexmask_u_tools.testing.images import synthetic_xray
from chexmask_u_tools.analysis.plots import find_row, plot_band, plot_contours, plot_soft_mask, row_arrays, save_figure
from chexmask_u_tools.masks.raster import rasterize_organs
from chexmask_u_tools.masks.soft import band_mask, pixel_weight_map, soft_mask_organs, uncertainty_band

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path("tutorial_output") / "02")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

table = load_sample()
row = find_row(table, 5)  # by row number; an image id works too
landmarks, std, (height, width) = row_arrays(row)
print(f"row: {row['source']} {row['image_id']!r}, {width}x{height} frame, mean node sigma {row['node_sigma_mean']:.2f} px")

# 1. Hard masks: decode the released RLE and redraw from the landmarks; they agree pixel for pixel.
released = np.stack([rle_decode(row[f"rle_{organ}"], height, width) for organ in ORGANS])
drawn = rasterize_organs(landmarks, height, width)
for k, organ in enumerate(ORGANS):
    print(f"  {organ:<10} released {released[k].sum():7d} px, redrawn {drawn[k].sum():7d} px, "
          f"identical: {np.array_equal(released[k], drawn[k])}")

# 2. Soft masks: P(pixel in mask).  Their sum is the expected area; with std = 0 they are the hard masks.
soft = soft_mask_organs(landmarks, std, height, width)
for k, organ in enumerate(ORGANS):
    uncertain = ((soft[k] > 0.05) & (soft[k] < 0.95)).sum()
    print(f"  {organ:<10} expected area {soft[k].sum():9.0f} px, {uncertain:6d} px with 0.05 < P < 0.95")
assert np.array_equal(soft_mask_organs(landmarks, np.zeros_like(std), height, width) > 0.5, drawn)

# 3. Bands: the +-2 sigma contours as geometries, and the uncertain pixels as a mask.
for organ in ORGANS:
    part = ORGAN_SLICES[organ]
    inner, outer = uncertainty_band(landmarks[part], std[part], k=2.0)
    band = band_mask(landmarks[part], std[part], height, width, k=2.0)
    print(f"  {organ:<10} band area {outer.area - inner.area:8.0f} px^2 (geometry), {band.sum():7d} px (mask)")

# 4. Loss weights for training: 1 where the mask is certain, `floor` on the contour.
weights = pixel_weight_map(landmarks[ORGAN_SLICES["heart"]], std[ORGAN_SLICES["heart"]], height, width, floor=0.2)
print(f"  heart pixel weights: min {weights.min():.2f}, mean {weights.mean():.3f}")

# 5. Pictures (over a synthetic X-ray drawn from the same landmarks; use read_image for a real one).
image = synthetic_xray(landmarks, height, width, seed=0)
figures = {
    "contours_blank.png": plot_contours(landmarks, std, size=(height, width)),
    "contours_image.png": plot_contours(landmarks, std, image=image),
    "band_2sigma.png": plot_band(landmarks, std, 2.0, image=image),
    "soft_mask.png": plot_soft_mask(landmarks, std, image=image),
    "soft_mask_heart.png": plot_soft_mask(landmarks, std, organ="heart", size=(height, width)),
}
for name, figure in figures.items():
    save_figure(figure, args.out / name)
    print(f"wrote {args.out / name}")
