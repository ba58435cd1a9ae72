"""Benchmark: HybridGNet per-node uncertainty (S latent samples per image), batched vs straightforward.

Measures images/s of the model part of ``chexmask-u predict`` (encoder once per
image, S samples decoded together, per-node mean/std, latent sigmas) on
synthetic 1024x1024 inputs, next to the straightforward per-image implementation
(:mod:`chexmask_u_tools.testing.reference_model`: one image at a time, BatchNorm on a
batch of one, one decode per latent sample, Chebyshev convolutions as message
passing over the edge list, roi_align as an explicit sample-grid loop) in the
same run.  On the CPU, and on CUDA when available.  Also prints the accuracy of
``--dtype bf16`` against fp32 on the same inputs.

Image decoding is not timed (it runs in background threads in ``predict``).
Weights are random unless ``--weights`` is given; speed does not depend on them.

    python scripts/bench_model.py                 # ~1-2 min on 2 CPU cores
    python scripts/bench_model.py --images 64 --batch-sizes 8,32,64 --devices cuda
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from chexmask_u_tools.model import HybridGNet
from chexmask_u_tools.model.predict import configure_precision, draw_eps, predict_batch
from chexmask_u_tools.testing.reference_model import reference_sample_landmarks


def synthetic_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, 1, size, size) smooth random images in [0, 1] (chest-like low-frequency content)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, 16, 16, generator=generator)
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    images = images + 0.05 * torch.rand(n, 1, size, size, generator=generator)
    return images.clamp(0, 1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_reference(model: HybridGNet, images: torch.Tensor, eps: torch.Tensor) -> float:
    device = images.device
    reference_sample_landmarks(model, images[:1], eps[0, :1])  # warm-up
    sync(device)
    start = time.perf_counter()
    for i in range(images.shape[0]):
        samples, _, logvar = reference_sample_landmarks(model, images[i : i + 1], eps[i])
        samples = samples.double() * 1024
        _ = (samples.mean(0).cpu(), samples.std(0, correction=0).cpu(), torch.exp(logvar / 2).cpu())
    sync(device)
    return images.shape[0] / (time.perf_counter() - start)


def time_batched(model: HybridGNet, images: torch.Tensor, eps: torch.Tensor, batch: int, autocast) -> float:
    device = images.device
    predict_batch(model, images[:batch], eps[:batch], autocast)  # warm-up (allocator, cuDNN autotune)
    sync(device)
    start = time.perf_counter()
    for i in range(0, images.shape[0], batch):
        predict_batch(model, images[i : i + batch], eps[i : i + batch], autocast)
    sync(device)
    return images.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4, help="images per measurement (default 4)")
    parser.add_argument("--samples", type=int, default=50, help="latent samples per image (default 50)")
    parser.add_argument("--batch-sizes", default="1,2,4", help="comma list (default 1,2,4)")
    parser.add_argument("--devices", default=None, help="comma list of devices (default: cpu, plus cuda if available)")
    parser.add_argument("--reference-images", type=int, default=2, help="images timed with the straightforward path")
    parser.add_argument("--weights", default=None, help="weights path or Hub id (default: random weights)")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs per row (default 2)")
    args = parser.parse_args()

    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} CPU threads; S = {args.samples}, 1024x1024 inputs, {args.images} images")  # fmt: skip
    if args.weights:
        from chexmask_u_tools.model.pretrained import load_weights

        base = load_weights(args.weights)
    else:
        torch.manual_seed(0)
        base = HybridGNet().eval()

    n = max(args.images, max(batch_sizes))
    images_cpu = synthetic_images(n, base.input_size)
    eps = draw_eps(0, [f"img{i}" for i in range(n)], args.samples)
    rows = []
    for name in devices:
        device = torch.device(name)
        model = base.to(device)
        images = images_cpu.to(device)
        dtypes = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
        best: dict[tuple[str, int], float] = {}
        # Rounds alternate the straightforward and batched paths, best of each kept, so that
        # load from other processes on a shared machine hits both alike.
        for _ in range(args.repeats):
            configure_precision("fp32", device)
            rate = time_reference(model, images[: args.reference_images], eps[: args.reference_images])
            best[("ref", 1)] = max(best.get(("ref", 1), 0.0), rate)
            for dtype in dtypes:
                autocast = configure_precision(dtype, device)
                for batch in batch_sizes:
                    rate = time_batched(model, images, eps, batch, autocast)
                    best[(dtype, batch)] = max(best.get((dtype, batch), 0.0), rate)
        configure_precision("fp32", device)
        reference = best[("ref", 1)]
        rows.append((device.type, "straightforward (per image, per sample)", 1, reference, 1.0))
        for dtype in dtypes:
            for batch in batch_sizes:
                rows.append((device.type, f"batched {dtype}", batch, best[(dtype, batch)], best[(dtype, batch)] / reference))

    print()
    print(f"| device | path | batch | images/s (S={args.samples}) | vs straightforward |")
    print("|---|---|---:|---:|---:|")
    for device, path, batch, rate, ratio in rows:
        print(f"| {device} | {path} | {batch} | {rate:.2f} | {ratio:.2f}x |")

    # Accuracy of the bf16 encoder against fp32 (CPU autocast; same images and draws).  The nominal
    # rule keeps torchvision-rule grid flips (SPEC 6) out of the figure.
    model = base.to("cpu")
    model.roi_align = "nominal"
    k = min(2, n)
    exact = predict_batch(model, images_cpu[:k], eps[:k])
    low = predict_batch(model, images_cpu[:k], eps[:k], torch.bfloat16)
    mean_err = (low["mean"] - exact["mean"]).abs()
    std_err = (low["std"] - exact["std"]).abs()
    sigma_err = ((low["latent_sigma"] - exact["latent_sigma"]) / exact["latent_sigma"]).abs()
    print()
    print(f"bf16 encoder vs fp32 on CPU ({k} images, {'given' if args.weights else 'random'} weights, nominal rule): "
          f"mean landmark |diff| median {mean_err.median():.3f} px, max {mean_err.max():.3f} px; "
          f"std |diff| median {std_err.median():.3f} px; latent sigma rel. diff max {sigma_err.max():.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
