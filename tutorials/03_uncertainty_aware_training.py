"""Tutorial 03: uncertainty-aware training with the PyTorch dataset (offline, CPU, well under a minute).

Run:  python tutorials/03_uncertainty_aware_training.py [--out DIR] [--steps N]

The embedded sample has no images (CheXmask-U never ships them), so the script
first writes synthetic stand-ins where each database's own distribution would
put them (MIMIC-CXR-JPG ``files/pXX/...``, ChestX-ray8 ``images_NNN/images``,
...).  With real data, point ``images`` at your copies instead.  It then:

1. chooses rules: drop rows with Dice RCA below 0.7, mark the heart mask
   missing where its mean node sigma is high, down-weight images whose 90 %
   node-sigma quantile is high;
2. reports how many rows have an image on disk;
3. builds ``CheXmaskUDataset`` with hard and soft masks, exp(-sigma/tau) sample
   weights, pixel weights from the soft masks and a random affine augmentation;
4. trains a tiny segmentation network for a few steps with a loss weighted per
   sample, per pixel and per organ (``mask_valid``), and shows a node-weighted
   landmark loss;
5. shards the iterable dataset over two simulated ranks.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from chexmask_u_tools import load_sample
from chexmask_u_tools.images.resolver import check_images
from chexmask_u_tools.testing.images import write_demo_images
from chexmask_u_tools.select.rules import apply_rules, rule_report
from chexmask_u_tools.train.datasets import CheXmaskUDataset, CheXmaskUIterableDataset
from chexmask_u_tools.train.transforms import RandomAffine
from chexmask_u_tools.select.weights import SampleWeighting

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path("tutorial_output") / "03")
parser.add_argument("--steps", type=int, default=48)
parser.add_argument("--size", type=int, default=80, help="training image side (pixels)")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
started = time.perf_counter()

# 0. Stand-in images for the 200 sample rows, in each source's folder layout.
table = load_sample()
roots = write_demo_images(table, args.out / "images")
print("image roots:", {source: str(root) for source, root in roots.items()})

# 1. Rules, as polars expressions (on a lazy scan they run inside the scan).
rules = [
    "dice.mean>=0.7",  # the parent dataset's advice
    "organ.heart.mean<=9:drop_organ",  # heart mask marked missing, lungs kept
    "image.q0.9<=14:weight=0.5",  # doubtful images count half
]
print("\nwhat each rule does on its own:")
print(rule_report(table, rules))
kept = apply_rules(table, rules)
print(f"{kept.height} of {table.height} rows kept; heart masks marked missing: {(~kept['mask_valid_heart']).sum()}")

# 2. Startup check: how many rows have an image on disk?
print("\n" + str(check_images(kept, roots)))

# 3. The dataset: image + hard and soft masks in the 1024 frame resized to args.size,
#    sample weight exp(-sigma/8 px) x rule weight, per-pixel weights from the soft masks.
dataset = CheXmaskUDataset(
    table,
    roots,
    frame="preprocessed",
    size=args.size,
    masks="both",
    rules=rules,
    sample_weighting=SampleWeighting("exp", stat="node_sigma_mean", tau=8.0, clip=(0.05, 1.0)),
    node_weighting={"method": "inverse_variance", "tau": 8.0},
    pixel_weights={"floor": 0.2},
    transform=RandomAffine(degrees=5, translate=0.03, scale=(0.95, 1.05)),
)
sample = dataset[0]
size = args.size
assert sample["image"].shape == (1, size, size) and sample["masks"].shape == (3, size, size)
assert sample["soft_masks"].shape == (3, size, size) and sample["pixel_weight"].shape == (3, size, size)
assert sample["landmarks"].shape == (120, 2) and sample["mask_valid"].shape == (3,)
print("\none sample:")
for key, value in sample.items():
    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else value
    dtype = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
    print(f"  {key:<14} {shape!s:<18} {dtype}")

# 4. A tiny segmentation network and an uncertainty-weighted loss.
model = torch.nn.Sequential(
    torch.nn.Conv2d(1, 16, 3, padding=1),
    torch.nn.ReLU(),
    torch.nn.Conv2d(16, 32, 3, stride=2, padding=1),
    torch.nn.ReLU(),
    torch.nn.Conv2d(32, 32, 3, padding=2, dilation=2),
    torch.nn.ReLU(),
    torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
    torch.nn.Conv2d(32, 3, 3, padding=1),
)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True, num_workers=2, drop_last=True)


def weighted_loss(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """BCE against the soft masks, x pixel weight, x organ validity, averaged per sample, x sample weight."""
    per_pixel = F.binary_cross_entropy_with_logits(logits, batch["soft_masks"], reduction="none")
    per_pixel = per_pixel * batch["pixel_weight"] * batch["mask_valid"][:, :, None, None]
    valid_pixels = (batch["pixel_weight"] * batch["mask_valid"][:, :, None, None]).sum((1, 2, 3)).clamp_min(1.0)
    per_sample = per_pixel.sum((1, 2, 3)) / valid_pixels
    return (per_sample * batch["sample_weight"]).sum() / batch["sample_weight"].sum()


def dice(logits: torch.Tensor, masks: torch.Tensor) -> float:
    predicted = logits > 0
    inter = (predicted & masks).sum((0, 2, 3)).float()
    return float((2 * inter / (predicted.sum((0, 2, 3)) + masks.sum((0, 2, 3))).clamp_min(1)).mean())


step = 0
print("\ntraining:")
while step < args.steps:
    for batch in loader:
        logits = model(batch["image"])
        loss = weighted_loss(logits, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step % 8 == 0 or step == 1:
            print(f"  step {step:3d}  weighted loss {loss.item():.4f}  dice {dice(logits.detach(), batch['masks']):.3f}")
        if step >= args.steps:
            break

# Node weights for a landmark regression loss: uncertain nodes count less.
batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
predicted = batch["landmarks"] + torch.randn_like(batch["landmarks"])  # stand-in for a model's output
per_node = (predicted - batch["landmarks"]).abs().sum(-1)
print(f"\nlandmark L1: plain {per_node.mean():.3f} px, node-weighted {(per_node * batch['node_weight']).mean():.3f} px")

# 5. Streaming / distributed: the iterable dataset shards rows over ranks and workers.
rows = []
for rank in range(2):
    shard = CheXmaskUIterableDataset(table, roots, size=32, rules=rules, block_rows=16, rank=rank, world_size=2)
    rows.append([int(s["row"]) for s in shard])
print(f"\nrank 0: {len(rows[0])} rows, rank 1: {len(rows[1])} rows, overlap {len(set(rows[0]) & set(rows[1]))}, "
      f"together {len(set(rows[0]) | set(rows[1]))} = rows kept {kept.height}")
assert not set(rows[0]) & set(rows[1]), "a row went to both ranks"
assert len(rows[0]) + len(rows[1]) == kept.height, "a kept row went to no rank"

# A picture: image, soft heart mask, pixel weights, prediction.
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

with torch.no_grad():
    shown = dataset[3]
    prediction = torch.sigmoid(model(shown["image"][None]))[0]
figure, axes = plt.subplots(1, 4, figsize=(12, 3.2))
panels = [
    (shown["image"][0], "image", "gray"),
    (shown["soft_masks"].amax(0), "soft masks (max over organs)", "magma"),
    (shown["pixel_weight"].amin(0), "pixel weight (min over organs)", "viridis"),
    (prediction.amax(0), f"prediction after {args.steps} steps", "magma"),
]
for axis, (picture, title, cmap) in zip(axes, panels):
    drawn = axis.imshow(picture.numpy(), cmap=cmap, vmin=0, vmax=1)
    if title == "image":
        axis.plot(*shown["landmarks"].numpy().T, ".", ms=1.5, color="cyan")
    else:  # probabilities and weights: a scale from 0 to 1
        figure.colorbar(drawn, ax=axis, fraction=0.046, pad=0.04)
    axis.set_title(title, fontsize=9)
    axis.axis("off")
figure.tight_layout()
figure.savefig(args.out / "training_sample.png", dpi=100)
assert (args.out / "training_sample.png").stat().st_size > 10_000
print(f"\nfigure: {args.out / 'training_sample.png'}; took {time.perf_counter() - started:.1f} s")
