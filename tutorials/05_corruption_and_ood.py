"""Tutorial 05: the paper's uncertainty experiments - corruption, OOD detection, node error (offline).

Run:  python tutorials/05_corruption_and_ood.py [--out DIR] [--offline]

CheXmask-U reports that both uncertainty measures (mean node sigma, mean latent
sigma) rise with image corruption, flag out-of-distribution images (ROC-AUC up
to 0.98 against Dice RCA (Max) < 0.7) and correlate with the node error against
physician landmarks (r about 0.58).  This script runs those experiments on the
embedded sample and on synthetic images.  Without the published weights in the
local cache it uses a small model with RANDOM weights: the output then shows
the machinery, NOT the paper's numbers.  Needs the ``[torch]`` extra.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import polars as pl
import torch

from chexmask_u_tools import load_sample
from chexmask_u_tools.analysis.stats import node_error_vs_sigma, roc_auc
from chexmask_u_tools.analysis.experiments import ood_scores, uncertainty_vs_corruption
from chexmask_u_tools.testing.images import synthetic_xray
from chexmask_u_tools.errors import HubError, WeightsError
from chexmask_u_tools.model import HybridGNet, draw_eps, load_pretrained, predict_batch
from chexmask_u_tools.model.predict import to_model_input
from chexmask_u_tools.analysis.plots import plot_roc, plot_uncertainty_vs_corruption, row_arrays

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path("tutorial_output") / "05")
parser.add_argument("--offline", action="store_true", help="do not try the Hub (the local cache is still used)")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)
offline = args.offline or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")

# 1. OOD scoring on released-style rows (the embedded synthetic sample carries sigmas and Dice RCA).
sample = load_sample()
print("OOD = Dice RCA (Max) < 0.7; ROC-AUC of each uncertainty score on the embedded sample:")
scores = ood_scores(sample)
print(scores)
assert set(scores["score"]) == {"node_sigma_mean", "node_sigma_max", "latent_sigma_mean"}
assert scores["auc"].is_between(0, 1).all() and (scores["n"] == sample.height).all()
label = (sample["dice_rca_max"] < 0.7).to_numpy()
plot_roc(label, {name: sample[name].to_numpy() for name in ("node_sigma_mean", "node_sigma_max", "latent_sigma_mean")},
         path=args.out / "ood_roc_sample.png")

# 2. A model: the published weights if available, else a small random-weights model (input 256) for speed.
try:
    model = load_pretrained(local_files_only=offline)
    published = True
except (HubError, WeightsError):
    torch.manual_seed(0)
    model = HybridGNet(input_size=256).eval()
    published = False
print(f"\nmodel: {'published CheXmask-U weights' if published else 'RANDOM weights, input 256'}")
if not published:
    print("NOTE: random weights show the machinery, not the paper's numbers.")
n_samples = 50 if published else 10

# Synthetic 1024x1024 X-rays drawn from sample rows: their landmarks are the ground truth.
truth = [row_arrays(sample.row(i, named=True))[0] for i in range(3)]
images = [synthetic_xray(points, 1024, 1024, seed=i) for i, points in enumerate(truth)]

# 3. Uncertainty versus corruption.  Severities: noise std on the 0..255 scale (paper: 0..190);
#    occlusion square side in pixels of the model input, around 10 random landmarks per image.
noise = uncertainty_vs_corruption(model, images, [0, 50, 100, 190], "noise", n_samples=n_samples, seed=0)
side = model.input_size / 1024
occlusion = uncertainty_vs_corruption(
    model, images, [0, 100 * side, 200 * side], "occlusion", n_samples=n_samples, seed=0, landmarks=truth
)
assert noise.height == 4 * len(images) and occlusion.height == 3 * len(images)
assert noise["node_sigma_mean"].is_not_null().all() and (noise["latent_sigma_mean"] > 0).all()
for name, result in (("noise", noise), ("occlusion", occlusion)):
    print(f"\n{name}: median over images per severity")
    print(result.group_by("severity", maintain_order=True).agg(pl.col("node_sigma_mean", "latent_sigma_mean").median()))
    plot_uncertainty_vs_corruption(result, random_weights=not published, path=args.out / f"uncertainty_vs_{name}.png")

# 4. OOD on synthetic images: heavily corrupted (noise std >= 100) versus clean and mildly corrupted.
is_ood = (noise["severity"] >= 100).to_numpy()
for score in ("node_sigma_mean", "latent_sigma_mean"):
    print(f"synthetic OOD (noise >= 100) ROC-AUC of {score}: {roc_auc(is_ood, noise[score].to_numpy()):.3f}")

# 5. Node error versus node sigma on the clean images (ground truth: the landmarks they were drawn from).
ids = [str(i) for i in range(len(images))]
stats = predict_batch(model, to_model_input(images, model.input_size, "cpu"), draw_eps(0, ids, n_samples, model.latents))
result = node_error_vs_sigma(stats["mean"].numpy(), stats["std"].numpy(), np.stack(truth))
assert result.n == len(images) * 120
print(f"\nnode error vs node sigma over {result.n} nodes: Pearson r = {result.pearson:.3f}, "
      f"Spearman rho = {result.spearman:.3f}" + ("" if published else "  (random weights: not meaningful)"))
print(f"\nfigures in {args.out}")
