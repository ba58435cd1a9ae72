"""Benchmark: soft (uncertainty) masks against hard masks of the same organ at the same size, same run.

For each organ and each size (1024 and 512) it prints the time of
``soft_mask`` (narrow band, the default), of ``rasterize`` (the hard mask) and
their ratio, plus the whole-grid reference (``soft_mask(..., band=False)``) and,
when torch is installed, the batched torch path (``soft_mask_organs_torch``) on
CPU and, when available, CUDA.  Contours: the landmarks of the embedded sample
(``cxu.load_sample()``), scaled to the frame; per-node std: each row's released
std mapped linearly onto 2..8 px (in the frame being drawn), the range the
issue's target is stated for.  Times are per organ, best of ``--repeat`` runs
over ``--images`` rows, and include allocating the output.  The narrow band is
checked against the whole grid (within 1e-6) before timing.

    python scripts/bench_soft.py [--images 4] [--repeat 3] [--torch-batch 64]
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
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--torch-batch", type=int, default=64, help="landmark sets per torch call on CUDA (CPU: 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (numpy is single-threaded)")
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

    print(f"{len(landmarks)} sample rows, per-node std 2..8 px in each frame; per organ, best of {args.repeat}")
    print()
    header = f"| {'size':>4} | {'organ':<10} | {'soft ms':>8} | {'hard ms':>8} | {'soft/hard':>9} |"
    header += f" {'whole-grid ms':>13} | {'whole/hard':>10} |"
    print(header)
    print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|")
    worst = 0.0
    for size in (1024, 512):
        scale = size / 1024.0
        for organ in ORGANS:
            sl = ORGAN_SLICES[organ]
            polys = [lm[sl] * scale for lm in landmarks]
            organ_std = [sd[sl] for sd in stds]
            for p, s in zip(polys[:1], organ_std[:1]):
                diff = np.abs(soft_mask(p, s, size, size) - soft_mask(p, s, size, size, band=False)).max()
                worst = max(worst, float(diff))

            def soft(polys=polys, organ_std=organ_std, size=size):
                for p, s in zip(polys, organ_std):
                    soft_mask(p, s, size, size)

            def whole(polys=polys, organ_std=organ_std, size=size):
                soft_mask(polys[0], organ_std[0], size, size, band=False)

            def hard(polys=polys, size=size):
                for p in polys:
                    rasterize(p, size, size)

            t_soft = best_time(soft, args.repeat) / len(polys)
            t_hard = best_time(hard, args.repeat) / len(polys)
            t_whole = best_time(whole, 1)
            print(
                f"| {size:>4} | {organ:<10} | {t_soft * 1e3:>8.2f} | {t_hard * 1e3:>8.3f} | {t_soft / t_hard:>8.1f}x |"
                f" {t_whole * 1e3:>13.1f} | {t_whole / t_hard:>9.0f}x |"
            )
    print()
    print(f"narrow band vs whole grid: max |difference| {worst:.2e} (must be <= 1e-6)")
    _torch_rows(landmarks, stds, args)
    return 0


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
