"""``chexmask-u plot ID_OR_ROW --table PATH --out FIG``: draw one row's landmarks and uncertainty."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from chexmask_u_tools.cli._args import add_column_argument, column_mapping


def register(subparsers: argparse._SubParsersAction) -> None:
    from chexmask_u_tools.hub.inputs import INPUT_SPEC_HELP

    parser = subparsers.add_parser(
        "plot",
        help="draw one row: organ contours with nodes coloured by sigma, a +-k sigma band, or a soft mask",
        description=(
            "Draw one row of a CheXmask(-U) table, chosen by image id (or by 0-based row number), over its "
            "X-ray when --image is given, else over a blank canvas of the row's size."
        ),
    )
    parser.add_argument("key", metavar="ID_OR_ROW", help="image id as in the table, or a 0-based row number")
    parser.add_argument("--table", required=True, help=INPUT_SPEC_HELP)
    add_column_argument(parser)
    parser.add_argument(
        "--source", default=None,
        help="the parent database, when a single file does not say, or to choose among rows sharing the id",
    )
    parser.add_argument(
        "--frame", choices=["preprocessed", "original"], default=None,
        help="the frame, when a single file does not say, or to choose among rows sharing the id",
    )
    parser.add_argument(
        "--image", default=None,
        help="the row's X-ray; a preprocessed-frame row accepts the original image (padded and resized to 1024)",
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--band", type=float, metavar="K", default=None, help="draw the ±K sigma band instead of nodes")
    what.add_argument("--soft", action="store_true", help="draw the soft mask instead of nodes")
    parser.add_argument("--organ", choices=["right_lung", "left_lung", "heart"], default=None, help="organ for --soft (default: all)")
    parser.add_argument("--out", type=Path, required=True, help="figure path (.png, .svg or .pdf)")
    parser.set_defaults(func=run)


def load_table(
    spec: str, source: str | None = None, frame: str | None = None, columns: dict[str, str] | None = None
) -> Any:
    """The canonical table named on the command line (any input spec of :func:`~chexmask_u_tools.hub.inputs.open_table`)."""
    from chexmask_u_tools.hub.inputs import open_table

    return open_table(spec, source=source, frame=frame, columns=columns).collect()


def image_in_row_frame(image: np.ndarray, row: dict, size: tuple[int, int]) -> np.ndarray:
    """Put an image into the row's frame: as is when its size matches, else (1024 frame) pad and resize."""
    from PIL import Image

    from chexmask_u_tools.errors import InputError
    from chexmask_u_tools.images.preprocess import pad_to_square

    if image.shape == size:
        return image
    if row.get("frame") != "preprocessed":
        raise InputError(
            f"the image is {image.shape[1]}x{image.shape[0]} (WxH) but the row's {row.get('frame')} frame is "
            f"{size[1]}x{size[0]}"
        )
    square, _ = pad_to_square(image)
    resized = Image.fromarray(square).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(resized)


def run(args: argparse.Namespace) -> int:
    from chexmask_u_tools.analysis.plots import (
        find_row,
        plot_band,
        plot_contours,
        plot_soft_mask,
        row_arrays,
    )
    from chexmask_u_tools.errors import InputError
    from chexmask_u_tools.images.read import read_image

    table = load_table(args.table, args.source, args.frame, column_mapping(args))
    row = find_row(table, args.key, source=args.source, frame=args.frame)
    landmarks, std, size = row_arrays(row)
    image = None if args.image is None else image_in_row_frame(read_image(args.image), row, size)
    title = f"{row['source']}: {row['image_id']}"
    if (args.band is not None or args.soft) and std is None:
        raise InputError(f"row {row['image_id']!r} has no landmark std: a band or soft mask needs CheXmask-U uncertainty")
    if args.band is not None:
        plot_band(landmarks, std, args.band, image=image, size=size, title=f"{title} (±{args.band:g}σ band)", path=args.out)
    elif args.soft:
        plot_soft_mask(landmarks, std, organ=args.organ, image=image, size=size, title=f"{title} (soft mask)", path=args.out)
    else:
        plot_contours(landmarks, std, image=image, size=size, title=title, path=args.out)
    print(f"wrote {args.out}")
    return 0
