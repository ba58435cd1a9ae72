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

Rows without std (e.g. the released CheXmask files, which have none): with
``masks="soft"`` or ``"both"`` the dataset refuses them when built,
naming how many rows lack ``landmarks_std``, unless ``soft_missing="hard"``
accepts their hard masks as 0/1 floats (``has_std`` False marks them).  Their
``node_weight`` is all ones and their ``pixel_weight`` (from the 0/1 masks)
is 1 everywhere: such rows are not down-weighted anywhere.

With ``fields=(...)`` the sample also holds those table columns as Python
values (null: None, which the default collate cannot batch: filter such rows
or pass a ``collate_fn``), and with ``labels=(...)`` a float32 ``labels``
``(L,)`` and a bool ``label_mask`` ``(L,)`` (policy for uncertain -1 and null:
:mod:`chexmask_u_tools.train.options`).

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

Image roots and missing images
------------------------------
Checked when the dataset is built, not mid-epoch: every root folder must
exist (:class:`~chexmask_u_tools.errors.InputError` naming the key and the
path), and a roots key must be one of the five sources (any spelling) or a
source label of the table; a misspelt one (``"CheXpertt"``) is refused with
the closest valid name.

``missing="raise"`` (default): every table source needs a root (or a
resolver callable).  The map-style dataset then locates every row's image when
built, which costs the file look-ups of one epoch once (one to a few ``stat``
calls per row, slower on a network file system) and keeps the paths, so
epochs do not look them up again; a missing
image raises :class:`~chexmask_u_tools.images.resolver.MissingImageError`
counting the missing rows per source and listing every path tried for the
first one.  The iterable dataset checks the roots only (locating every row
would read the whole scan up front) and raises the same error when it reaches
the row.  ``"skip"``: the map-style dataset resolves every row when built and
drops rows without an image (count in ``.skipped``, and a warning); the
iterable one skips them while streaming (count per worker in a warning at the
end of its pass).  ``"masks_only"``: the sample keeps masks, landmarks and
weights, ``image`` is zeros and ``has_image`` False (the original frame then
needs the row's own original size).

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
raises a clear error in forked workers.  Spawned workers receive the scan
pickled; polars pickles the Python functions in a scan (``scan_table`` of a
CSV checks its rows with one) with ``cloudpickle``, a core dependency.  The
map-style dataset collects its table when built and runs no polars in
workers, so any start method works.  Ranks may get slightly different numbers
of rows: under ``DistributedDataParallel`` bound the steps per epoch (or use the map-style
dataset with ``DistributedSampler``).  ``shuffle=True`` permutes the block
order (same permutation on every rank, seeded by ``seed`` and
:meth:`~CheXmaskUIterableDataset.set_epoch`) and the rows inside each block.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.images.resolver import (
    ImageCheck,
    ImageResolver,
    MissingImageError,
    as_resolver,
    check_images,
)
from chexmask_u_tools.select.rules import apply_rules
from chexmask_u_tools.select.weights import SampleWeighting
from chexmask_u_tools.train.options import SampleOptions
from chexmask_u_tools.train.sample import (
    CROP_SOURCES,
    RowBlock,
    SampleBuilder,
    check_sample_columns,
    label_values,
)

__all__ = [
    "CROP_SOURCES",
    "CheXmaskUDataset",
    "CheXmaskUIterableDataset",
    "SampleOptions",
    "check_images",
]

Images = ImageResolver | Mapping | str | Path | Callable | None


def _prepare_table(table: pl.DataFrame | pl.LazyFrame, options: SampleOptions) -> pl.LazyFrame:
    if not isinstance(table, (pl.DataFrame, pl.LazyFrame)):
        raise InputError(f"table must be a polars DataFrame or LazyFrame, got {type(table).__name__}")
    check_sample_columns(table.collect_schema().names(), options)
    return table.lazy()


def _weight_expr(weighting: SampleWeighting | None) -> pl.Expr:
    base = weighting.expr() if weighting is not None and weighting.method != "none" else pl.lit(1.0)
    return (base * pl.col("rule_weight")).cast(pl.Float64).alias("sample_weight")


def _check_weights(kept: pl.DataFrame, weighting: SampleWeighting | None) -> None:
    if kept["sample_weight"].null_count():
        raise InputError(
            f"{kept['sample_weight'].null_count()} rows have no {weighting.stat!r} for the sample weights; "
            "set SampleWeighting(missing=...) to give them a weight"
        )


def _check_roots(resolver: ImageResolver | None, labels: list[str], options: SampleOptions) -> None:
    """Refuse misspelt roots keys and, under ``missing="raise"``, sources without any root; build the listings."""
    if resolver is None:
        return
    resolver.check_labels(labels)
    if options.missing == "raise":
        uncovered = resolver.sources_without_roots(labels)
        if uncovered:
            raise InputError(
                f"no image root for the table's sources {uncovered}; add them to images= "
                "(or pass missing='skip' / missing='masks_only' to train without those images)"
            )
    resolver.prepare(labels)


def _without_std(names: list[str]) -> pl.Expr:
    """True for rows without ``landmarks_std`` (all rows when the table has no such column)."""
    present = pl.col("landmarks_std").is_null() if "landmarks_std" in names else pl.lit(True)
    return present.alias("__without_std")


def _check_soft_masks(kept: pl.DataFrame, options: SampleOptions) -> None:
    """Refuse soft masks for rows without std unless ``soft_missing="hard"`` accepts hard 0/1 masks for them."""
    if options.masks not in ("soft", "both") or options.soft_missing == "hard":
        return
    without = kept.filter(pl.col("__without_std"))
    if without.height:
        first = without.row(0, named=True)
        example = f"{first['source']} {first['image_id']!r}" if "image_id" in first else f"{first['source']} row {first['__row']}"
        raise InputError(
            f"masks={options.masks!r} needs landmarks_std, but {without.height} of {kept.height} rows have none (e.g. {example}), "
            "so their soft masks would silently be hard 0/1 masks; pass soft_missing='hard' to accept that, "
            "use masks='hard', or filter those rows out first (pl.col('landmarks_std').is_not_null())"
        )


def _missing_note(report: ImageCheck) -> str:
    per_source = ", ".join(f"{s}: {t - f} of {t}" for s, (f, t) in sorted(report.per_source.items()) if f < t)
    return (
        f"{report.missing} of {report.total} rows have no image on disk ({per_source}); fix the image roots, "
        "or pass missing='skip' (drop those rows) or missing='masks_only' (keep their masks)"
    )


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
    options:
        A :class:`~chexmask_u_tools.train.options.SampleOptions` (default: all defaults).
    **keywords:
        Any :class:`~chexmask_u_tools.train.options.SampleOptions` field, replacing
        that value of ``options``: ``frame``, ``size``, ``masks``, ``soft_missing``,
        ``rules``, ``sample_weighting``, ``node_weighting``, ``pixel_weights``,
        ``missing``, ``size_mismatch``, ``crop_border``, ``antialias``,
        ``transform``, ``fast_decode``, ``image_dtype``, ``cache_dir``,
        ``fields``, ``labels``, ``label_policy``.  In short:

        - ``frame``, ``size``: output frame (``"preprocessed"``/``"original"``) and side ``S``;
        - ``masks``: ``"hard"``, ``"soft"`` or ``"both"``; soft masks are
          :func:`chexmask_u_tools.masks.soft.soft_mask_organs` of the output-frame
          landmarks and std;
        - ``rules``: :class:`~chexmask_u_tools.select.rules.Rule` objects or their text forms;
        - ``sample_weighting``: how to turn uncertainty into ``sample_weight``
          (None: 1, times the rules' weights);
        - ``node_weighting``: keyword arguments of :func:`~chexmask_u_tools.select.weights.node_weights`;
        - ``pixel_weights``: False, True, or keyword arguments of
          :func:`~chexmask_u_tools.select.weights.soft_pixel_weights` (``floor``, ``power``, ``reduce``);
        - ``image_dtype``: ``"float32"`` (levels / 255) or ``"uint8"`` (the same
          levels, a quarter of the bytes through the DataLoader's worker queues
          and the host-to-GPU copy; convert on the GPU, e.g.
          ``batch["image"].cuda(non_blocking=True).float().div_(255)``);
        - ``cache_dir``: optional folder for decoded images
          (:class:`~chexmask_u_tools.train.decode_cache.DecodeCache`): the first
          read of an image stores its decoded (reduced, with ``fast_decode``)
          pixels there as ``.npz``, later epochs load them instead of decoding
          (about ``(S / k)**2`` bytes per image, e.g. 0.3 MB at ``size=512``;
          ``fast_decode=False`` stores full-resolution images).  Entries are
          keyed by the file's absolute path, modification time and size and the
          decoding options, written atomically (safe with DataLoader workers),
          never evicted: delete the folder to reclaim the space;
        - ``missing``, ``size_mismatch``, ``crop_border``, ``antialias``,
          ``fast_decode``, ``transform``, ``soft_missing``, ``fields``,
          ``labels``, ``label_policy``: see the module docstring.

    Examples
    --------
    Four sample rows, with synthetic stand-in images written to a temporary folder:

    >>> import tempfile
    >>> import polars as pl
    >>> import chexmask_u_tools as cxu
    >>> from chexmask_u_tools.testing.images import write_demo_images
    >>> table = cxu.load_sample().filter(pl.col("source") == "ChestX-ray8").head(4)
    >>> roots = write_demo_images(table, tempfile.mkdtemp())  # {"ChestX-ray8": folder}
    >>> dataset = cxu.CheXmaskUDataset(table, roots, size=64, rules=["image.mean<=10"])
    >>> len(dataset)
    3
    >>> sample = dataset[0]
    >>> sample["image"].shape, sample["image"].dtype, sample["masks"].shape, sample["masks"].dtype
    (torch.Size([1, 64, 64]), torch.float32, torch.Size([3, 64, 64]), torch.bool)
    >>> sample["landmarks"].shape, sample["source"], sample["original_size"].tolist()
    (torch.Size([120, 2]), 'ChestX-ray8', [256, 256])
    """

    def __init__(
        self,
        table: pl.DataFrame | pl.LazyFrame,
        images: Images = None,
        *,
        options: SampleOptions | None = None,
        **keywords: Any,
    ) -> None:
        self.options = options = SampleOptions.merge(options, keywords)
        lazy = _prepare_table(table, options)
        self.resolver = as_resolver(images)
        self.builder = SampleBuilder(self.resolver, options)
        names = lazy.collect_schema().names()
        kept = apply_rules(lazy, options.rules).with_columns(_weight_expr(options.sample_weighting), _without_std(names)).collect()
        _check_weights(kept, options.sample_weighting)
        _check_soft_masks(kept, options)
        kept = kept.drop("__without_std")
        self.skipped = 0
        self.paths: list[Path | None] | None = None
        _check_roots(self.resolver, kept["source"].unique().to_list(), options)
        if options.missing in ("raise", "skip"):
            # Every row is located now (the look-ups an epoch would make, once),
            # so that a missing image fails here and not hours into training;
            # the paths are kept, so epochs do not look them up again.
            report = check_images(kept, self.resolver)
            if report.missing and options.missing == "raise":
                source, image_id, tried = report.examples[0]
                raise MissingImageError(source, image_id, tried, note=_missing_note(report))
            keep = np.array([p is not None for p in report.paths], dtype=bool)
            self.skipped = int((~keep).sum())
            self.paths = [p for p in report.paths if p is not None]
            if self.skipped:
                kept = kept.filter(pl.Series(keep))
                warnings.warn(f"CheXmaskUDataset: skipped {self.skipped} of {len(keep)} rows without an image on disk", stacklevel=2)
        self.table = kept
        self._rows = RowBlock(kept, kept["sample_weight"].to_numpy(), np.arange(kept.height), options)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} rows")
        index = int(index) % len(self)
        path = None if self.paths is None else self.paths[index]
        return self.builder.build(self._rows.record(index), path)

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

    Parameters (besides ``table``, ``images``, ``options`` and the sample options of :class:`CheXmaskUDataset`)
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

    Examples
    --------
    >>> import tempfile
    >>> import polars as pl
    >>> import torch
    >>> import chexmask_u_tools as cxu
    >>> from chexmask_u_tools.testing.images import write_demo_images
    >>> table = cxu.load_sample().filter(pl.col("source") == "ChestX-ray8").head(4)
    >>> roots = write_demo_images(table, tempfile.mkdtemp())
    >>> stream = cxu.CheXmaskUIterableDataset(table, roots, size=64, masks="soft", rules=["image.mean<=10"], block_rows=2)
    >>> len(stream), [int(sample["row"]) for sample in stream]  # row 3 fails the rule
    (3, [0, 1, 2])
    >>> batch = next(iter(torch.utils.data.DataLoader(stream, batch_size=2)))
    >>> batch["image"].shape, batch["masks"].dtype
    (torch.Size([2, 1, 64, 64]), torch.float32)
    """

    def __init__(
        self,
        table: pl.DataFrame | pl.LazyFrame,
        images: Images = None,
        *,
        options: SampleOptions | None = None,
        block_rows: int = 256,
        shuffle: bool = False,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        **keywords: Any,
    ) -> None:
        super().__init__()
        self.options = options = SampleOptions.merge(options, keywords)
        lazy = _prepare_table(table, options)
        if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)) or block_rows < 1:
            raise InputError(f"block_rows must be a positive integer, got {block_rows!r}")
        self.resolver = as_resolver(images)
        self.builder = SampleBuilder(self.resolver, options)
        self.table = lazy
        self.rules = list(options.rules)
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
        names = lazy.collect_schema().names()
        kept = apply_rules(indexed, self.rules).with_columns(_weight_expr(options.sample_weighting), _without_std(names))
        # An eager table is turned into arrays here, so that workers never run
        # polars (its thread pools do not survive a fork); a lazy scan is read
        # block by block in the workers (see __iter__).
        self._eager = isinstance(table, pl.DataFrame)
        if self._eager:
            kept = kept.collect()
        else:
            # The label columns are small: read them now, so that a bad value fails here, not mid-epoch.
            label_columns = ["image_id", *options.labels] if options.labels else []
            kept = kept.select("__row", "source", "sample_weight", "__without_std", *label_columns).collect()
            label_values(kept, options.labels, kept["__row"].to_numpy())
        _check_weights(kept, options.sample_weighting)
        _check_soft_masks(kept, options)
        self.n_source_rows = int(lazy.select(pl.len()).collect().item())
        self.n_rows = kept.height
        self._weights = np.full(self.n_source_rows, np.nan)
        self._weights[kept["__row"].to_numpy()] = kept["sample_weight"].to_numpy()
        self._materialized = (
            RowBlock(kept, kept["sample_weight"].to_numpy(), kept["__row"].to_numpy(), options) if self._eager else None
        )
        _check_roots(self.resolver, kept["source"].unique().to_list(), options)
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

    def read_block(self, block: int) -> tuple[RowBlock, np.ndarray]:
        """The rows of one source-table block that pass the rules, and their positions in the returned block."""
        start = int(block) * self.block_rows
        if self._materialized is not None:
            chunk = self._materialized
            lo, hi = np.searchsorted(chunk.rows, [start, start + self.block_rows])
            return chunk, np.arange(lo, hi)
        part = apply_rules(self.table.with_row_index("__row").slice(start, self.block_rows), self.rules, check_missing=False).collect()
        rows = part["__row"].to_numpy()
        chunk = RowBlock(part, self._weights[rows], rows, self.options)
        return chunk, np.arange(len(chunk))

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
            chunk, order = self.read_block(int(block))
            if self.shuffle:
                order = np.random.default_rng([self.seed, self.epoch, int(block)]).permutation(order)
            for i in order:
                record = chunk.record(int(i))
                if self.options.missing == "skip":
                    path, _ = self.resolver.locate(record.source, record.image_id)
                    if path is None:
                        skipped += 1
                        continue
                    yield self.builder.build(record, path)
                else:
                    yield self.builder.build(record)
        if skipped:
            warnings.warn(f"CheXmaskUIterableDataset shard {shard}/{n_shards}: skipped {skipped} rows without an image on disk")

    def check_images(self, max_examples: int = 5) -> ImageCheck:
        """How many kept rows have their image on disk (``str()`` of the result is a report)."""
        if self.resolver is None:
            raise InputError("this dataset has no image roots to check")
        kept = apply_rules(self.table, self.rules, check_missing=False)
        return check_images(kept, self.resolver, max_examples=max_examples)
