"""``chexmask-u export``: a filtered, weighted subset as parquet, optional PNG masks, and a manifest.

Output directory layout (written to a temporary sibling directory and moved
into place in one rename, so a failed run leaves nothing half-written)::

    OUT/subset.parquet        canonical rows passing the rules, plus mask_valid_<organ>,
                              rule_weight, sample_weight (``--weights`` clipped to [0.05, 1],
                              times rule_weight; null where the row lacks the sigma)
                              and (with --png) mask_png
    OUT/masks/<source>/<name>.png   one RGB PNG per row: R right lung, G left lung, B heart
                              (hard: 0 / 255; soft: round(255 * probability))
    OUT/manifest.json         input, rules and their counts, frame, size, files, row counts

PNG names are the image id with every character outside ``[A-Za-z0-9._-]``
replaced by ``_``, cut to 80 characters, plus a 10-hex-digit hash of source and
id (so distinct ids never collide); they never contain a path separator.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

from chexmask_u_tools.cli._args import (
    add_cohort_arguments,
    add_column_argument,
    add_on_error_argument,
    apply_cohort_arguments,
    column_mapping,
)

MANIFEST = "manifest.json"
SUBSET = "subset.parquet"


INTERRUPTED = "nothing was written (--out appears only when complete; an earlier output is left as it was); run the command again"
"""What Ctrl-C leaves (printed by the command line)."""

def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a filtered subset (parquet), optional PNG masks and a manifest",
        description=(
            "Apply uncertainty / quality rules to SOURCE and write the kept rows to OUT/subset.parquet, "
            "optionally one RGB PNG of masks per row (R right lung, G left lung, B heart) in the chosen frame "
            "and size, and OUT/manifest.json.  SOURCE: a data file (.csv/.csv.gz/.csv.xz/.parquet), a cache "
            "directory (manifest.json), a local mirror directory, a Hub dataset repo id, or 'sample' (the "
            "embedded synthetic sample).  Rules: level[.organ][.stat]OP threshold[:action[=w]][;missing=m], "
            "e.g. 'image.mean<=8', 'organ.heart.mean<=10:drop_organ', 'dice.mean>=0.7', 'image.q0.9<=12:weight=0.5'."
        ),
    )
    parser.add_argument("source", metavar="SOURCE")
    add_column_argument(parser)
    add_on_error_argument(parser)
    parser.add_argument("--out", required=True, help="output directory (must not exist unless --overwrite)")
    parser.add_argument("--rule", action="append", default=[], metavar="RULE", help="a rule (repeatable)")
    parser.add_argument(
        "--min-dice", "--min-dice-rca-mean", dest="min_dice", type=float, default=None,
        help="shortcut for the rule dice.mean>=X (the same flag as chexmask-u filter)",
    )
    parser.add_argument(
        "--max-node-sigma", "--max-node-sigma-mean", dest="max_node_sigma", type=float, default=None,
        help="shortcut for the rule image.mean<=X (px)",
    )
    add_cohort_arguments(parser)
    parser.add_argument(
        "--split", default=None, metavar="NAME",
        help="keep only the rows of this split (needs --patient-split, or a table that has a split column)",
    )
    parser.add_argument("--weights", choices=["none", "exp", "inverse", "rank"], default="none", help="sample weighting")
    parser.add_argument("--tau", type=float, default=8.0, help="tau (px) of the exp / inverse weighting")
    parser.add_argument("--png", action="store_true", help="write one RGB PNG of masks per row")
    parser.add_argument(
        "--hub-folder",
        action="store_true",
        help="write OUT as a Hugging Face Hub dataset folder (parquet shards + README card) instead; "
        "upload it with huggingface_hub.upload_folder",
    )
    parser.add_argument("--name", default="CheXmask-U subset", help="the dataset card's title (--hub-folder)")
    parser.add_argument("--masks", choices=["hard", "soft"], default="hard", help="PNG mask kind")
    parser.add_argument("--frame", choices=["preprocessed", "original"], default="preprocessed", help="PNG frame")
    parser.add_argument("--size", type=int, default=None, help="PNG side S (default 1024 / native size)")
    parser.add_argument(
        "--images",
        nargs="+",
        default=None,
        metavar="SOURCE=ROOT",
        help="image roots, to read original sizes for --frame original (or ROOT for every source)",
    )
    parser.add_argument("--sources", nargs="+", default=None)
    parser.add_argument("--frames", nargs="+", default=None, choices=["preprocessed", "original"])
    parser.add_argument("--revision", default=None)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT directory")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def mask_file_name(source: str, image_id: str) -> str:
    """``masks/<source>/<sanitized id>-<hash>.png``: a relative path that cannot leave the output directory."""
    digest = hashlib.sha256(f"{source}\x00{image_id}".encode()).hexdigest()[:10]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", image_id).strip("._-")[:80] or "image"
    folder = re.sub(r"[^A-Za-z0-9._-]+", "_", source).strip("._-") or "source"
    return f"masks/{folder}/{stem}-{digest}.png"


def _open_input(args: argparse.Namespace):
    from chexmask_u_tools.hub.inputs import open_table

    return open_table(
        args.source,
        sources=args.sources,
        frames=args.frames,
        revision=args.revision,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        columns=column_mapping(args),
        on_error=args.on_error,
    )


def recover_interrupted(out: Path) -> list[str]:
    """Finish or undo what a killed export into ``out`` left behind; returns what was done.

    A run killed between moving the old ``OUT`` aside and moving the new one in
    leaves ``OUT`` missing and the old output in ``.OUT.old-PID``: it is put
    back.  A run killed after both moves leaves only the stale ``.OUT.old-PID``,
    and a run killed while writing leaves ``.OUT.tmp-PID``: both are removed
    once their process is gone.
    """
    from chexmask_u_tools._atomic import process_alive, remove_stale_temporaries

    done = []
    for old in sorted(out.parent.glob(f".{out.name}.old-*")):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and process_alive(int(pid)):
            continue
        if not out.exists():
            os.replace(old, out)
            done.append(f"restored {out} from the interrupted overwrite {old.name}")
        else:
            shutil.rmtree(old, ignore_errors=True)
            done.append(f"removed {old.name} left by an interrupted overwrite")
    done += [f"removed {p.name} left by an interrupted export" for p in remove_stale_temporaries(out)]
    return done


def _roots(values: list[str] | None):
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    from chexmask_u_tools.errors import InputError

    roots = {}
    for value in values:
        source, sep, root = value.partition("=")
        if not sep or not root:
            raise InputError(f"--images: expected SOURCE=ROOT, got {value!r}")
        roots.setdefault(source, []).append(root)
    return roots


def _original_size(row: dict, resolver) -> tuple[int, int] | None:
    from chexmask_u_tools.schema import PREPROCESSED_SIZE

    height, width = row["height"], row["width"]
    if height and width and (row["frame"] == "original" or (height, width) != (PREPROCESSED_SIZE, PREPROCESSED_SIZE)):
        return int(height), int(width)
    if resolver is None:
        return None
    path = resolver.resolve(row["source"], row["image_id"])
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (UnidentifiedImageError, OSError):
        from chexmask_u_tools.images.read import read_image

        return read_image(path).shape


def _check_unique_names(subset) -> None:
    import polars as pl

    from chexmask_u_tools.errors import InputError

    repeated = subset.group_by("source", "image_id").agg(pl.len().alias("rows"), pl.col("frame").unique().alias("frames"))
    repeated = repeated.filter(pl.col("rows") > 1)
    if repeated.height:
        first = repeated.row(0, named=True)
        raise InputError(
            f"{repeated.height} image(s) appear in more than one row (e.g. {first['source']} {first['image_id']!r}: "
            f"{first['rows']} rows, frames {sorted(first['frames'])}); their mask PNGs would overwrite each other. "
            "Keep one row per image: --frames preprocessed (or original) for a table holding both, or deduplicate it"
        )


def _write_pngs(subset, args, directory: Path) -> list[str]:
    import numpy as np
    from PIL import Image
    from tqdm.auto import tqdm

    from chexmask_u_tools.errors import InputError
    from chexmask_u_tools.images.resolver import as_resolver
    from chexmask_u_tools.masks.frames import landmarks_on_image
    from chexmask_u_tools.masks.raster import rasterize_organs

    _check_unique_names(subset)
    resolver = as_resolver(_roots(args.images))
    names: list[str] = []
    columns = ["source", "image_id", "frame", "height", "width", "landmarks", "landmarks_std"]
    for row in tqdm(subset.select(columns).iter_rows(named=True), total=subset.height, desc="masks", unit="row", disable=args.no_progress):
        original = _original_size(row, resolver)
        if original is None and "original" in (args.frame, row["frame"]):
            raise InputError(
                f"row {row['source']} {row['image_id']!r} does not state its original image size; "
                "pass --images SOURCE=ROOT so it can be read from the image"
            )
        std = row["landmarks_std"]
        landmarks, std, (height, width) = landmarks_on_image(
            np.asarray(row["landmarks"]),
            None if std is None else np.asarray(std),
            row_frame=row["frame"],
            original_size=original,
            frame=args.frame,
            size=args.size,
        )
        if args.masks == "soft" and std is None:
            raise InputError(
                f"row {row['source']} {row['image_id']!r} has no landmark std, so it has no soft mask; "
                "--masks soft needs CheXmask-U uncertainty columns (use --masks hard for such rows)"
            )
        if args.masks == "soft":
            from chexmask_u_tools.masks.soft import soft_mask_organs

            masks = np.rint(soft_mask_organs(landmarks, std, height, width) * 255.0).astype(np.uint8)
        else:
            masks = rasterize_organs(landmarks, height, width).astype(np.uint8) * 255
        name = mask_file_name(row["source"], row["image_id"])
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(masks.transpose(1, 2, 0)), mode="RGB").save(target)
        names.append(name)
    return names


def run(args: argparse.Namespace) -> int:
    import polars as pl

    from chexmask_u_tools.errors import InputError
    from chexmask_u_tools.select.rules import apply_rules, parse_rules, rule_report
    from chexmask_u_tools.select.weights import SampleWeighting

    out = Path(args.out)
    for line in recover_interrupted(out):
        print(line)
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} exists; pass --overwrite to replace it")
    if args.size is not None and not 8 <= args.size <= 8192:
        raise InputError(f"--size must lie in 8..8192, got {args.size}")
    texts = list(args.rule)
    if args.min_dice is not None:
        texts.append(f"dice.mean>={args.min_dice!r}")
    if args.max_node_sigma is not None:
        texts.append(f"image.mean<={args.max_node_sigma!r}")
    rules = parse_rules(texts)
    if args.hub_folder and args.png:
        raise InputError("--hub-folder writes parquet shards and a card; it does not take --png")
    lf = _open_input(args)
    if args.metadata or args.patient_split:
        lf = apply_cohort_arguments(lf.collect(), args).lazy()
    if args.split is not None:
        if "split" not in lf.collect_schema().names():
            raise InputError("--split needs a split column: pass --patient-split (with --metadata for patients)")
        lf = lf.filter(pl.col("split") == args.split)
    report = rule_report(lf, rules) if rules else None
    weighting = SampleWeighting(args.weights, tau=args.tau)
    weight = weighting.expr() if args.weights != "none" else pl.lit(1.0, pl.Float64)
    kept = apply_rules(lf, rules).with_columns((weight * pl.col("rule_weight")).cast(pl.Float32).alias("sample_weight"))

    if args.hub_folder:
        from chexmask_u_tools.io.hub_folder import read_folder_record
        from chexmask_u_tools.publish.hub_folder import save_hub_folder

        # Streamed from the lazy rows (bounded memory), quiet under --no-progress.
        save_hub_folder(kept, out, name=args.name, overwrite=args.overwrite, progress=not args.no_progress)
        print(f"kept {read_folder_record(out).rows} rows -> Hub folder {out} (upload: huggingface_hub.upload_folder("
              f"folder_path={str(out)!r}, repo_id=..., repo_type='dataset'))")
        return 0

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        if args.png:
            subset = kept.collect()
            subset = subset.with_columns(pl.Series("mask_png", _write_pngs(subset, args, staging), dtype=pl.String))
            subset.write_parquet(staging / SUBSET, compression="zstd")
            rows_out = subset.height
        else:
            kept.sink_parquet(staging / SUBSET, compression="zstd")
            rows_out = pl.scan_parquet(staging / SUBSET).select(pl.len()).collect().item()
        manifest = {
            "format": "chexmask-u-tools export 1",
            "created_unix": int(time.time()),
            "arguments": {key: value for key, value in vars(args).items() if key != "func"},
            "input": str(args.source),
            "rules": [rule.name for rule in rules],
            "rule_report": report.to_dicts() if report is not None else [],
            "rows_in": int(report["rows"][0]) if report is not None else None,
            "rows_out": int(rows_out),
            "sample_weighting": {"method": args.weights, "tau": args.tau},
            "files": {"subset": SUBSET, "masks": "masks/" if args.png else None},
            "masks": {
                "kind": args.masks,
                "frame": args.frame,
                "size": args.size,
                "channels": ["right_lung", "left_lung", "heart"],
                "encoding": "0/255" if args.masks == "hard" else "round(255 * probability)",
            }
            if args.png
            else None,
        }
        with open(staging / MANIFEST, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if report is not None:
        from chexmask_u_tools.cli._format import print_table

        print_table(report)
    print(f"kept {rows_out} rows -> {out / SUBSET}" + (f" (+ {rows_out} mask PNGs)" if args.png else ""))
    return 0
