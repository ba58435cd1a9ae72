"""Benchmark: training samples per second through a DataLoader, toolkit dataset versus the naive path, same run.

Each sample is an image plus the three organ masks plus (optionally) three soft
masks at ``--size`` (default 512) in the preprocessed frame, built from
synthetic images written to disk and from the released CSV files of the same
rows.  The images are ``--image-side`` pixels on their longer side (default
2500, the size of CheXpert / MIMIC-CXR-JPG originals; shapes square, landscape
and portrait), stored once as JPEG (quality 92, about 1.5 MB each, like
MIMIC-CXR-JPG) and once as PNG (about 3 MB each), each format timed on its
own.  Both paths run through a ``torch.utils.data.DataLoader`` with
``--workers`` (default 2) worker processes and ``batch_size=8``; each path
runs ``--epochs`` epochs over the same rows with persistent workers and only
the last epoch is timed (worker start-up excluded).

* toolkit: ``read_tables`` of the CSV files once, then ``CheXmaskUDataset``
  (masks rasterized from the landmarks at the output size, soft masks in closed
  form by ``soft.soft_mask_organs``; the image decoded at a reduced resolution,
  JPEG inside the decoder, and resized once straight to the output,
  ``fast_decode=True``, the default).  The row "full-resolution decode" is the
  same with ``fast_decode=False`` (full decode, pad, torch bilinear resize);
  the row "uint8 image" keeps ``fast_decode`` and returns the image as uint8
  levels (``image_dtype="uint8"``, a quarter of the bytes through the worker
  queues; the naive path still makes float32).  The row "decode cache" sets
  ``cache_dir``: the first (untimed) epoch stores the decoded reduced images,
  the timed one loads them (the naive path decodes every epoch).
* naive: the CSV files in a pandas DataFrame; per sample ``df.iloc[i]``, the
  landmark / std strings split and converted with ``float`` per value, each
  released RLE mask decoded at 1024x1024 with a Python loop over its runs and
  resized with Pillow (nearest), the image decoded in full, padded with numpy
  and resized with Pillow (bilinear), soft masks estimated by Monte Carlo:
  ``--mc`` perturbed contours per organ drawn with Pillow's polygon fill and
  averaged.

Reported: samples/s and ms/sample (wall clock of the timed epoch divided by the
samples, i.e. the throughput of the whole loader, including the transfer of
the batches from the workers), the ratio, and the work per sample in one
process (``dataset[i]`` in a loop over up to 24 rows, one torch thread), with
and without the image (``missing="masks_only"``), which separates the image
decoding from the table and mask work.

    python scripts/bench_dataset.py [--rows 48] [--size 512] [--workers 2] [--image-side 2500]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import torch
from PIL import Image, ImageDraw

from chexmask_u_tools import load_sample, read_tables
from chexmask_u_tools.layout import ORGAN_SLICES, ORGANS
from chexmask_u_tools.images.resolver import ImageResolver
from chexmask_u_tools.testing.images import write_demo_images
from chexmask_u_tools.io.released import ID_COLUMN_OF_SOURCE, write_released
from chexmask_u_tools.train.datasets import CheXmaskUDataset

MASK_COLUMNS = ("Right Lung", "Left Lung", "Heart")


class NaiveDataset(torch.utils.data.Dataset):
    """What a first implementation typically looks like (see the module docstring)."""

    def __init__(self, csv_files: dict[str, Path], resolver: ImageResolver | None, size: int, soft: bool, mc: int) -> None:
        frames = []
        for source, path in csv_files.items():
            frame = pd.read_csv(path)
            frame = frame.rename(columns={ID_COLUMN_OF_SOURCE[source]: "image_id"})
            frame["source"] = source
            frames.append(frame)
        self.df = pd.concat(frames, ignore_index=True)
        self.resolver, self.size, self.soft, self.mc = resolver, size, soft, mc

    def __len__(self) -> int:
        return len(self.df)

    @staticmethod
    def _points(text: str) -> np.ndarray:
        return np.array([float(v) for v in text.split(",")]).reshape(-1, 2)

    @staticmethod
    def _rle(text, height: int, width: int) -> np.ndarray:
        flat = np.zeros(height * width, dtype=np.uint8)
        if isinstance(text, str) and text.strip():
            values = [int(v) for v in text.split()]
            for start, length in zip(values[0::2], values[1::2]):
                flat[start - 1 : start - 1 + length] = 1
        return flat.reshape(height, width)

    def __getitem__(self, i: int) -> dict:
        row = self.df.iloc[i]
        landmarks = self._points(row["Landmarks (Mean)"])
        std = self._points(row["Landmarks (Std)"])
        height, width = int(row["Height"]), int(row["Width"])
        if self.resolver is not None:
            image = Image.open(self.resolver.resolve(row["source"], row["image_id"])).convert("L")
            pixels = np.asarray(image)
            side = max(pixels.shape)
            square = np.zeros((side, side), dtype=np.uint8)
            top, left = (side - pixels.shape[0]) // 2, (side - pixels.shape[1]) // 2
            square[top : top + pixels.shape[0], left : left + pixels.shape[1]] = pixels
            resized = np.asarray(Image.fromarray(square).resize((self.size, self.size), Image.BILINEAR), dtype=np.float32) / 255
        else:
            resized = np.zeros((self.size, self.size), dtype=np.float32)
        masks = []
        for column in MASK_COLUMNS:
            mask = Image.fromarray(self._rle(row[column], height, width) * 255)
            masks.append(np.asarray(mask.resize((self.size, self.size), Image.NEAREST)) > 0)
        sample = {"image": torch.from_numpy(resized)[None], "masks": torch.from_numpy(np.stack(masks))}
        if self.soft:
            scale = self.size / 1024
            rng = np.random.default_rng(i)
            soft = np.zeros((3, self.size, self.size), dtype=np.float32)
            for k, organ in enumerate(ORGANS):
                part = ORGAN_SLICES[organ]
                for _ in range(self.mc):
                    points = (landmarks[part] + rng.normal(size=std[part].shape) * std[part]) * scale
                    canvas = Image.new("L", (self.size, self.size), 0)
                    ImageDraw.Draw(canvas).polygon([tuple(p) for p in points], fill=1, outline=1)
                    soft[k] += np.asarray(canvas)
            sample["soft_masks"] = torch.from_numpy(soft / self.mc)
        return sample


class Lookup:
    """Resolver callable over a ``(source, image_id) -> path`` dict (picklable, for the workers)."""

    def __init__(self, paths: dict[tuple[str, str], Path]) -> None:
        self.paths = paths

    def __call__(self, source: str, image_id: str) -> Path | None:
        return self.paths.get((source, image_id))


def throughput(dataset, workers: int, epochs: int) -> tuple[float, int]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=workers, persistent_workers=workers > 0)
    seconds, count = 0.0, 0
    for epoch in range(epochs):
        start, count = time.perf_counter(), 0
        for batch in loader:
            count += len(batch["image"])
        seconds = time.perf_counter() - start
    return count / seconds, count


def compute_ms(dataset, limit: int = 24) -> float:
    """Milliseconds of work per sample in this process (no loader, no inter-process transfer)."""
    dataset[0]
    n = min(limit, len(dataset))
    start = time.perf_counter()
    for i in range(n):
        dataset[i]
    return 1000 * (time.perf_counter() - start) / n


def write_formats(table: pl.DataFrame, root: Path, side: int) -> dict[str, ImageResolver]:
    """The demo images of every row at ``side`` pixels, once as JPEG and once as PNG."""
    shapes = ((side, side), (int(side * 0.82), side), (side, int(side * 0.82)))
    demo = ImageResolver(write_demo_images(table, root / "demo", shapes=shapes)).prepare()
    paths: dict[str, dict[tuple[str, str], Path]] = {"JPEG": {}, "PNG": {}}
    for i, (source, image_id) in enumerate(table.select("source", "image_id").iter_rows()):
        original = demo.resolve(source, image_id)
        with Image.open(original) as image:
            for kind, suffix in (("JPEG", ".jpg"), ("PNG", ".png")):
                if image.format == kind:
                    paths[kind][(source, image_id)] = original
                else:
                    target = root / kind / f"{i}{suffix}"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    image.save(target, format=kind, quality=92)
                    paths[kind][(source, image_id)] = target
    return {kind: ImageResolver(resolver=Lookup(found)) for kind, found in paths.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=48)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-side", type=int, default=2500, help="larger side of the synthetic images (pixels)")
    parser.add_argument("--mc", type=int, default=32, help="Monte Carlo contours per organ for the naive soft masks")
    args = parser.parse_args()
    torch.set_num_threads(1)

    sample = load_sample()
    per_source = max(1, args.rows // 5)
    table = pl.concat([sample.filter(pl.col("source") == s).head(per_source) for s in sample["source"].unique(maintain_order=True)])
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        resolvers = write_formats(table, root, args.image_side)
        sizes = {kind: np.mean([p.stat().st_size for p in r.resolver.paths.values()]) / 1e6 for kind, r in resolvers.items()}
        csv_files = {}
        for source in table["source"].unique(maintain_order=True):
            csv_files[source] = root / f"{source}.csv"
            write_released(table.filter(pl.col("source") == source), csv_files[source])
        canonical = read_tables(list(csv_files.values()))

        results = []
        naive_done: dict[tuple[str | None, bool], tuple[float, float]] = {}
        configurations = (
            ("JPEG image + 3 masks + 3 soft masks", True, "JPEG", True),
            ("PNG image + 3 masks + 3 soft masks", True, "PNG", True),
            ("JPEG image + 3 masks", False, "JPEG", True),
            ("PNG image + 3 masks", False, "PNG", True),
            ("JPEG + 3 masks, full-res decode", False, "JPEG", False),
            ("JPEG + 3 masks, uint8 image", False, "JPEG", "uint8"),
            ("JPEG + 3 masks, decode cache", False, "JPEG", "cache"),
            ("3 masks + 3 soft masks, no image", True, None, True),
            ("3 masks, no image", False, None, True),
        )
        for label, soft, kind, fast_decode in configurations:
            masks = "both" if soft else "hard"
            images = resolvers[kind] if kind else None
            fast = CheXmaskUDataset(canonical, images, size=args.size, masks=masks, fast_decode=bool(fast_decode),
                                    image_dtype="uint8" if fast_decode == "uint8" else "float32",
                                    cache_dir=root / "cache" if fast_decode == "cache" else None,
                                    missing="raise" if images else "masks_only")
            fast_rate, n = throughput(fast, args.workers, args.epochs)
            fast_ms = compute_ms(fast)
            if (kind, soft) not in naive_done:
                naive = NaiveDataset(csv_files, images, args.size, soft, args.mc)
                naive_done[kind, soft] = throughput(naive, args.workers, args.epochs)[0], compute_ms(naive)
                if soft and kind == "JPEG":
                    a, b = fast[0], naive[0]
                    iou = [float((a["masks"][k] & b["masks"][k]).sum() / (a["masks"][k] | b["masks"][k]).sum()) for k in range(3)]
                    gap = float((a["soft_masks"] - b["soft_masks"]).abs().mean())
                    image_gap = float((a["image"] - b["image"]).abs().mean() * 255)
                    agreement = (f"toolkit vs naive, row 0: hard-mask IoU {np.mean(iou):.3f}; mean |soft difference| {gap:.3f} "
                                 f"(MC noise); mean |image difference| {image_gap:.2f} gray levels")
            naive_rate, naive_ms = naive_done[kind, soft]
            results.append((label, fast_rate, naive_rate, n, fast_ms, naive_ms))

    print(f"DataLoader throughput, {args.workers} workers, batch 8, {args.size}x{args.size}, {n} rows, images "
          f"{args.image_side}px on the longer side (JPEG {sizes['JPEG']:.1f} MB, PNG {sizes['PNG']:.1f} MB on average), "
          f"naive soft masks: {args.mc} Monte Carlo contours per organ")
    print(f"{'':<37}{'--------- DataLoader ---------':^52} {'--- work per sample, 1 process ---':^36}")
    print(f"{'sample content':<37}{'toolkit/s':>10} {'ms':>6} {'naive/s':>10} {'ms':>6} {'ratio':>7}     "
          f"{'toolkit ms':>11} {'naive ms':>9} {'ratio':>7}")
    for label, fast_rate, naive_rate, _, fast_ms, naive_ms in results:
        print(f"{label:<37}{fast_rate:>10.1f} {1000 / fast_rate:>6.1f} {naive_rate:>10.1f} {1000 / naive_rate:>6.1f} "
              f"{fast_rate / naive_rate:>6.2f}x     {fast_ms:>11.1f} {naive_ms:>9.1f} {naive_ms / fast_ms:>6.2f}x")
    print(agreement)
    soft_vs_hard(canonical, args)


def soft_vs_hard(canonical: pl.DataFrame, args) -> None:
    """Samples/s with 3 soft masks against 3 hard masks, same loader, same rows, no image (``missing="masks_only"``).

    The soft masks use each row's released std (the sample's median is 7.6 px
    at 1024); both datasets run through the same DataLoader settings in this
    run, so the ratio is the cost of the soft masks alone.
    """
    rates, work = {}, {}
    for masks in ("hard", "soft"):
        dataset = CheXmaskUDataset(canonical, None, size=args.size, masks=masks, missing="masks_only")
        rates[masks] = throughput(dataset, args.workers, args.epochs)[0]
        work[masks] = compute_ms(dataset)
    std = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in canonical["landmarks_std"].drop_nulls().to_list()])
    print()
    print(f"dataset at {args.size}, 3 soft masks vs 3 hard, samples/s, with the sample's std (median {np.median(std):.1f} px "
          f"at 1024), missing='masks_only' (no image decoding), {args.workers} workers:")
    print(f"{'':<20}{'--- DataLoader ---':>17}     {'------ 1 process ------':>23}")
    print(f"{'':<20}{'samples/s':>10} {'ms':>6}     {'samples/s':>10} {'ms':>12}")
    for masks in ("hard", "soft"):
        print(f"{masks + ' masks':<20}{rates[masks]:>10.1f} {1000 / rates[masks]:>6.2f}     {1000 / work[masks]:>10.1f} "
              f"{work[masks]:>12.2f}")
    print(f"soft / hard: {rates['soft'] / rates['hard']:.2f}x samples/s through the loader, "
          f"{work['hard'] / work['soft']:.2f}x per sample in one process (target >= 0.12x, stretch 0.25x)")


if __name__ == "__main__":
    main()
