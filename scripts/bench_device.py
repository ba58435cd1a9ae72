"""Benchmark: organ masks drawn on the training device (DeviceMasks) against the CPU path, same run.

Organ masks per second at ``--size`` (default 512) for batches of landmark
sets, hard and soft:

* ``CPU, per sample``: what a DataLoader worker does today, one landmark
  set at a time (``rasterize_organs`` / ``soft_mask_organs``, the compiled
  kernels), the reference;
* ``DeviceMasks`` on CPU tensors (``backend="auto"``: the CPU kernels into one
  tensor) and with ``backend="torch"`` (the torch kernels, here on the CPU);
* ``DeviceMasks`` on CUDA when a GPU is present (``--batch`` landmark sets per
  call, default 256; timed with ``torch.cuda.synchronize``).

Landmarks and std: the embedded sample's rows (1024 frame, median std 7.6 px)
scaled to the size, tiled to the batch.  Each figure is the best of
``--repeat`` calls and counts organ masks (3 per landmark set).  Every path is
checked against the CPU masks first (hard: equal; soft: within 1e-5).  For the
soft masks it also prints the time of the batched contour model
(``contour_model_torch``, all organs of a batch at once on the device: no
per-organ host work bounds the GPU rate any more).
Targets (issue 21, an H100/H200-class card, 512, batches of 256): >= 50,000
hard and >= 20,000 soft organ masks/s.

    python scripts/bench_device.py [--size 512] [--batch 256] [--cpu-batch 32] [--cpu-soft-batch 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import timeit

import numpy as np

TARGETS = {"hard": 50_000, "soft": 20_000}


def best_time(fn, repeat: int) -> float:
    """Seconds of the fastest of ``repeat`` calls, after one warm-up call (caches, kernels, the first CUDA launch)."""
    fn()
    return min(timeit.repeat(fn, repeat=repeat, number=1))


def tiled(array: np.ndarray, rows: int) -> np.ndarray:
    return np.concatenate([array] * -(-rows // len(array)))[:rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=256, help="landmark sets per call on CUDA")
    parser.add_argument("--cpu-batch", type=int, default=32, help="landmark sets per call on CPU (hard, and soft with the CPU kernels)")
    parser.add_argument("--cpu-soft-batch", type=int, default=4, help="landmark sets per call for the torch soft kernel on CPU")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (numpy is single-threaded; 0: torch's default)")
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated; cuda is skipped when absent")
    args = parser.parse_args()

    import torch

    from chexmask_u_tools import DeviceMasks, load_sample, rasterize_organs, soft_mask_organs
    from chexmask_u_tools.layout import ORGAN_SIZES, ORGANS
    from chexmask_u_tools.masks.soft import BAND_Z
    from chexmask_u_tools.masks.soft_torch import contour_model_torch

    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.size
    sample = load_sample()
    landmarks = np.stack(sample["landmarks"].to_numpy()).astype(np.float64) * size / 1024
    stds = np.stack(sample["landmarks_std"].to_numpy()).astype(np.float64) * size / 1024
    devices = [d for d in args.devices.split(",") if d == "cpu" or (d == "cuda" and torch.cuda.is_available())]
    print(
        f"DeviceMasks at {size}x{size}: sample landmarks and std (median {np.median(stds):.2f} px at {size}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s); organ masks/s, best of {args.repeat}"
    )
    if "cuda" in args.devices and not torch.cuda.is_available():
        print("no CUDA device: the GPU rows are skipped (targets need an H100/H200-class card)")
    elif "cuda" in devices:
        print(f"CUDA: {torch.cuda.get_device_name(0)}")
    print()
    header = f"| {'kind':<4} | {'path':<34} | {'batch':>5} | {'organ masks/s':>13} | {'vs per sample':>13} | {'check':<22} |"
    print(header)
    print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|")

    def row(kind, path, batch, rate, reference, check):
        ratio = f"{rate / reference:.2f}x" if reference else "1.00x"
        print(f"| {kind:<4} | {path:<34} | {batch:>5} | {rate:>13,.0f} | {ratio:>13} | {check:<22} |", flush=True)

    met = {}
    for kind in ("hard", "soft"):
        cpu_rows = args.cpu_batch
        lm = tiled(landmarks, cpu_rows)
        sd = tiled(stds, cpu_rows)

        def per_sample(lm=lm, sd=sd, kind=kind):
            for k in range(len(lm)):
                if kind == "hard":
                    rasterize_organs(lm[k], size, size)
                else:
                    soft_mask_organs(lm[k], sd[k], size, size)

        reference = 3 * len(lm) / best_time(per_sample, args.repeat)
        row(kind, "CPU, per sample (reference)", 1, reference, 0, "reference")
        paths = []
        if "cpu" in devices:
            paths += [("cpu", "auto", cpu_rows, "DeviceMasks, CPU (CPU kernels)")]
            paths += [("cpu", "torch", cpu_rows if kind == "hard" else args.cpu_soft_batch, "DeviceMasks, CPU, backend='torch'")]
        if "cuda" in devices:
            paths += [("cuda", "auto", args.batch, "DeviceMasks, CUDA")]
        for device, backend, batch, label in paths:
            module = DeviceMasks(size, kind, backend=backend)
            lm_t = torch.as_tensor(tiled(landmarks, batch), dtype=torch.float32, device=device)
            sd_t = torch.as_tensor(tiled(stds, batch), dtype=torch.float32, device=device)
            got = module(lm_t, sd_t)
            check_rows = min(batch, 8)
            lm64, sd64 = lm_t[:check_rows].double().cpu().numpy(), sd_t[:check_rows].double().cpu().numpy()
            if kind == "hard":
                expected = np.stack([rasterize_organs(p, size, size) for p in lm64])
                ok = bool((got[:check_rows].cpu().numpy() == expected).all())
                check = "equal" if ok else "DIFFERS"
            else:
                expected = np.stack([soft_mask_organs(p, s, size, size) for p, s in zip(lm64, sd64)])
                diff = float(np.abs(got[:check_rows].cpu().numpy() - expected).max())
                ok = diff <= 1e-5
                check = f"max diff {diff:.1e}" + ("" if ok else " FAIL")

            def call(module=module, lm_t=lm_t, sd_t=sd_t, device=device):
                module(lm_t, sd_t)
                if device == "cuda":
                    torch.cuda.synchronize()

            rate = 3 * batch / best_time(call, args.repeat)
            row(kind, label, batch, rate, reference, check)
            if device == "cuda":
                met[kind] = rate
        if kind == "soft":
            rings = tuple(ORGAN_SIZES[o] for o in ORGANS)
            for device in devices:
                batch = args.batch if device == "cuda" else args.cpu_soft_batch
                lm_t = torch.as_tensor(tiled(landmarks, batch), device=device)
                sd_t = torch.as_tensor(tiled(stds, batch), device=device)

                def model(lm_t=lm_t, sd_t=sd_t, device=device):
                    contour_model_torch(lm_t, sd_t, size, size, BAND_Z, rings)
                    if device == "cuda":
                        torch.cuda.synchronize()

                per = best_time(model, args.repeat) / (3 * batch)
                print(
                    f"soft: the batched contour model (contour_model_torch, {3 * batch} organs at once on {device}) "
                    f"takes {per * 1e6:.1f} us per organ"
                )
    print()
    if met:
        for kind, rate in met.items():
            target = TARGETS[kind]
            print(f"target {kind}: {rate:,.0f} organ masks/s on CUDA vs >= {target:,} -> {'met' if rate >= target else 'NOT met'}")
    else:
        print("targets (CUDA): not measured here; run scripts/gpu_check.sh on a GPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
