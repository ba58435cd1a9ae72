"""Benchmark: soft (uncertainty) masks against hard masks of the same organ at the same size, same run.

For each organ and each size (1024 and 512) it prints the time of
``soft_mask`` (the default: compiled band kernel, ``tol=1e-6``, float32), of
``rasterize`` (the hard mask) and their ratio; the numpy reference
(``method="numpy"``) and the kernel's speed-up over it; the training variants
``tol=1e-3`` and ``dtype=float16`` / ``uint8`` (and ``tol=1e-3`` with
uint8); and the whole-grid reference (``soft_mask(..., band=False)``).  Then the
three organs at once (``soft_mask_organs`` against ``rasterize_organs``), the
kernel against numpy at sizes from 16 to 2048 px (what ``method="auto"``
dispatches to), ``band_mask`` and the pixel weight maps (``pixel_weight_map``,
``soft_pixel_weights``, ``band_pixel_weights``) against their numpy forms,
and, when torch is installed, the batched torch path
(``soft_mask_organs_torch``) on CPU and, when available, CUDA.

Contours: the landmarks of the embedded sample (``cxu.load_sample()``), scaled
to the frame; per-node std: each row's released std mapped linearly onto 2..8
px (in the frame being drawn), the range the issue's target is stated for.
Times are per organ, best of ``--repeat`` runs over ``--images`` rows, and
include allocating the output.  Before timing, every variant is checked against
the whole grid (within its ``tol``; 1e-6 by default) and the kernel against
numpy.

    python scripts/bench_soft.py [--images 4] [--repeat 5] [--torch-batch 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def best_time(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4, help="sample rows to use (3 organs each)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--torch-batch", type=int, default=64, help="landmark sets per torch call on CUDA (CPU: 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (numpy and the kernel use one)")
    args = parser.parse_args()

    from chexmask_u_tools.io.sample import load_sample
    from chexmask_u_tools.layout import ORGAN_SLICES, ORGANS
    from chexmask_u_tools.masks.raster import rasterize
    from chexmask_u_tools.masks.soft import soft_mask

    df = load_sample().head(args.images)
    landmarks = np.stack(df["landmarks"].to_numpy()).astype(np.float64)  # (B, 120, 2), 1024 frame
    released = np.stack(df["landmarks_std"].to_numpy()).astype(np.float64)
    lo = released.min(axis=(1, 2), keepdims=True)
    hi = released.max(axis=(1, 2), keepdims=True)
    stds = 2.0 + 6.0 * (released - lo) / np.maximum(hi - lo, 1e-9)  # 2..8 px per row

    start = time.perf_counter()
    soft_mask(landmarks[0, :44] / 16, stds[0, :44], 64, 64)
    first = time.perf_counter() - start
    print(f"{len(landmarks)} sample rows, per-node std 2..8 px in each frame; per organ, best of {args.repeat}")
    print(f"first soft_mask call in this process (loads the compiled kernel from numba's cache, or compiles it): "
          f"{first:.2f} s")
    print()
    variants = (
        ("kernel", {}, 1e-6),
        ("numpy", {"method": "numpy"}, 1e-6),
        ("tol=1e-3", {"tol": 1e-3}, 1e-3),
        ("float16", {"dtype": np.float16}, 1e-6 + 2.0**-11),
        ("uint8", {"dtype": np.uint8}, 1e-6 + 0.5 / 255),
        ("tol=1e-3 uint8", {"tol": 1e-3, "dtype": np.uint8}, 1e-3 + 0.5 / 255),
    )
    header = f"| {'size':>4} | {'organ':<10} | {'hard ms':>7} |"
    for name, _, _ in variants:
        header += f" {name + ' ms':>12} | {'/hard':>6} |"
    header += f" {'kernel vs numpy':>15} | {'whole-grid ms':>13} |"
    print(header)
    print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|")
    worst = {name: 0.0 for name, _, _ in variants}
    totals: dict[int, dict[str, float]] = {}
    for size in (1024, 512):
        scale = size / 1024.0
        totals[size] = {"hard": 0.0, **{name: 0.0 for name, _, _ in variants}}
        for organ in ORGANS:
            sl = ORGAN_SLICES[organ]
            polys = [lm[sl] * scale for lm in landmarks]
            organ_std = [sd[sl] for sd in stds]
            reference = soft_mask(polys[0], organ_std[0], size, size, band=False)
            for name, options, tol in variants:
                got = soft_mask(polys[0], organ_std[0], size, size, **options)
                got = got / 255.0 if got.dtype == np.uint8 else got.astype(np.float64)
                err = float(np.abs(got - reference).max())
                if err > tol:
                    raise SystemExit(f"{name} at {size}, {organ}: max |difference| to the whole grid {err:.2e} > {tol:.2e}")
                worst[name] = max(worst[name], err)

            def hard(polys=polys, size=size):
                for p in polys:
                    rasterize(p, size, size)

            t_hard = best_time(hard, args.repeat) / len(polys)
            totals[size]["hard"] += t_hard
            row = f"| {size:>4} | {organ:<10} | {t_hard * 1e3:>7.3f} |"
            times = {}
            for name, options, _ in variants:

                def soft(polys=polys, organ_std=organ_std, size=size, options=options):
                    for p, s in zip(polys, organ_std):
                        soft_mask(p, s, size, size, **options)

                times[name] = best_time(soft, args.repeat) / len(polys)
                totals[size][name] += times[name]
                row += f" {times[name] * 1e3:>12.3f} | {times[name] / t_hard:>5.1f}x |"
            t_whole = best_time(lambda: soft_mask(polys[0], organ_std[0], size, size, band=False), 1)
            row += f" {times['numpy'] / times['kernel']:>14.1f}x | {t_whole * 1e3:>13.1f} |"
            print(row)
    print()
    for name, _, tol in variants:
        print(f"{name:<15} max |difference| to the whole-grid evaluation {worst[name]:.2e} (allowed {tol:.2e})")
    print()
    for size in (1024, 512):
        t = totals[size]
        print(f"soft organ mask vs hard, {size}, std 2-8 px (3 organs): kernel {t['kernel'] / t['hard']:.1f}x, "
              f"tol=1e-3 {t['tol=1e-3'] / t['hard']:.1f}x, uint8 {t['uint8'] / t['hard']:.1f}x, "
              f"tol=1e-3 uint8 {t['tol=1e-3 uint8'] / t['hard']:.1f}x, numpy reference {t['numpy'] / t['hard']:.1f}x "
              "(target <= 12x, stretch 6x)")
    _organ_rows(landmarks, stds, args)
    _dispatch_rows(landmarks, stds, args)
    _weight_rows(landmarks, stds, args)
    _torch_rows(landmarks, stds, args)
    return 0


def _organ_rows(landmarks: np.ndarray, stds: np.ndarray, args) -> None:
    """soft_mask_organs against rasterize_organs: three organs per call, as a dataset draws them."""
    from chexmask_u_tools.masks.raster import rasterize_organs
    from chexmask_u_tools.masks.soft import soft_mask_organs

    print()
    print("three organs per call: soft_mask_organs vs rasterize_organs (ms per landmark set)")
    print(f"| {'size':>4} | {'hard':>6} | {'soft':>6} | {'/hard':>6} | {'tol=1e-3 uint8':>14} | {'/hard':>6} |")
    print(f"|{'-' * 6}|{'-' * 8}|{'-' * 8}|{'-' * 8}|{'-' * 16}|{'-' * 8}|")
    for size in (1024, 512):
        lm = landmarks * (size / 1024.0)

        def hard(lm=lm, size=size):
            for one in lm:
                rasterize_organs(one, size, size)

        def soft(lm=lm, size=size, **options):
            for one, sd in zip(lm, stds):
                soft_mask_organs(one, sd, size, size, **options)

        t_hard = best_time(hard, args.repeat) / len(lm)
        t_soft = best_time(soft, args.repeat) / len(lm)
        t_train = best_time(lambda: soft(tol=1e-3, dtype=np.uint8), args.repeat) / len(lm)
        print(f"| {size:>4} | {t_hard * 1e3:>6.3f} | {t_soft * 1e3:>6.2f} | {t_soft / t_hard:>5.1f}x | "
              f"{t_train * 1e3:>14.2f} | {t_train / t_hard:>5.1f}x |")


def _dispatch_rows(landmarks: np.ndarray, stds: np.ndarray, args) -> None:
    """The kernel against numpy on one organ at sizes 16..2048: what method='auto' picks."""
    from chexmask_u_tools.layout import ORGAN_SLICES
    from chexmask_u_tools.masks.soft import soft_mask, soft_method

    print()
    print("kernel vs numpy by size (right lung of row 0, std 2..8 px scaled with the size; ms)")
    print(f"| {'size':>4} | {'kernel':>8} | {'numpy':>8} | {'faster':>6} | {'auto picks':>10} |")
    print(f"|{'-' * 6}|{'-' * 10}|{'-' * 10}|{'-' * 8}|{'-' * 12}|")
    sl = ORGAN_SLICES["right_lung"]
    for size in (16, 64, 256, 1024, 2048):
        p = landmarks[0][sl] * (size / 1024.0)
        s = stds[0][sl] * (size / 1024.0)
        t_kernel = best_time(lambda p=p, s=s, size=size: soft_mask(p, s, size, size, method="kernel"), args.repeat)
        t_numpy = best_time(lambda p=p, s=s, size=size: soft_mask(p, s, size, size, method="numpy"), args.repeat)
        faster = "kernel" if t_kernel < t_numpy else "numpy"
        print(f"| {size:>4} | {t_kernel * 1e3:>8.3f} | {t_numpy * 1e3:>8.3f} | {faster:>6} | "
              f"{soft_method(size, size):>10} |")


def _weight_rows(landmarks: np.ndarray, stds: np.ndarray, args) -> None:
    """Band masks and pixel weight maps: kernel against numpy at 512 (same results, checked)."""
    from chexmask_u_tools.masks.soft import band_mask, pixel_weight_map, soft_mask_organs
    from chexmask_u_tools.layout import ORGAN_SLICES
    from chexmask_u_tools.select.weights import band_pixel_weights, soft_pixel_weights, soft_pixel_weights_reference

    sl = ORGAN_SLICES["right_lung"]
    p = landmarks[0][sl] * 0.5
    s = stds[0][sl]
    soft = soft_mask_organs(landmarks[0] * 0.5, stds[0], 512, 512)
    band = band_mask(p, s, 512, 512, k=2.0)
    rows = [
        ("band_mask, one organ, k=2", lambda: band_mask(p, s, 512, 512, k=2.0, method="kernel"),
         lambda: band_mask(p, s, 512, 512, k=2.0, method="numpy"), 0.0),
        ("pixel_weight_map, one organ", lambda: pixel_weight_map(p, s, 512, 512, method="kernel"),
         lambda: pixel_weight_map(p, s, 512, 512, method="numpy"), 2e-6),
    ]
    for power in (1.0, 2.0, 0.5, 1.5):
        for reduce in (None, "min"):
            rows.append((f"soft_pixel_weights 3x512x512, power {power:g}, reduce {reduce}",
                         lambda power=power, reduce=reduce: soft_pixel_weights(soft, power=power, reduce=reduce),
                         lambda power=power, reduce=reduce: soft_pixel_weights_reference(soft, power=power, reduce=reduce),
                         0.0 if power != 1.5 else 1e-7))
    rows.append(("band_pixel_weights 512x512", lambda: band_pixel_weights(band, 0.2),
                 lambda: np.where(band, np.float32(0.2), np.float32(1.0)), 0.0))
    print()
    print("band masks and pixel weights at 512: what the public function runs (kernel, or numpy where that is faster) "
          "against numpy (ms)")
    print(f"| {'what':<52} | {'public':>7} | {'numpy':>7} | {'numpy/public':>12} |")
    print(f"|{'-' * 54}|{'-' * 9}|{'-' * 9}|{'-' * 14}|")
    for name, ours, numpy_way, tol in rows:
        err = float(np.abs(np.asarray(ours(), dtype=np.float64) - np.asarray(numpy_way(), dtype=np.float64)).max())
        if err > tol:
            raise SystemExit(f"{name}: kernel and numpy differ by {err:.2e}")
        t_ours = best_time(ours, args.repeat)
        t_numpy = best_time(numpy_way, args.repeat)
        print(f"| {name:<52} | {t_ours * 1e3:>7.3f} | {t_numpy * 1e3:>7.3f} | {t_numpy / t_ours:>11.1f}x |")


def _torch_rows(landmarks: np.ndarray, stds: np.ndarray, args) -> None:
    """Batched torch soft masks per organ, CPU and CUDA, against numpy's soft and hard masks in this run."""
    try:
        import torch

        from chexmask_u_tools.masks.soft_torch import soft_mask_organs_torch
    except ImportError as exc:
        print(f"torch rows skipped: {exc}")
        return
    from chexmask_u_tools.masks.raster import rasterize_organs
    from chexmask_u_tools.masks.soft import soft_mask_organs

    torch.set_num_threads(args.threads)
    reps = -(-args.torch_batch // len(landmarks))
    batch_lm = np.concatenate([landmarks] * reps)[: args.torch_batch]
    batch_sd = np.concatenate([stds] * reps)[: args.torch_batch]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print()
    print(f"torch: soft_mask_organs_torch, one call per batch of landmark sets (3 organs each), {args.threads} CPU thread(s)")
    print(
        f"| {'size':>4} | {'device':<6} | {'batch':>5} | {'ms/organ':>8} | {'organs/s':>9} |"
        f" {'numpy hard ms/organ':>19} | {'soft/hard':>9} |"
    )
    print(f"|{'-' * 6}|{'-' * 8}|{'-' * 7}|{'-' * 10}|{'-' * 11}|{'-' * 21}|{'-' * 11}|")
    for size in (1024, 512):
        scale = size / 1024.0
        lm_s = batch_lm * scale

        def hard(lm_s=lm_s, size=size):
            for lm in lm_s[: len(landmarks)]:
                rasterize_organs(lm, size, size)

        t_hard = best_time(hard, args.repeat) / (3 * len(landmarks))
        reference = soft_mask_organs(lm_s[0], batch_sd[0], size, size)
        for device in devices:
            if device == "cpu":
                lm_dev, sd_dev = lm_s[:1], batch_sd[:1]  # CPU: one landmark set keeps the run short
            else:
                lm_dev, sd_dev = lm_s, batch_sd
            pts = torch.as_tensor(lm_dev, device=device)
            sd = torch.as_tensor(sd_dev, device=device)
            got = soft_mask_organs_torch(pts[:1], sd[:1], size, size)[0].cpu().numpy()
            diff = float(np.abs(got - reference).max())

            def run(pts=pts, sd=sd, size=size, device=device):
                soft_mask_organs_torch(pts, sd, size, size)
                if device == "cuda":
                    torch.cuda.synchronize()

            per = best_time(run, 1 if device == "cpu" else args.repeat) / (3 * len(pts))
            print(
                f"| {size:>4} | {device:<6} | {len(pts):>5} | {per * 1e3:>8.3f} | {1 / per:>9.1f} | {t_hard * 1e3:>19.3f} |"
                f" {per / t_hard:>8.1f}x |  (max |torch - numpy| {diff:.1e})"
            )


if __name__ == "__main__":
    raise SystemExit(main())
