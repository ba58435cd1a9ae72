"""Building one training sample from one table row, in small steps shared by both datasets.

:meth:`chexmask_u_tools.train.rowstore.RowStore.record` reads one row of the
mapped row store as a :class:`RowRecord`; :class:`SampleBuilder` turns a record
into the sample dict (keys: :mod:`chexmask_u_tools.train.datasets`):

1. :meth:`~SampleBuilder.read_image`: find and decode the image (or none, under ``missing``);
2. :meth:`~SampleBuilder.geometry`: the original size, landmarks and std in the output frame, node weights;
3. :meth:`~SampleBuilder.preprocess`: crop, pad and resize the pixels to the output frame;
4. :meth:`~SampleBuilder.targets`: hard and soft masks, pixel weights;
5. :meth:`~SampleBuilder.assemble`: the tensors of the sample dict, then the user's ``transform``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from chexmask_u_tools.errors import ImageError, InputError, RecordError
from chexmask_u_tools.images.preprocess import (
    crop_black_border,
    pad_offsets,
    pad_to_square,
    resample_reduced,
    resize_levels,
)
from chexmask_u_tools.images.read import read_image, read_image_reduced
from chexmask_u_tools.images.resolver import ImageResolver, MissingImageError
from chexmask_u_tools.layout import N_NODES
from chexmask_u_tools.masks.frames import landmarks_on_image, std_to_preprocessed_frame
from chexmask_u_tools.masks.raster import rasterize_organs
from chexmask_u_tools.schema import PREPROCESSED_SIZE
from chexmask_u_tools.select.weights import node_weights, soft_pixel_weights
from chexmask_u_tools.sources import REGISTRY
from chexmask_u_tools.train.decode_cache import DecodeCache, Decoded
from chexmask_u_tools.train.options import SampleOptions

__all__ = [
    "CROP_SOURCES",
    "ROW_COLUMNS",
    "Geometry",
    "RowRecord",
    "SampleBuilder",
    "check_sample_columns",
    "label_values",
]

CROP_SOURCES: tuple[str, ...] = tuple(name for name, info in REGISTRY.items() if info.crop_border)
"""Sources whose black borders were cropped before padding (SPEC section 4)."""

ROW_COLUMNS: tuple[str, ...] = ("source", "image_id", "frame", "height", "width", "landmarks")
"""The canonical columns every sample needs."""

ASPECT_TOLERANCE = 0.02
"""Relative aspect-ratio difference accepted by ``size_mismatch="rescale"``."""


@dataclass(frozen=True)
class RowRecord:
    """One table row, as the sample builder reads it (arrays in the row's own frame and pixels)."""

    source: str
    image_id: str
    frame: str
    height: int | None
    width: int | None
    landmarks: np.ndarray
    std: np.ndarray | None
    sample_weight: float
    mask_valid: np.ndarray
    row: int
    fields: dict[str, Any] = field(default_factory=dict)
    labels: np.ndarray | None = None
    label_mask: np.ndarray | None = None


@dataclass(frozen=True)
class Geometry:
    """Where a row's shapes fall in the output: landmarks and std in output pixels, sizes, node weights."""

    landmarks: np.ndarray
    std: np.ndarray | None
    out_size: tuple[int, int]
    original_size: tuple[int, int] | None
    node_weight: np.ndarray


def label_values(frame: pl.DataFrame, labels: tuple[str, ...], rows: np.ndarray) -> np.ndarray:
    """``(N, L)`` float32 of the label columns (NaN for null); raises RecordError for a value not 1, 0, -1 or null."""
    if not labels or frame.height == 0:
        return np.zeros((frame.height, len(labels)), dtype=np.float32)
    try:
        values = frame.select(pl.col(name).cast(pl.Float32) for name in labels).to_numpy().astype(np.float32)
    except pl.exceptions.PolarsError as error:
        raise InputError(f"label columns {list(labels)} must be numeric (1, 0, -1 or null): {error}") from None
    bad = ~(np.isnan(values) | np.isin(values, (1.0, 0.0, -1.0)))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise RecordError(
            f"label column {labels[j]!r} holds {float(values[i, j])!r} at row {int(rows[i])} "
            f"({frame['source'][int(i)]} {frame['image_id'][int(i)]!r}); labels must be 1, 0, -1 (uncertain) or null "
            f"({int(bad.sum())} such values among these {frame.height} rows)"
        )
    return values


def check_sample_columns(names: list[str], options: SampleOptions) -> None:
    """Raise InputError naming any column the options need that the table lacks."""
    missing = [c for c in ROW_COLUMNS if c not in names]
    if missing:
        raise InputError(f"table lacks columns {missing}; build it with read_table / scan_table")
    for kind in ("fields", "labels"):
        absent = [c for c in getattr(options, kind) if c not in names]
        if absent:
            raise InputError(
                f"{kind}={list(getattr(options, kind))} names columns the table lacks: {absent}; join the source's "
                "metadata first (cxu.attach_metadata(table, cxu.read_metadata(source, path))) or drop them from "
                f"{kind}="
            )


class SampleBuilder:
    """The per-row work shared by both datasets (picklable; no torch state).

    Parameters
    ----------
    resolver:
        Where images are found (None: no images, ``missing="masks_only"``).
    options:
        The validated :class:`~chexmask_u_tools.train.options.SampleOptions`.
    """

    def __init__(self, resolver: ImageResolver | None, options: SampleOptions) -> None:
        if resolver is None and options.missing != "masks_only":
            raise InputError("give image roots (or a resolver), or use missing='masks_only' to train on masks alone")
        self.resolver = resolver
        self.options = options
        self.cache = None if options.cache_dir is None else DecodeCache(options.cache_dir)

    @property
    def missing(self) -> str:
        return self.options.missing

    # ------------------------------------------------------------ 1. image
    def read_image(self, record: RowRecord, path: str | os.PathLike | None = None) -> tuple[Decoded | None, str | None]:
        """The decoded image of a row and its path; ``(None, None)`` when absent under ``missing="masks_only"``/``"skip"``."""
        if path is None:
            if self.resolver is None:
                return None, None
            path, tried = self.resolver.locate(record.source, record.image_id)
            if path is None:
                if self.missing == "raise":
                    raise MissingImageError(record.source, record.image_id, tried)
                return None, None
        return self.decode(path), str(path)

    def decode(self, path: str | os.PathLike) -> Decoded:
        """``(pixels, k, (H, W))``: the image decoded at ``1 / k`` of its full (H, W) resolution."""
        if self.cache is None:
            return self._decode(path)
        options = self.options
        mode = f"{options.size},{options.frame}" if options.reduced_decode else "full"
        return self.cache.get(path, mode, self._decode)

    def _decode(self, path: str | os.PathLike) -> Decoded:
        if self.options.reduced_decode:
            return read_image_reduced(path, self.options.size, square=self.options.frame == "preprocessed")
        pixels = read_image(path)
        return pixels, 1, pixels.shape

    # ------------------------------------------------------------ 2. geometry
    @staticmethod
    def stated_size(record: RowRecord) -> tuple[int, int] | None:
        """The original (H, W) the row states, or None (a preprocessed row states one only when not 1024 x 1024)."""
        height, width = record.height, record.width
        if record.frame == "original":
            return (height, width) if height and width else None
        if height and width and (height, width) != (PREPROCESSED_SIZE, PREPROCESSED_SIZE):
            return height, width
        return None

    def needs_rescale(self, stated: tuple[int, int], actual: tuple[int, int], image_id: str, path: str | None) -> bool:
        """False when the sizes agree, True under 'rescale' with the same aspect ratio, else raise ImageError."""
        if tuple(stated) == tuple(actual):
            return False
        (sh, sw), (ah, aw) = stated, actual
        same_aspect = abs((ah / aw) / (sh / sw) - 1.0) <= ASPECT_TOLERANCE
        if self.options.size_mismatch == "rescale" and same_aspect:
            return True
        hint = (
            "; its aspect ratio matches, so size_mismatch='rescale' would scale the landmarks to it"
            if same_aspect
            else "; the aspect ratio differs too, so this is probably not the row's image"
        )
        raise ImageError(f"image {path} for id {image_id!r} is {aw}x{ah} (WxH) but the row says {sw}x{sh}{hint}")

    def geometry(self, record: RowRecord, decoded: Decoded | None, path: str | None) -> Geometry:
        """Landmarks and std in output pixels, the output and original sizes, and the node weights."""
        stated = self.stated_size(record)
        landmarks = record.landmarks.astype(np.float64)
        std = None if record.std is None else record.std.astype(np.float64)
        if decoded is not None:
            actual = tuple(decoded[2])
            if stated is not None and self.needs_rescale(stated, actual, record.image_id, path) and record.frame == "original":
                factor = np.array([actual[1] / stated[1], actual[0] / stated[0]])
                landmarks = landmarks * factor
                std = None if std is None else std * factor
            original = actual
        else:
            original = stated
        if original is None and (self.options.frame == "original" or record.frame == "original"):
            raise ImageError(
                f"no image for {record.source} id {record.image_id!r} and the row does not state its original size; "
                "the original frame cannot be built from the masks alone"
            )
        # Node weights read the std in 1024-frame pixels, the unit of the released
        # std and of the rules, whatever the output frame and size.
        if std is None:
            weights_of_nodes = np.ones(N_NODES, dtype=np.float32)
        else:
            oh, ow = original if original is not None else (0, 0)
            std_1024 = std if record.frame == "preprocessed" else std_to_preprocessed_frame(std, oh, ow)
            weights_of_nodes = node_weights(std_1024, **self.options.node_weighting)
        landmarks, std, out_size = landmarks_on_image(
            landmarks, std, row_frame=record.frame, original_size=original, frame=self.options.frame, size=self.options.size
        )
        return Geometry(landmarks, std, tuple(out_size), original, weights_of_nodes)

    # ------------------------------------------------------------ 3. pixels
    def preprocess(self, source: str, decoded: Decoded | None, out_size: tuple[int, int]) -> np.ndarray:
        """uint8 (out_h, out_w) pixels in the output frame (zeros without an image)."""
        out_h, out_w = out_size
        if decoded is None:
            return np.zeros((out_h, out_w), dtype=np.uint8)
        image, reduction, (height, width) = decoded
        options = self.options
        if options.frame == "original":
            if reduction > 1:
                return resample_reduced(image, reduction, (out_h, out_w), (height, width), (0, 0), (height, width))
            return self.resize(image, out_h, out_w)
        crop = options.crop_border if options.crop_border is not None else source in CROP_SOURCES
        if crop:
            image, (top, left, kept_h, kept_w) = crop_black_border(image)
            # Full-resolution extent of the kept k x k blocks (the last ones may be partial).
            height = min((top + kept_h) * reduction, height) - top * reduction
            width = min((left + kept_w) * reduction, width) - left * reduction
        if reduction > 1:
            side, pad_top, pad_left = pad_offsets(height, width)
            return resample_reduced(image, reduction, (out_h, out_w), (side, side), (pad_top, pad_left), (height, width))
        square, _ = pad_to_square(image)
        return self.resize(square, out_h, out_w)

    def resize(self, pixels: np.ndarray, height: int, width: int) -> np.ndarray:
        """uint8 (h, w) -> uint8 (height, width), rounded (Pillow bilinear with ``antialias``)."""
        if pixels.shape == (height, width):
            return pixels
        if self.options.antialias:
            from PIL import Image

            return np.asarray(Image.fromarray(pixels).resize((width, height), Image.BILINEAR), dtype=np.uint8)
        return resize_levels(torch.from_numpy(np.ascontiguousarray(pixels)), (height, width)).to(torch.uint8).numpy()

    # ------------------------------------------------------------ 4. targets
    def targets(self, geometry: Geometry) -> dict[str, np.ndarray]:
        """``hard`` (3, H, W) bool masks, and ``soft`` float32 masks and ``pixel_weight`` when the options ask.

        Nothing under ``masks="device"``: the training step draws them.
        """
        if self.options.masks == "device":
            return {}
        out_h, out_w = geometry.out_size
        hard = rasterize_organs(geometry.landmarks, out_h, out_w)
        found: dict[str, np.ndarray] = {"hard": hard}
        if self.options.needs_soft:
            if geometry.std is not None:
                from chexmask_u_tools.masks.soft import soft_mask_organs

                found["soft"] = soft_mask_organs(geometry.landmarks, geometry.std, out_h, out_w)
            else:  # only reached with soft_missing="hard" (or pixel weights alone): checked when the dataset is built
                found["soft"] = hard.astype(np.float32)
        pixel_options = self.options.pixel_weight_options
        if pixel_options is not None:
            found["pixel_weight"] = np.asarray(soft_pixel_weights(found["soft"], **pixel_options), dtype=np.float32)
        return found

    # ------------------------------------------------------------ 5. sample
    def image_tensor(self, pixels: np.ndarray) -> torch.Tensor:
        """uint8 (H, W) -> (1, H, W) tensor of ``image_dtype`` (float32: levels / 255)."""
        if self.options.image_dtype == "uint8":
            return torch.from_numpy(np.ascontiguousarray(pixels))[None]
        return torch.from_numpy(pixels.astype(np.float32) / np.float32(255.0))[None]

    def assemble(
        self, record: RowRecord, pixels: np.ndarray, has_image: bool, geometry: Geometry, targets: dict[str, np.ndarray]
    ) -> dict[str, Any]:
        """The sample dict, after the user's ``transform``."""
        options = self.options
        has_std = geometry.std is not None
        oh, ow = geometry.original_size if geometry.original_size is not None else (0, 0)
        std = geometry.std if has_std else np.full((N_NODES, 2), np.nan)
        sample: dict[str, Any] = {
            "image": self.image_tensor(pixels),
            "has_image": torch.tensor(has_image),
            "landmarks": torch.from_numpy(geometry.landmarks.astype(np.float32)),
            "std": torch.from_numpy(std.astype(np.float32)),
            "has_std": torch.tensor(has_std),
            "mask_valid": torch.from_numpy(np.asarray(record.mask_valid, dtype=bool).copy()),
            "sample_weight": torch.tensor(float(record.sample_weight), dtype=torch.float32),
            "node_weight": torch.from_numpy(geometry.node_weight),
            "original_size": torch.tensor([oh, ow], dtype=torch.int64),
            "source": record.source,
            "image_id": record.image_id,
            "row": torch.tensor(record.row, dtype=torch.int64),
        }
        if options.masks != "device":
            sample["masks"] = torch.from_numpy(targets["soft"] if options.masks == "soft" else targets["hard"])
        if options.masks == "both":
            sample["soft_masks"] = torch.from_numpy(targets["soft"])
        if "pixel_weight" in targets:
            sample["pixel_weight"] = torch.from_numpy(targets["pixel_weight"])
        if record.labels is not None:
            sample["labels"] = torch.from_numpy(np.array(record.labels, dtype=np.float32))
            sample["label_mask"] = torch.from_numpy(np.array(record.label_mask, dtype=bool))
        sample.update(record.fields)
        if options.transform is not None:
            sample = options.transform(sample)
        return sample

    def build(self, record: RowRecord, path: str | os.PathLike | Path | None = None) -> dict[str, Any]:
        """The sample of one row (``path``: its image when already located)."""
        decoded, found = self.read_image(record, path)
        geometry = self.geometry(record, decoded, found)
        pixels = self.preprocess(record.source, decoded, geometry.out_size)
        return self.assemble(record, pixels, decoded is not None, geometry, self.targets(geometry))
