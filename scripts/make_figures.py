"""Write the README figures to docs/figures/ from the embedded synthetic sample.

Run:  python scripts/make_figures.py [--out docs/figures]

* ``demo_masks.png`` - what ``chexmask-u demo`` draws: released-style masks with
  landmarks coloured by node sigma, four rows spread over the sample's range of sigma;
* ``contours_sigma.png`` - organ contours with nodes coloured by node sigma (px)
  over a synthetic X-ray drawn from the same row's landmarks;
* ``band_soft_mask.png`` - the +-2 sigma band and the soft mask of that row;
* ``sigma_by_source.png`` - mean node sigma per source (violin plot).

Everything comes from ``load_sample()`` (synthetic rows, no patient data), so
the figures are reproducible offline.  Each file stays well under 200 kB.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from chexmask_u_tools._atomic import atomic_path
from chexmask_u_tools.testing.images import synthetic_xray
from chexmask_u_tools.analysis.plots import (
    find_row,
    plot_band,
    plot_contours,
    plot_sample_grid,
    plot_sigma_by_source,
    plot_soft_mask,
    row_arrays,
)
from chexmask_u_tools.io.sample import load_sample

ROW = 5
"""Sample row shown in the single-row figures (a typical one: mean node sigma near the median)."""
MAX_BYTES = 200_000


def figure_pixels(figure) -> np.ndarray:
    """(H, W, 3) uint8 rendering of a matplotlib Figure at its own size."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def write_png(pixels: np.ndarray, path: Path) -> None:
    """Optimised PNG written atomically: RGB when it fits :data:`MAX_BYTES`, else a 256-colour palette."""
    image = Image.fromarray(pixels)
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG", optimize=True)
        if temporary.stat().st_size > MAX_BYTES:
            image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
                temporary, format="PNG", optimize=True
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "figures")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    table = load_sample()
    row = find_row(table, ROW)
    landmarks, std, (height, width) = row_arrays(row)
    image = synthetic_xray(landmarks, height, width, seed=0)
    title = f"synthetic {row['source']} row, mean node sigma {row['node_sigma_mean']:.1f} px"
    size = {"width_px": 520, "height_px": 460}

    outputs = {
        "demo_masks.png": figure_pixels(plot_sample_grid(table, n=4)),
        "contours_sigma.png": figure_pixels(plot_contours(landmarks, std, image=image, title=title, **size)),
        "band_soft_mask.png": np.hstack(
            [
                figure_pixels(plot_band(landmarks, std, 2.0, image=image, title="+-2 sigma band", **size)),
                figure_pixels(plot_soft_mask(landmarks, std, image=image, title="soft mask", **size)),
            ]
        ),
        "sigma_by_source.png": figure_pixels(plot_sigma_by_source(table, width_px=720, height_px=360)),
    }
    for name, pixels in outputs.items():
        path = args.out / name
        write_png(pixels, path)
        size_bytes = path.stat().st_size
        if size_bytes > MAX_BYTES:
            raise SystemExit(f"{path} is {size_bytes} bytes, above the {MAX_BYTES} byte budget")
        print(f"wrote {path} ({pixels.shape[1]}x{pixels.shape[0]} px, {size_bytes // 1024} kB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
