"""PyTorch datasets joining CheXmask-U rows to the user's own images.

:class:`CheXmaskUDataset` (map-style) and :class:`CheXmaskUIterableDataset`
(streamed, sharded) turn a canonical table (eager or lazy) plus image roots per
source into training samples.  Each sample is a dict:

=================  ===================  ===============================================
key                shape / dtype        content
=================  ===================  ===============================================
``image``          (1, S, S) float32    pixels / 255 in the chosen frame and size
                                        (zeros when ``has_image`` is False); uint8
                                        levels 0..255 with ``image_dtype="uint8"``
``has_image``      () bool              False only under ``missing="masks_only"``
``masks``          (3, S, S)            hard masks (bool) for ``masks="hard"``/``"both"``,
                                        soft masks (float32) for ``masks="soft"``
``soft_masks``     (3, S, S) float32    only for ``masks="both"``
``landmarks``      (120, 2) float32     x, y in pixels of the output image
``std``            (120, 2) float32     per-node std in the same pixels (NaN: no std)
``has_std``        () bool
``mask_valid``     (3,) bool            False where a ``drop_organ`` rule failed
``sample_weight``  () float32           :class:`~chexmask_u_tools.select.weights.SampleWeighting`
                                        times the rules' ``rule_weight``
``node_weight``    (120,) float32       :func:`~chexmask_u_tools.select.weights.node_weights` of the
                                        std in 1024-frame pixels (ones without std)
``pixel_weight``   (3, S, S) float32    only with ``pixel_weights``:
                                        :func:`~chexmask_u_tools.select.weights.soft_pixel_weights`
``original_size``  (2,) int64           (height, width) of the original image (0, 0: unknown)
``source``,        str                  the row's ids
``image_id``
``row``            () int64             row index in the (filtered) table, or in the
                                        source table for the iterable dataset
=================  ===================  ===============================================

Channels are :data:`~chexmask_u_tools.layout.ORGANS`: right lung (image left),
left lung, heart.

Frames (SPEC section 4)
-----------------------
``frame="preprocessed"``: the image as the model saw it, black borders cropped
for MIMIC-CXR-JPG and Padchest (``crop_border``), zero-padded to a centred
square and resized bilinearly to ``S`` (``size``, default 1024).  With
``antialias=False`` (default) the resize is OpenCV ``INTER_LINEAR`` geometry
rounded to 8-bit levels, so ``size=1024`` reproduces the model's input;
``antialias=True`` low-pass filters when shrinking (Pillow's bilinear).
Landmarks are the 1024-frame landmarks (original-frame rows are mapped with
:func:`~chexmask_u_tools.masks.frames.to_preprocessed_frame`) times ``S / 1024``.

Reduced decoding (``fast_decode=True``, default; with ``antialias=False`` and
an int ``size``): an image at least twice the output (its padded side for
``"preprocessed"``, its shorter side for ``"original"``) is decoded at
``1 / k`` of its resolution by :func:`~chexmask_u_tools.images.read.read_image_reduced`
(JPEG: inside the decoder, ``k`` in 2, 4, 8; other formats: mean of
``k x k`` blocks after decoding), then resized once, straight to the output,
with the same geometry as the full-resolution resize: the output pixel grid
maps onto the padded frame as above and each full-resolution coordinate ``u``
reads the reduced image at ``(u + 0.5) / k - 0.5``.  So landmarks and masks
line up with the image exactly as without it; the pixels differ by the
averaging over ``k x k`` blocks (less aliasing than the plain 2-tap bilinear
shrink) and, for the border crop of MIMIC-CXR-JPG / Padchest, a crop found on
the reduced image (the kept box is a whole number of blocks, so it may keep up
to ``k - 1`` full-resolution pixels of border on each side).  Images less
than twice the output are decoded in full as with ``fast_decode=False``
(so ``size=1024`` reproduces the model's input for images up to 2047 pixels;
pass ``fast_decode=False`` for larger ones).

``frame="original"``: the image file's own pixels (no crop); landmarks of
preprocessed rows are mapped with
:func:`~chexmask_u_tools.masks.frames.to_original_frame` (exact, not rounded; like
CheXmask-U it ignores the MIMIC/Padchest border crop).  ``size=None`` keeps the
native size (batches then need ``batch_size=1`` or a custom collate); an int
``S`` resizes the whole image to ``S x S`` (aspect ratio not kept) and scales
x by ``S / W`` and y by ``S / H``.

Masks are rasterized from the landmarks in the output frame and size with the
released pipeline's rule (:func:`~chexmask_u_tools.masks.raster.rasterize_organs`),
which reproduces the released RLE masks pixel for pixel at their own size.

Image size checks
-----------------
A row in the original frame (or a preprocessed row carrying a size other than
1024 x 1024) states its original Height/Width.  If the image on disk has
another size, ``size_mismatch="raise"`` (default) raises
:class:`~chexmask_u_tools.errors.ImageError` naming the id, the file and both
sizes; ``size_mismatch="rescale"`` accepts an image with the same aspect ratio
(within 2 %, e.g. the downsampled ``CheXpert-v1.0-small``) and scales the
row's landmarks and std to it, and still raises for another aspect ratio.

Missing images
--------------
``missing="raise"`` (default): :class:`~chexmask_u_tools.images.resolver.MissingImageError`
naming the id and every path tried.  ``"skip"``: the map-style dataset resolves
every row when built and drops rows without an image (count in ``.skipped``,
and a warning); the iterable one skips them while streaming (count per worker
in a warning at the end of its pass).  ``"masks_only"``: the sample keeps
masks, landmarks and weights, ``image`` is zeros and ``has_image`` False (the
original frame then needs the row's own original size).

Geometric augmentation
----------------------
``transform`` receives the finished sample dict and returns one;
:class:`RandomAffine` moves image, masks, soft masks, pixel weights,
landmarks and std together.  A horizontal flip mirrors the anatomy (the heart
ends up on the image's left), so no flipped image is a realistic chest X-ray;
:class:`RandomAffine` documents how it labels the lungs after a flip.

Sharding (iterable dataset)
---------------------------
Rows are cut into blocks of ``block_rows`` consecutive rows of the source table;
block ``b`` goes to shard ``b mod (world_size * num_workers)``, shard index
``rank * num_workers + worker_id`` (``torch.distributed`` rank and world size
when initialised, or the ``rank``/``world_size`` arguments).  Every row is in
exactly one block, so across all ranks and workers each row is yielded once per
epoch.  An eager ``DataFrame`` is turned into arrays once, in the constructing
process.  A ``LazyFrame`` is read block by block inside each worker (rules
applied per block, so a scan reads only its shard's slices); polars cannot run
in a forked child, so such a dataset needs
``DataLoader(..., multiprocessing_context="spawn")`` (or ``"forkserver"``) and
raises a clear error in forked workers.  The map-style dataset collects its
table when built and runs no polars in workers, so any start method works.  Ranks may get slightly different numbers of rows: under
``DistributedDataParallel`` bound the steps per epoch (or use the map-style
dataset with ``DistributedSampler``).  ``shuffle=True`` permutes the block
order (same permutation on every rank, seeded by ``seed`` and
:meth:`~CheXmaskUIterableDataset.set_epoch`) and the rows inside each block.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import torch

from chexmask_u_tools.errors import ImageError, InputError
from chexmask_u_tools.masks.frames import std_to_preprocessed_frame
from chexmask_u_tools.images.preprocess import crop_black_border, pad_offsets, pad_to_square
from chexmask_u_tools.images.read import read_image, read_image_reduced
from chexmask_u_tools.images.preprocess import resize_levels
from chexmask_u_tools.layout import N_NODES, ORGANS
from chexmask_u_tools.images.resolver import ImageCheck, ImageResolver, MissingImageError, as_resolver, check_images
from chexmask_u_tools.masks.frames import landmarks_on_image
from chexmask_u_tools.masks.raster import rasterize_organs
from chexmask_u_tools.select.rules import Rule, apply_rules, mask_valid_columns, parse_rules
from chexmask_u_tools.sources import REGISTRY
from chexmask_u_tools.schema import FRAMES, PREPROCESSED_SIZE
from chexmask_u_tools.select.weights import SampleWeighting, node_weights, soft_pixel_weights

__all__ = [
    "CheXmaskUDataset",
    "CheXmaskUIterableDataset",
    "check_images",
]

MissingPolicy = Literal["raise", "skip", "masks_only"]
MaskKind = Literal["hard", "soft", "both"]
CROP_SOURCES: tuple[str, ...] = tuple(name for name, info in REGISTRY.items() if info.crop_border)
"""Sources whose black borders were cropped before padding (SPEC section 4)."""

_ROW_COLUMNS = ("source", "image_id", "frame", "height", "width", "landmarks")
_ASPECT_TOLERANCE = 0.02


def _soft_masks(landmarks: np.ndarray, std: np.ndarray, height: int, width: int) -> np.ndarray:
    from chexmask_u_tools.masks.soft import soft_mask_organs

    return soft_mask_organs(landmarks, std, height, width)


def _taps(n_out: int, frame: int, offset: int, length: int, factor: int) -> tuple[np.ndarray, ...]:
    """Bilinear taps along one axis, for :func:`_resample`.

    Output pixel ``X`` reads frame coordinate ``(X + 0.5) * frame / n_out - 0.5``
    clamped to ``[0, frame - 1]`` (half-pixel centres, the rule of OpenCV
    ``INTER_LINEAR`` and torch ``align_corners=False``).  The image covers frame
    pixels ``[offset, offset + length)`` at full resolution, zeros elsewhere, and
    is stored at ``1 / factor``: full-resolution ``u`` is stored ``(u + 0.5) / factor - 0.5``
    (the centre of a partial last block is its own).

    Returns ``(i0, i1, w0, w1)``: indices into the stored axis (clipped to it)
    and float32 weights, zero for taps in the padding.
    """
    stored = -(-length // factor)
    src = np.clip((np.arange(n_out) + 0.5) * (frame / n_out) - 0.5, 0.0, frame - 1.0)
    u = src - offset
    r = (u + 0.5) / factor - 0.5
    partial = length - (stored - 1) * factor  # pixels averaged into the last stored one
    if partial < factor and stored >= 2:
        # The last stored pixel is centred on its ``partial`` pixels, not on a
        # whole block: interpolate towards that centre, and fade into the
        # padding around the true edge ``length - 0.5``.
        before = (stored - 2) * factor + (factor - 1) / 2
        last = (stored - 1) * factor + (partial - 1) / 2
        r = np.where(u > before, stored - 2 + (u - before) / (last - before), r)
        r = np.where(u > last, stored - 1 + (u - last) / partial, r)
    # Where the image reaches the frame's edge the full-resolution path clamps
    # there; keep that instead of fading into padding that does not exist.
    if offset == 0:
        r = np.maximum(r, 0.0)
    if offset + length == frame:
        r = np.minimum(r, stored - 1.0)
    r0 = np.floor(r)
    lam = r - r0
    i0 = r0.astype(np.int64)
    i1 = i0 + 1
    w0 = np.where((i0 >= 0) & (i0 < stored), 1.0 - lam, 0.0).astype(np.float32)
    w1 = np.where((i1 >= 0) & (i1 < stored), lam, 0.0).astype(np.float32)
    return np.clip(i0, 0, stored - 1), np.clip(i1, 0, stored - 1), w0, w1


def _resample(
    image: np.ndarray,
    factor: int,
    out: tuple[int, int],
    frame: tuple[int, int],
    offset: tuple[int, int],
    length: tuple[int, int],
) -> np.ndarray:
    """Bilinear resize of a (padded) image stored at ``1 / factor`` straight to the output.

    ``image``: uint8 (ceil(h / factor), ceil(w / factor)) of a full-resolution
    (h, w) = ``length`` image placed at ``offset`` (top, left) in a zero frame
    of ``frame`` (height, width) full-resolution pixels, e.g. the centred
    square.  Returns uint8 ``out`` (height, width), rounded, the frame mapped
    onto the output as the full-resolution resize would (:func:`_taps`),
    without building the padded frame.
    """
    y0, y1, wy0, wy1 = (torch.from_numpy(a) for a in _taps(out[0], frame[0], offset[0], length[0], factor))
    x0, x1, wx0, wx1 = (torch.from_numpy(a) for a in _taps(out[1], frame[1], offset[1], length[1], factor))
    # Rows first (the output has fewer rows than the stored image), then columns;
    # torch's index_select gathers about twice as fast as numpy fancy indexing.
    stored = torch.from_numpy(np.ascontiguousarray(image))
    rows = stored.index_select(0, y0).float().mul_(wy0[:, None])
    rows.add_(stored.index_select(0, y1).float().mul_(wy1[:, None]))
    pixels = rows.index_select(1, x0).mul_(wx0)
    pixels.add_(rows.index_select(1, x1).mul_(wx1))
    return pixels.round_().to(torch.uint8).numpy()


class _SampleBuilder:
    """The per-row work shared by both datasets (picklable; no torch state)."""

    def __init__(
        self,
        resolver: ImageResolver | None,
        *,
        frame: str,
        size: int | None,
        masks: MaskKind,
        pixel_weights: Mapping[str, Any] | bool,
        node_weight_options: Mapping[str, Any] | None,
        missing: MissingPolicy,
        size_mismatch: str,
        crop_border: bool | None,
        antialias: bool,
        transform: Callable[[dict], dict] | None,
        fast_decode: bool = True,
        image_dtype: str = "float32",
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        if frame not in FRAMES:
            raise InputError(f"frame must be one of {FRAMES}, got {frame!r}")
        if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 8 <= size <= 8192):
            raise InputError(f"size must be an integer in 8..8192 (or None for the original frame), got {size!r}")
        if size is None and frame == "preprocessed":
            size = PREPROCESSED_SIZE
        if masks not in ("hard", "soft", "both"):
            raise InputError(f"masks must be 'hard', 'soft' or 'both', got {masks!r}")
        if missing not in ("raise", "skip", "masks_only"):
            raise InputError(f"missing must be 'raise', 'skip' or 'masks_only', got {missing!r}")
        if image_dtype not in ("float32", "uint8"):
            raise InputError(f"image_dtype must be 'float32' or 'uint8', got {image_dtype!r}")
        if size_mismatch not in ("raise", "rescale"):
            raise InputError(f"size_mismatch must be 'raise' or 'rescale', got {size_mismatch!r}")
        if resolver is None and missing != "masks_only":
            raise InputError("give image roots (or a resolver), or use missing='masks_only' to train on masks alone")
        self.resolver = resolver
        self.frame = frame
        self.size = None if size is None else int(size)
        self.masks = masks
        self.pixel_options = dict(pixel_weights) if isinstance(pixel_weights, Mapping) else ({} if pixel_weights else None)
        self.node_options = dict(node_weight_options or {})
        self.missing = missing
        self.size_mismatch = size_mismatch
        self.crop_border = crop_border
        self.antialias = antialias
        self.transform = transform
        self.fast_decode = bool(fast_decode)
        self.image_dtype = image_dtype
        self.cache_dir = None if cache_dir is None else Path(cache_dir)

    # ------------------------------------------------------------ image
    def _load(self, source: str, image_id: str) -> tuple[tuple[np.ndarray, int, tuple[int, int]] | None, str | None]:
        if self.resolver is None:
            return None, None
        path, tried = self.resolver.locate(source, image_id)
        if path is None:
            if self.missing == "raise":
                raise MissingImageError(source, image_id, tried)
            return None, None
        return self.read(path), str(path)

    def read(self, path: str | os.PathLike) -> tuple[np.ndarray, int, tuple[int, int]]:
        """``(pixels, k, (H, W))``: the image decoded at ``1 / k`` of its full (H, W) resolution."""
        reduce = self.fast_decode and not self.antialias and self.size is not None
        if self.cache_dir is None:
            return self._decode(path, reduce)
        # The key holds everything the decoded pixels depend on, so an edited
        # image or other dataset options never read a stale entry.
        stat = os.stat(path)
        mode = f"{self.size},{self.frame}" if reduce else "full"
        key = hashlib.sha256(f"{os.path.abspath(path)}\0{stat.st_mtime_ns}\0{stat.st_size}\0{mode}".encode()).hexdigest()
        entry = self.cache_dir / key[:2] / f"{key}.npz"
        try:
            with np.load(entry, allow_pickle=False) as stored:
                k, height, width = (int(v) for v in stored["meta"])
                return stored["pixels"], k, (height, width)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # absent or unreadable: decode again
            pass
        decoded = self._decode(path, reduce)
        pixels, k, (height, width) = decoded
        entry.parent.mkdir(parents=True, exist_ok=True)
        temp = entry.with_name(f".{entry.name}.{os.getpid()}.part")
        with open(temp, "wb") as handle:
            np.savez(handle, pixels=pixels, meta=np.array([k, height, width], dtype=np.int64))
        os.replace(temp, entry)  # atomic: other workers see the whole entry or none
        return decoded

    def _decode(self, path: str | os.PathLike, reduce: bool) -> tuple[np.ndarray, int, tuple[int, int]]:
        if reduce:
            return read_image_reduced(path, self.size, square=self.frame == "preprocessed")
        pixels = read_image(path)
        return pixels, 1, pixels.shape

    def _resize(self, square: np.ndarray, height: int, width: int) -> np.ndarray:
        """uint8 (h, w) -> uint8 (height, width), rounded."""
        if square.shape == (height, width):
            return square
        if self.antialias:
            from PIL import Image

            return np.asarray(Image.fromarray(square).resize((width, height), Image.BILINEAR), dtype=np.uint8)
        return resize_levels(torch.from_numpy(np.ascontiguousarray(square)), (height, width)).to(torch.uint8).numpy()

    def _image_tensor(self, pixels: np.ndarray) -> torch.Tensor:
        """uint8 (H, W) -> (1, H, W) tensor of ``image_dtype`` (float32: levels / 255)."""
        if self.image_dtype == "uint8":
            return torch.from_numpy(np.ascontiguousarray(pixels))[None]
        return torch.from_numpy(pixels.astype(np.float32) / np.float32(255.0))[None]

    # ------------------------------------------------------------ geometry
    def _original_size(self, frame: str, height: int | None, width: int | None) -> tuple[int, int] | None:
        if frame == "original":
            return (height, width) if height and width else None
        if height and width and (height, width) != (PREPROCESSED_SIZE, PREPROCESSED_SIZE):
            return height, width
        return None

    def _needs_rescale(self, stated: tuple[int, int], actual: tuple[int, int], image_id: str, path: str | None) -> bool:
        """False when the sizes agree, True under 'rescale' with the same aspect ratio, else raise."""
        if tuple(stated) == tuple(actual):
            return False
        (sh, sw), (ah, aw) = stated, actual
        same_aspect = abs((ah / aw) / (sh / sw) - 1.0) <= _ASPECT_TOLERANCE
        if self.size_mismatch == "rescale" and same_aspect:
            return True
        hint = (
            "; its aspect ratio matches, so size_mismatch='rescale' would scale the landmarks to it"
            if same_aspect
            else "; the aspect ratio differs too, so this is probably not the row's image"
        )
        raise ImageError(f"image {path} for id {image_id!r} is {aw}x{ah} (WxH) but the row says {sw}x{sh}{hint}")

    def build(
        self,
        source: str,
        image_id: str,
        row_frame: str,
        height: int | None,
        width: int | None,
        landmarks: np.ndarray,
        std: np.ndarray | None,
        sample_weight: float,
        mask_valid: np.ndarray,
        row: int,
        path: str | os.PathLike | None = None,
    ) -> dict[str, Any]:
        if path is None:
            decoded, path = self._load(source, image_id)
        else:
            decoded, path = self.read(path), str(path)
        stated = self._original_size(row_frame, height, width)
        landmarks = landmarks.astype(np.float64)
        std = None if std is None else std.astype(np.float64)
        if decoded is not None:
            image, reduction, actual = decoded
            if stated is not None and self._needs_rescale(stated, actual, image_id, path) and row_frame == "original":
                factor = np.array([actual[1] / stated[1], actual[0] / stated[0]])
                landmarks = landmarks * factor
                std = None if std is None else std * factor
            original = actual
        else:
            image, original = None, stated
        if original is None and (self.frame == "original" or row_frame == "original"):
            raise ImageError(
                f"no image for {source} id {image_id!r} and the row does not state its original size; "
                "the original frame cannot be built from the masks alone"
            )
        oh, ow = original if original is not None else (0, 0)
        # Node weights read the std in 1024-frame pixels, the unit of the released
        # std and of the rules, whatever the output frame and size.
        if std is None:
            weights_of_nodes = np.ones(N_NODES, dtype=np.float32)
        else:
            std_1024 = std if row_frame == "preprocessed" else std_to_preprocessed_frame(std, oh, ow)
            weights_of_nodes = node_weights(std_1024, **self.node_options)

        landmarks, std, (out_h, out_w) = landmarks_on_image(
            landmarks, std, row_frame=row_frame, original_size=original, frame=self.frame, size=self.size
        )

        if image is not None:
            height, width = actual
            if self.frame == "preprocessed":
                crop = self.crop_border if self.crop_border is not None else source in CROP_SOURCES
                if crop:
                    image, (top, left, kept_h, kept_w) = crop_black_border(image)
                    # Full-resolution extent of the kept k x k blocks (the last ones may be partial).
                    height = min((top + kept_h) * reduction, height) - top * reduction
                    width = min((left + kept_w) * reduction, width) - left * reduction
                if reduction > 1:
                    side, pad_top, pad_left = pad_offsets(height, width)
                    pixels = _resample(image, reduction, (out_h, out_w), (side, side), (pad_top, pad_left), (height, width))
                else:
                    square, _ = pad_to_square(image)
                    pixels = self._resize(square, out_h, out_w)
            elif reduction > 1:
                pixels = _resample(image, reduction, (out_h, out_w), (height, width), (0, 0), (height, width))
            else:
                pixels = self._resize(image, out_h, out_w)
        else:
            pixels = np.zeros((out_h, out_w), dtype=np.uint8)

        hard = rasterize_organs(landmarks, out_h, out_w)
        has_std = std is not None
        need_soft = self.masks in ("soft", "both") or self.pixel_options is not None
        soft = None
        if need_soft:
            soft = _soft_masks(landmarks, std, out_h, out_w) if has_std else hard.astype(np.float32)
        sample: dict[str, Any] = {
            "image": self._image_tensor(pixels),
            "has_image": torch.tensor(image is not None),
            "masks": torch.from_numpy(soft if self.masks == "soft" else hard),
            "landmarks": torch.from_numpy(landmarks.astype(np.float32)),
            "std": torch.from_numpy((std if has_std else np.full((N_NODES, 2), np.nan)).astype(np.float32)),
            "has_std": torch.tensor(has_std),
            "mask_valid": torch.from_numpy(np.asarray(mask_valid, dtype=bool).copy()),
            "sample_weight": torch.tensor(float(sample_weight), dtype=torch.float32),
            "node_weight": torch.from_numpy(weights_of_nodes),
            "original_size": torch.tensor([oh, ow], dtype=torch.int64),
            "source": source,
            "image_id": image_id,
            "row": torch.tensor(row, dtype=torch.int64),
        }
        if self.masks == "both":
            sample["soft_masks"] = torch.from_numpy(soft)
        if self.pixel_options is not None:
            sample["pixel_weight"] = torch.from_numpy(np.asarray(soft_pixel_weights(soft, **self.pixel_options), dtype=np.float32))
        if self.transform is not None:
            sample = self.transform(sample)
        return sample


class _Rows:
    """A collected chunk of the table as numpy arrays, ready for :class:`_SampleBuilder`."""

    def __init__(self, frame: pl.DataFrame, weights: np.ndarray, rows: np.ndarray) -> None:
        self.sources = frame["source"].to_list()
        self.ids = frame["image_id"].to_list()
        self.frames = frame["frame"].to_list()
        self.heights = frame["height"].to_list()
        self.widths = frame["width"].to_list()
        self.landmarks = frame["landmarks"].to_numpy()
        if "landmarks_std" in frame.columns:
            self.has_std = frame["landmarks_std"].is_not_null().to_numpy()
            self.std = frame["landmarks_std"].to_numpy()
        else:
            self.has_std = np.zeros(frame.height, dtype=bool)
            self.std = np.zeros((frame.height, N_NODES, 2), dtype=np.float32)
        names = mask_valid_columns()
        self.mask_valid = np.stack(
            [
                frame[names[o]].fill_null(True).to_numpy() if names[o] in frame.columns else np.ones(frame.height, dtype=bool)
                for o in ORGANS
            ],
            axis=1,
        ) if frame.height else np.ones((0, 3), dtype=bool)
        self.weights = weights
        self.rows = rows

    def __len__(self) -> int:
        return len(self.ids)

    def args(self, i: int) -> tuple:
        return (
            self.sources[i],
            self.ids[i],
            self.frames[i],
            self.heights[i],
            self.widths[i],
            self.landmarks[i],
            self.std[i] if self.has_std[i] else None,
            float(self.weights[i]),
            self.mask_valid[i],
            int(self.rows[i]),
        )


def _prepare_table(table: pl.DataFrame | pl.LazyFrame, rules: Iterable[Rule | str]) -> tuple[pl.LazyFrame, list[Rule]]:
    if not isinstance(table, (pl.DataFrame, pl.LazyFrame)):
        raise InputError(f"table must be a polars DataFrame or LazyFrame, got {type(table).__name__}")
    names = table.collect_schema().names()
    missing = [c for c in _ROW_COLUMNS if c not in names]
    if missing:
        raise InputError(f"table lacks columns {missing}; build it with read_table / scan_table")
    return table.lazy(), parse_rules(rules)


def _weight_expr(weighting: SampleWeighting | None) -> pl.Expr:
    base = weighting.expr() if weighting is not None and weighting.method != "none" else pl.lit(1.0)
    return (base * pl.col("rule_weight")).cast(pl.Float64).alias("sample_weight")


class CheXmaskUDataset(torch.utils.data.Dataset):
    """Map-style dataset of CheXmask-U rows joined to images (sample dict: module docstring).

    Parameters
    ----------
    table:
        Canonical table (``read_table`` / ``scan_table`` / ``load_sample``),
        eager or lazy; it is collected once, after the rules.
    images:
        Image roots per source (``{"MIMIC-CXR-JPG": "/data/mimic-cxr-jpg/2.0.0", ...}``),
        one folder for all sources, a ``resolver(source, image_id)`` callable,
        or an :class:`~chexmask_u_tools.images.resolver.ImageResolver`.  None only with
        ``missing="masks_only"``.
    frame, size:
        Output frame (``"preprocessed"``/``"original"``) and side ``S``.
    masks:
        ``"hard"``, ``"soft"`` or ``"both"``.  Soft masks are
        :func:`chexmask_u_tools.masks.soft.soft_mask_organs` of the output-frame
        landmarks and std (rows without std get their hard masks as 0/1 floats).
    rules:
        :class:`~chexmask_u_tools.select.rules.Rule` objects or their text forms.
    sample_weighting:
        How to turn uncertainty into ``sample_weight`` (None: 1, times the rules' weights).
    node_weighting:
        Keyword arguments of :func:`~chexmask_u_tools.select.weights.node_weights`.
    pixel_weights:
        False, True, or keyword arguments of
        :func:`~chexmask_u_tools.select.weights.soft_pixel_weights` (``floor``, ``power``, ``reduce``).
    missing, size_mismatch, crop_border, antialias, fast_decode, transform:
        See the module docstring.
    image_dtype:
        ``"float32"`` (levels / 255) or ``"uint8"`` (the same levels, a quarter
        of the bytes through the DataLoader's worker queues and the host-to-GPU
        copy; convert on the GPU, e.g. ``batch["image"].cuda(non_blocking=True).float().div_(255)``).
    cache_dir:
        Optional folder for decoded images: the first read of an image stores
        its decoded (reduced, with ``fast_decode``) pixels there as ``.npz``,
        later epochs load them instead of decoding (about ``(S / k)**2`` bytes
        per image, e.g. 0.3 MB at ``size=512``; ``fast_decode=False`` stores
        full-resolution images).  Entries are keyed by the file's absolute
        path, modification time and size and the decoding options, written
        atomically (safe with DataLoader workers), never evicted: delete the
        folder to reclaim the space.
    """

    def __init__(
        self,
        table: pl.DataFrame | pl.LazyFrame,
        images: ImageResolver | Mapping | str | Path | Callable | None = None,
        *,
        frame: Literal["preprocessed", "original"] = "preprocessed",
        size: int | None = 512,
        masks: MaskKind = "hard",
        rules: Iterable[Rule | str] = (),
        sample_weighting: SampleWeighting | None = None,
        node_weighting: Mapping[str, Any] | None = None,
        pixel_weights: Mapping[str, Any] | bool = False,
        missing: MissingPolicy = "raise",
        size_mismatch: Literal["raise", "rescale"] = "raise",
        crop_border: bool | None = None,
        antialias: bool = False,
        transform: Callable[[dict], dict] | None = None,
        fast_decode: bool = True,
        image_dtype: Literal["float32", "uint8"] = "float32",
        cache_dir: str | Path | None = None,
    ) -> None:
        lazy, rules = _prepare_table(table, rules)
        self.resolver = as_resolver(images)
        self.builder = _SampleBuilder(
            self.resolver,
            frame=frame,
            size=size,
            masks=masks,
            pixel_weights=pixel_weights,
            node_weight_options=node_weighting,
            missing=missing,
            size_mismatch=size_mismatch,
            crop_border=crop_border,
            antialias=antialias,
            transform=transform,
            fast_decode=fast_decode,
            image_dtype=image_dtype,
            cache_dir=cache_dir,
        )
        kept = apply_rules(lazy, rules).with_columns(_weight_expr(sample_weighting)).collect()
        if kept["sample_weight"].null_count():
            raise InputError(
                f"{kept['sample_weight'].null_count()} rows have no {sample_weighting.stat!r} for the sample weights; "
                "set SampleWeighting(missing=...) to give them a weight"
            )
        self.skipped = 0
        self.paths: list[Path | None] | None = None
        if self.resolver is not None:
            self.resolver.prepare(kept["source"].unique().to_list())
        if missing == "skip":
            report = check_images(kept, self.resolver)
            keep = np.array([p is not None for p in report.paths], dtype=bool)
            self.skipped = int((~keep).sum())
            kept = kept.filter(pl.Series(keep))
            self.paths = [p for p in report.paths if p is not None]
            if self.skipped:
                warnings.warn(f"CheXmaskUDataset: skipped {self.skipped} of {len(keep)} rows without an image on disk", stacklevel=2)
        self.table = kept
        self._rows = _Rows(kept, kept["sample_weight"].to_numpy(), np.arange(kept.height))

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} rows")
        index = int(index) % len(self)
        args = self._rows.args(index)
        if self.paths is not None:
            path = self.paths[index]
            return self.builder.build(*args, path=path)
        return self.builder.build(*args)

    def check_images(self, max_examples: int = 5) -> ImageCheck:
        """How many rows have their image on disk (``str()`` of the result is a report)."""
        if self.resolver is None:
            raise InputError("this dataset has no image roots to check")
        return check_images(self.table, self.resolver, max_examples=max_examples)


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
        else:
            rank = 0 if rank is None else rank
            world_size = 1 if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise InputError(f"rank must lie in [0, world_size), got rank={rank}, world_size={world_size}")
    return int(rank), int(world_size)


class CheXmaskUIterableDataset(torch.utils.data.IterableDataset):
    """Streamed, sharded version of :class:`CheXmaskUDataset` (same samples; sharding: module docstring).

    Parameters (besides those of :class:`CheXmaskUDataset`)
    ----------
    block_rows:
        Rows of the source table per block (the unit of sharding and of reading).
    shuffle, seed:
        Shuffle blocks and rows within blocks, per epoch (see :meth:`set_epoch`).
    rank, world_size:
        Override the ``torch.distributed`` rank and world size (e.g. to shard
        by hand or to test); default: from ``torch.distributed`` when
        initialised, else a single process.

    ``row`` in the samples is the row's index in the source table.  Sample
    weights are computed once over the whole filtered table (so ``rank`` and
    ``normalize`` weightings match the map-style dataset).
    """

    def __init__(
        self,
        table: pl.DataFrame | pl.LazyFrame,
        images: ImageResolver | Mapping | str | Path | Callable | None = None,
        *,
        frame: Literal["preprocessed", "original"] = "preprocessed",
        size: int | None = 512,
        masks: MaskKind = "hard",
        rules: Iterable[Rule | str] = (),
        sample_weighting: SampleWeighting | None = None,
        node_weighting: Mapping[str, Any] | None = None,
        pixel_weights: Mapping[str, Any] | bool = False,
        missing: MissingPolicy = "raise",
        size_mismatch: Literal["raise", "rescale"] = "raise",
        crop_border: bool | None = None,
        antialias: bool = False,
        transform: Callable[[dict], dict] | None = None,
        fast_decode: bool = True,
        image_dtype: Literal["float32", "uint8"] = "float32",
        cache_dir: str | Path | None = None,
        block_rows: int = 256,
        shuffle: bool = False,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        lazy, rules = _prepare_table(table, rules)
        if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)) or block_rows < 1:
            raise InputError(f"block_rows must be a positive integer, got {block_rows!r}")
        self.resolver = as_resolver(images)
        self.builder = _SampleBuilder(
            self.resolver,
            frame=frame,
            size=size,
            masks=masks,
            pixel_weights=pixel_weights,
            node_weight_options=node_weighting,
            missing=missing,
            size_mismatch=size_mismatch,
            crop_border=crop_border,
            antialias=antialias,
            transform=transform,
            fast_decode=fast_decode,
            image_dtype=image_dtype,
            cache_dir=cache_dir,
        )
        self.table = lazy
        self.rules = rules
        self.block_rows = int(block_rows)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0
        self.rank, self.world_size = rank, world_size
        _rank_world(rank, world_size)
        # One pass over the small columns: the source row count, the kept rows'
        # sample weights (global, so rank/normalised weights are consistent),
        # the null-data checks of the rules and the sources to index.
        indexed = lazy.with_row_index("__row")
        kept = apply_rules(indexed, rules).with_columns(_weight_expr(sample_weighting))
        # An eager table is turned into arrays here, so that workers never run
        # polars (its thread pools do not survive a fork); a lazy scan is read
        # block by block in the workers (see __iter__).
        self._eager = isinstance(table, pl.DataFrame)
        kept = kept.collect() if self._eager else kept.select("__row", "source", "sample_weight").collect()
        if kept["sample_weight"].null_count():
            raise InputError(
                f"{kept['sample_weight'].null_count()} rows have no {sample_weighting.stat!r} for the sample weights; "
                "set SampleWeighting(missing=...) to give them a weight"
            )
        self.n_source_rows = int(lazy.select(pl.len()).collect().item())
        self.n_rows = kept.height
        self._weights = np.full(self.n_source_rows, np.nan)
        self._weights[kept["__row"].to_numpy()] = kept["sample_weight"].to_numpy()
        self._materialized = _Rows(kept, kept["sample_weight"].to_numpy(), kept["__row"].to_numpy()) if self._eager else None
        if self.resolver is not None:
            self.resolver.prepare(kept["source"].unique().to_list())
        self._owner_pid = os.getpid()
        self._unpickled = False

    def __setstate__(self, state: dict) -> None:
        # Reached only when the dataset was pickled (spawn / forkserver workers).
        self.__dict__.update(state)
        self._unpickled = True

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffle order (call at the start of each epoch, on every rank)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Rows passing the rules, summed over all shards (what one epoch yields in total)."""
        return self.n_rows

    def shard_blocks(self, shard: int, n_shards: int) -> np.ndarray:
        """Indices of the source-table blocks read by one shard, in reading order."""
        n_blocks = math.ceil(self.n_source_rows / self.block_rows)
        order = np.arange(n_blocks)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(n_blocks)
        return order[shard::n_shards]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = _rank_world(self.rank, self.world_size)
        shard, n_shards = rank * n_workers + worker, world * n_workers
        skipped = 0
        if not self._eager and os.getpid() != self._owner_pid and not self._unpickled:
            raise InputError(
                "a lazily scanned table cannot be read in forked DataLoader workers (polars is not fork-safe); "
                "pass multiprocessing_context='spawn' (or 'forkserver') to the DataLoader, or give a collected DataFrame"
            )
        for block in self.shard_blocks(shard, n_shards):
            start = int(block) * self.block_rows
            if self._materialized is not None:
                chunk = self._materialized
                lo, hi = np.searchsorted(chunk.rows, [start, start + self.block_rows])
                indices = np.arange(lo, hi)
            else:
                part = apply_rules(
                    self.table.with_row_index("__row").slice(start, self.block_rows), self.rules, check_missing=False
                ).collect()
                rows = part["__row"].to_numpy()
                chunk = _Rows(part, self._weights[rows], rows)
                indices = np.arange(len(chunk))
            order = indices
            if self.shuffle:
                order = np.random.default_rng([self.seed, self.epoch, int(block)]).permutation(indices)
            for i in order:
                args = chunk.args(int(i))
                if self.builder.missing == "skip":
                    path, _ = self.resolver.locate(args[0], args[1])
                    if path is None:
                        skipped += 1
                        continue
                    yield self.builder.build(*args, path=path)
                else:
                    yield self.builder.build(*args)
        if skipped:
            warnings.warn(f"CheXmaskUIterableDataset shard {shard}/{n_shards}: skipped {skipped} rows without an image on disk")

    def check_images(self, max_examples: int = 5) -> ImageCheck:
        """How many kept rows have their image on disk (``str()`` of the result is a report)."""
        if self.resolver is None:
            raise InputError("this dataset has no image roots to check")
        kept = apply_rules(self.table, self.rules, check_missing=False)
        return check_images(kept, self.resolver, max_examples=max_examples)
