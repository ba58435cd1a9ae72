"""Tutorial 04: per-node uncertainty for your own chest X-rays with the reference model.

Run:  python tutorials/04_recompute_uncertainty.py [--out DIR] [--offline]

The published CheXmask-U weights come from the Hugging Face Hub (model repo
``mcosarinsky/CheXmask-U``, folder ``v1_skip``).  When they cannot be had (no
network, nothing cached, or ``--offline`` / ``HF_HUB_OFFLINE=1``), the tutorial
falls back to the same architecture with RANDOM weights: every step runs, but
the landmarks and sigmas are then meaningless numbers, not the paper's.
Needs the ``[torch]`` extra.  The command-line equivalent of steps 2-3 is
``chexmask-u predict IMAGES_DIR --out predictions.parquet``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import polars as pl
import torch
from PIL import Image

from chexmask_u_tools import load_sample
from chexmask_u_tools.testing.images import synthetic_xray
from chexmask_u_tools.errors import HubError, WeightsError
from chexmask_u_tools.masks.frames import to_original_frame
from chexmask_u_tools.images.read import read_image
from chexmask_u_tools.model import HybridGNet, load_pretrained, predict
from chexmask_u_tools.analysis.plots import plot_contours, row_arrays

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path("tutorial_output") / "04")
parser.add_argument("--offline", action="store_true", help="do not try the Hub (the local cache is still used)")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)
offline = args.offline or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")

# 1. "Your" images: here synthetic X-rays of different sizes drawn from sample rows (the rows' 1024-frame
#    landmarks mapped to each image's own frame).  With real data, point predict() at your folder instead.
image_dir = args.out / "images"
image_dir.mkdir(exist_ok=True)
sample = load_sample()
sizes = [(1024, 1024), (900, 1100), (1200, 1000)]  # (height, width)
for i, (height, width) in enumerate(sizes):
    landmarks_1024, _, _ = row_arrays(sample.row(i, named=True))
    landmarks = to_original_frame(landmarks_1024, height, width, round_clip=False)
    Image.fromarray(synthetic_xray(landmarks, height, width, seed=i)).save(image_dir / f"patient{i}.png")
print(f"wrote {len(sizes)} images to {image_dir}")

# 2. The model: published weights when available, else random weights (clearly reported).
try:
    model = load_pretrained(local_files_only=offline)
    published = True
    print("using the published CheXmask-U weights")
except (HubError, WeightsError) as error:
    torch.manual_seed(0)
    model = HybridGNet().eval()
    published = False
    print(f"published weights unavailable: {error}")
    print("using RANDOM weights: the pipeline runs, but landmarks and sigmas are meaningless numbers")

# 3. Predict: S latent samples per image; per node the mean and the population std (px) of x and y.
#    One row per image and frame: the 1024 preprocessed frame and the image's original frame.
n_samples = 50 if published else 10
table = predict(image_dir, model=model, n_samples=n_samples, seed=0, source="my-hospital", workers=1)
print(f"\n{table.height} rows ({n_samples} latent samples per image):")
print(table.select("image_id", "frame", "height", "width", "node_sigma_mean", "node_sigma_max", "latent_sigma_mean"))
assert table.height == 2 * len(sizes), "one row per image and frame"
assert sorted(set(table["image_id"])) == [f"patient{i}.png" for i in range(len(sizes))]
assert (table["node_sigma_mean"] >= 0).all() and table["landmarks_std"].null_count() == 0
original = table.filter(pl.col("frame") == "original").sort("image_id")
assert original.select("height", "width").rows() == sizes, "original-frame rows carry each image's own size"
path = args.out / "predictions.parquet"
table.write_parquet(path)
print(f"wrote {path}")

# Each image's latent draws depend only on (seed, image id), so reruns repeat; with the default
# roi_align="torchvision" rule another batch size can still move results by float rounding (see predict's docs).

# 4. Draw a prediction over its own image, in the original frame.
row = table.filter(pl.col("image_id") == "patient1.png", pl.col("frame") == "original").row(0, named=True)
landmarks, std, size = row_arrays(row)
note = "published weights" if published else "RANDOM weights (not meaningful)"
figure_path = args.out / "patient1_prediction.png"
plot_contours(landmarks, std, image=read_image(image_dir / "patient1.png"), title=f"patient1.png: {note}", path=figure_path)
assert figure_path.stat().st_size > 10_000
print(f"wrote {figure_path}")
