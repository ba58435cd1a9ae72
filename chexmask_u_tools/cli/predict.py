"""``chexmask-u predict``: landmarks and per-node uncertainty for your own images (needs the [torch] extra).

Runs as one process or under ``torchrun`` (each rank takes a disjoint shard of the
images and writes its own part files; rank 0 merges them after a barrier).  The
backend is NCCL on CUDA devices and gloo on the CPU.
"""

from __future__ import annotations

import argparse
import os
import sys

_EPILOG = """\
examples:
  chexmask-u predict xrays/ --out preds.parquet
  chexmask-u predict list.txt --out preds.parquet --weights ./v1_skip --batch-size 16 --dtype bf16
  torchrun --nproc_per_node=8 -m chexmask_u_tools predict xrays/ --out preds.parquet

Unreadable images are reported and skipped (a summary lists them); the exit code is 0
when at least one image was predicted (or all were done before), 1 when none could be,
and then nothing is written.
Re-running the same command resumes: images already in --out are skipped.
--weights random runs untrained weights (loud warning; for testing the pipeline only),
as `chexmask-u experiment corruption --weights random` does.
Needs the [torch] extra: pip install 'chexmask-u-tools[torch]'.
Multi-node runs need --out on a file system every node can see.
"""


INTERRUPTED = "the predictions written so far (whole part files) are kept in --out; run the same command again to resume"
"""What Ctrl-C leaves (printed by the command line)."""

def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict landmarks and per-node uncertainty for your own chest X-rays",
        description="Predict landmarks, per-node std and latent sigmas with the CheXmask-U HybridGNet "
        "(S latent samples per image) and write them as a canonical parquet table.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", metavar="IMAGES_DIR_OR_LIST", help="image directory, text file of paths, or one image")
    parser.add_argument("--out", required=True, help="output parquet file (canonical schema; resumable)")
    parser.add_argument(
        "--weights",
        default=None,
        help="local weights file or directory (.safetensors, or a torch state_dict loadable with weights_only=True), "
        "or Hub id owner/name[/subfolder][@revision] (default: mcosarinsky/CheXmask-U, folder v1_skip); "
        "'random' for untrained weights (testing only)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--samples", type=int, default=50, help="latent samples per image (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed; each image's draws depend only on (seed, image id)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the rank's GPU if any, else cpu)")
    parser.add_argument(
        "--dtype",
        choices=("fp32", "tf32", "bf16", "fp64"),
        default="fp32",
        help="fp32 (exact float32), tf32 (TF32 tensor cores on CUDA), bf16 (encoder in bf16 autocast), "
        "fp64 (float64, slow, for verification)",
    )
    parser.add_argument(
        "--roi-align",
        choices=("torchvision", "nominal"),
        default=None,
        help="skip-block sampling rule (default: the weights' config, torchvision = the authors' kernel)",
    )
    parser.add_argument("--crop-border", action="store_true", help="crop black borders before padding (MIMIC/Padchest style)")
    parser.add_argument("--csv", default=None, help="also write the 1024-frame rows in the released CheXmask-U CSV layout")
    parser.add_argument("--source", default="private", help="value of the source column (default 'private')")
    parser.add_argument(
        "--frames", default="preprocessed,original", help="comma list of frames to write (default both)"
    )
    parser.add_argument(
        "--workers", type=int, default=4, help="image reading threads, overlapping decoding with compute (default 4)"
    )
    parser.add_argument(
        "--compile", action="store_true", help="run the encoder through torch.compile (same numbers; compiles once, then faster)"
    )
    parser.add_argument("--flush-every", type=int, default=256, help="images per part file (default 256)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _setup_distributed(device_arg: str | None):
    import torch
    import torch.distributed as dist

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg is not None:
        device = torch.device(device_arg)
    elif torch.cuda.is_available():
        device = torch.device("cuda", local_rank if world_size > 1 else torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank if world_size > 1 else torch.cuda.current_device())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world_size, device


TORCH_EXTRA = "needs the [torch] extra: pip install 'chexmask-u-tools[torch]'"
RANDOM_WARNING = (
    "WARNING: --weights random: untrained random weights (seed {seed}). The landmarks and std it writes are "
    "meaningless; use it to test the pipeline only, never as predictions."
)


def require_torch() -> None:
    """Raise a one-line package error (not a traceback) when torch is not installed."""
    from chexmask_u_tools.errors import CheXmaskUError

    try:
        import torch  # noqa: F401
    except ImportError as error:
        raise CheXmaskUError(TORCH_EXTRA) from error


def run(args: argparse.Namespace) -> int:
    require_torch()
    import torch.distributed as dist

    from chexmask_u_tools.errors import InputError
    from chexmask_u_tools.model.predict import merge_parts, parts_dir, predict_to_parquet, prediction_provenance
    from chexmask_u_tools.model.pretrained import RANDOM_WEIGHTS, load_weights
    from chexmask_u_tools.schema import FRAMES

    frames = [f.strip() for f in args.frames.split(",") if f.strip()]
    if not frames or any(f not in FRAMES for f in frames):
        raise InputError(f"--frames must be a comma list of {FRAMES}, got {args.frames!r}")
    rank, world_size, device = _setup_distributed(args.device)
    distributed = world_size > 1 and dist.is_initialized()
    random_weights = args.weights == RANDOM_WEIGHTS
    if random_weights and rank == 0:
        print(RANDOM_WARNING.format(seed=args.seed), file=sys.stderr)
    code = 0
    try:
        # Rank 0 fills the Hub cache first so the other ranks read it instead of racing.
        if rank == 0:
            model = load_weights(args.weights, map_location=device, roi_align=args.roi_align, random_seed=args.seed)
        if distributed:
            dist.barrier()
        if rank != 0:
            model = load_weights(args.weights, map_location=device, roi_align=args.roi_align, random_seed=args.seed)
        if args.dtype == "fp64":
            model = model.double()
        provenance = prediction_provenance(
            model, n_samples=args.samples, seed=args.seed, dtype=args.dtype, crop_border=args.crop_border, tool="chexmask-u predict"
        )
        report = predict_to_parquet(
            args.images,
            args.out,
            model,
            rank=rank,
            world_size=world_size,
            merge=False,
            flush_every=args.flush_every,
            batch_size=args.batch_size,
            n_samples=args.samples,
            seed=args.seed,
            dtype=args.dtype,
            crop_border=args.crop_border,
            source=args.source,
            frames=frames,
            workers=args.workers,
            compile=args.compile,
            progress=not args.no_progress and rank == 0,
            provenance=provenance,
        )
        reports = [report]
        if distributed:
            gathered: list = [None] * world_size
            dist.all_gather_object(gathered, report)
            reports = gathered
        nothing = sum(r.done + r.skipped for r in reports) == 0
        code = 1 if nothing else 0
        if rank == 0:
            for r in reports[1:]:
                report.done += r.done
                report.skipped += r.skipped
                report.failed += r.failed
                report.seconds = max(report.seconds, r.seconds)
            print(f"chexmask-u predict: {report.summary()}", file=sys.stderr)
        if nothing:
            if rank == 0:
                folder = parts_dir(args.out)
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
                print(
                    f"chexmask-u predict: error: none of the {len(report.failed)} input image(s) could be predicted; "
                    f"nothing was written to {args.out}",
                    file=sys.stderr,
                )
        elif rank == 0:
            merged = merge_parts(args.out, provenance)
            print(f"wrote {merged['image_id'].n_unique()} images ({merged.height} rows) to {args.out}", file=sys.stderr)
            if random_weights:
                print(RANDOM_WARNING.format(seed=args.seed), file=sys.stderr)
            if args.csv:
                from chexmask_u_tools.io.released import ID_COLUMN_OF_SOURCE, write_released

                rows = merged.filter(merged["frame"] == "preprocessed")
                if rows.height:
                    sources = rows["source"].unique().to_list()
                    known = len(sources) == 1 and sources[0] in ID_COLUMN_OF_SOURCE
                    # A source outside the registry is written per row (Dataset), so the CSV reads back as is.
                    write_released(
                        rows, args.csv, id_column=None if known else "Image ID", dataset_column=not known, provenance=provenance
                    )
                    print(f"wrote {rows.height} rows in the released layout to {args.csv}", file=sys.stderr)
        if distributed:
            dist.barrier()
    finally:
        if distributed:
            dist.destroy_process_group()
    return code
