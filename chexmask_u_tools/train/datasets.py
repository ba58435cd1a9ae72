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
                                        soft masks (float32) for ``masks="soft"``; absent
                                        for ``masks="device"`` (drawn in the training step
                                        by :class:`~chexmask_u_tools.masks.device.DeviceMasks`)
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

Inputs and the row store
------------------------
``table`` is an eager or lazy polars table (``read_table``, ``scan_table``,
``load_sample``), a pandas DataFrame, a Hugging Face ``datasets.Dataset``
(``to_hf_dataset``, ``load_dataset``, ``load_from_disk``), or a path: a cache
folder (``build_cache`` / ``chexmask-u cache``) or anything
:func:`~chexmask_u_tools.hub.inputs.open_table` opens.  Whatever it is, it
becomes one mapped row store (:mod:`chexmask_u_tools.train.rowstore`) when the
dataset is built: two passes over the input (the rules and sample weights over
the small columns, then the kept rows' landmarks, std, ids and the asked-for
fields and labels, streamed in batches), after which every sample reads the
mapped columns.  Nothing of the table stays in the heap, and DataLoader
workers (fork, spawn or forkserver) map the same pages: a pickled dataset holds
the store's path, not its rows.  A ``datasets.Dataset`` is read through
:func:`~chexmask_u_tools.io.hf.scan_hf_dataset`: each pass converts a batch at
a time of the columns it needs from the dataset's Arrow table (memory-mapped
for one backed by cache files), never the whole dataset.

Where the store lives, and whether later datasets reuse it, depends on the
input's identity (what the store's key covers, checked whenever a store is
opened): a cache given as its folder (``CheXmaskUDataset("path/to/cache", ...)``)
keeps it beside the cache (``<cache>/rowstore/``); a table file or folder
given as its path (size, ``mtime_ns`` and inode of each data file) and a
``datasets.Dataset`` backed by cache files (its fingerprint and its files)
keep it under :func:`~chexmask_u_tools.train.rowstore.default_store_root`
(``$CHEXMASK_U_CACHE/rowstore``, by default ``~/.cache/chexmask-u-tools/rowstore``);
``store_dir=`` puts it elsewhere.  Later datasets with the same input, rules
and columns open it in milliseconds.  An input changed under a store (a cache
rebuilt, a file rewritten) is refused (:class:`~chexmask_u_tools.errors.FileReadError`)
in every process that maps it.  An input without such an identity (an eager
or lazy table, a pandas frame, an in-memory ``datasets.Dataset``) gets a
temporary store under ``rowstore/tmp/`` of that cache folder, removed with
its dataset (``store_dir=`` is refused for it).

Streaming, sharding and resume (iterable dataset)
-------------------------------------------------
One epoch visits every kept row once, in a global order that depends only on
``(seed, epoch)``: without ``shuffle`` the rows in order; with ``shuffle`` the
blocks of ``block_rows`` consecutive rows in a permuted order, and the rows of
each window of ``shuffle_buffer`` rows (whole blocks) permuted again (a
shuffle buffer, computed, not filled).  Position ``i`` of that order goes to
consumer ``i mod C``, where ``C = world_size * num_workers`` and consumer
``rank * num_workers + worker_id`` (``torch.distributed`` rank and world size
when initialised, or the ``rank`` / ``world_size`` arguments).  So every row is
yielded exactly once per epoch across all ranks and workers, the consumers'
shares differ by at most one row, and the global order does not depend on
how many consumers there are (elastic).  Consumers do not read disjoint
blocks: the store is mapped, so reading a row is a pointer into shared pages,
and the round-robin is what keeps the order elastic.

:meth:`~CheXmaskUIterableDataset.state_dict` and
:meth:`~CheXmaskUIterableDataset.load_state_dict` follow the protocol that
torchdata's ``StatefulDataLoader`` calls in each worker: a state records the
epoch, the rows consumed before this pass, and how far this consumer got.
Loaded into the same consumer (same ``C``), the dataset yields exactly the rest
of its share, in order.  To resume on another number of ranks or workers,
merge the states of every consumer first
(:meth:`~CheXmaskUIterableDataset.merge_states`, which also finds them inside
``StatefulDataLoader`` state dicts): the merged state marks every row
consumed, and any topology continues with exactly the remaining rows, in the
global order.  The map-style dataset resumes through its sampler: see
``docs/guide/training.md``.
"""

from __future__ import annotations

import base64
import os
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
from chexmask_u_tools.select.rules import apply_rules, mask_valid_columns
from chexmask_u_tools.select.weights import SampleWeighting
from chexmask_u_tools.train.options import SampleOptions
from chexmask_u_tools.train.rowstore import (
    BATCH_ROWS,
    RowStore,
    StoreSpec,
    build_store,
    default_store_root,
    open_or_build_store,
    origin_of_cache,
    origin_of_dataset,
    origin_of_path,
    remove_outdated_stores,
    store_key,
    temporary_store_dir,
)
from chexmask_u_tools.train.sample import (
    CROP_SOURCES,
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
Table = pl.DataFrame | pl.LazyFrame | Any

STATE_FORMAT = "chexmask-u-stream-state"
"""Marks the iterable dataset's state dicts (so :meth:`CheXmaskUIterableDataset.merge_states` finds them anywhere)."""

DEFAULT_SHUFFLE_BUFFER = 8192
"""Rows per shuffle window of the iterable dataset (rounded up to whole blocks)."""


def _is_cache(path: Path) -> bool:
    from chexmask_u_tools.hub.manifest import MANIFEST

    return path.is_dir() and (path / MANIFEST).is_file()


def _input_table(table: Table) -> tuple[pl.LazyFrame, dict[str, Any] | None]:
    """The input as a lazy canonical table, and its origin (rowstore module) when it has one that can be checked.

    A cache folder, a table file or folder, and a ``datasets.Dataset`` with
    Arrow cache files have one; a ``datasets.Dataset`` is read through a lazy
    view of its (memory-mapped) Arrow table, never collected whole.
    """
    if isinstance(table, (pl.DataFrame, pl.LazyFrame)):
        return table.lazy(), None
    if isinstance(table, (str, os.PathLike)):
        path = Path(table)
        if _is_cache(path):
            from chexmask_u_tools.hub.cache import open_cache

            return open_cache(path), origin_of_cache(path)
        from chexmask_u_tools.hub.inputs import input_kind, open_table

        kind = input_kind(table)
        # The packaged sample and Hub ids have no local files to check: their store is temporary.
        origin = origin_of_path(path) if kind in ("file", "hub-folder", "mirror") else None
        return open_table(table), origin
    module = type(table).__module__.split(".")[0]
    if module == "datasets":
        import datasets

        from chexmask_u_tools.io.hf import from_hf_dataset, scan_hf_dataset

        if isinstance(table, datasets.Dataset):
            return scan_hf_dataset(table), origin_of_dataset(table)
        return from_hf_dataset(table).lazy(), None
    if module == "pandas":
        from chexmask_u_tools.schema import as_polars

        return as_polars(table, argument="table").lazy(), None
    raise InputError(
        "table must be a polars DataFrame or LazyFrame, a pandas DataFrame, a datasets.Dataset, "
        f"or the path of a cache or table file, got {type(table).__name__}"
    )


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


def _check_soft_masks(store: RowStore, options: SampleOptions) -> None:
    """Refuse soft masks for rows without std unless ``soft_missing="hard"`` accepts hard 0/1 masks for them."""
    if options.masks not in ("soft", "both") or options.soft_missing == "hard":
        return
    without = np.flatnonzero(~np.asarray(store.has_std))
    if len(without):
        first = int(without[0])
        raise InputError(
            f"masks={options.masks!r} needs landmarks_std, but {len(without)} of {len(store)} rows have none "
            f"(e.g. {store.source(first)} {store.image_id(first)!r}), so their soft masks would silently be hard 0/1 "
            "masks; pass soft_missing='hard' to accept that, use masks='hard', or filter those rows out first "
            "(pl.col('landmarks_std').is_not_null())"
        )


def _missing_note(report: ImageCheck) -> str:
    per_source = ", ".join(f"{s}: {t - f} of {t}" for s, (f, t) in sorted(report.per_source.items()) if f < t)
    return (
        f"{report.missing} of {report.total} rows have no image on disk ({per_source}); fix the image roots, "
        "or pass missing='skip' (drop those rows) or missing='masks_only' (keep their masks)"
    )


def row_store(table: Table, options: SampleOptions, *, owner: object, store_dir: str | os.PathLike | None = None) -> RowStore:
    """The mapped row store of a dataset's input under its options (module docstring: Inputs and the row store).

    ``owner`` is the dataset: a temporary store is removed when it is
    garbage collected.  ``store_dir`` replaces ``<cache>/rowstore`` for a
    cache's store and :func:`~chexmask_u_tools.train.rowstore.default_store_root`
    for a table file or folder's and a ``datasets.Dataset``'s; it is refused
    for inputs without an origin (their store is temporary).
    """
    lazy, origin = _input_table(table)
    names = lazy.collect_schema().names()
    check_sample_columns(names, options)
    spec = StoreSpec(fields=tuple(options.fields), labels=tuple(options.labels), std="landmarks_std" in names)
    rules = [str(rule) for rule in options.rules]
    weighting = repr(options.sample_weighting)
    if origin is not None:
        default = Path(origin["path"]) / "rowstore" if origin["kind"] == "cache" else default_store_root()
        root = Path(store_dir) if store_dir is not None else default
        _check_outside_input(root, origin)
    else:
        if store_dir is not None:
            raise InputError(
                "store_dir= places a row store that later datasets reuse, but this input has no identity to find it "
                "by (an eager or lazy table, a pandas frame, an in-memory datasets.Dataset, 'sample', a Hub id): its "
                "store is temporary, "
                "under $CHEXMASK_U_CACHE/rowstore/tmp (set CHEXMASK_U_CACHE to move it). Give the table as its file "
                "or folder, or a cache folder, to keep and reuse its store"
            )
        try:
            root = temporary_store_dir(owner)
        except OSError as error:  # not writable, a read-only file system
            raise InputError(
                f"cannot write the dataset's temporary row store under {str(default_store_root())!r} ({error.strerror}); "
                "set CHEXMASK_U_CACHE to a writable folder"
            ) from None
        origin = {"kind": "table", "id": uuid.uuid4().hex}
    key = store_key(origin, rules, weighting, spec)

    def build(target: Path) -> None:
        remove_outdated_stores(target.parent, origin)
        indexed = lazy.with_row_index("__row")
        # Pass 1, small columns: which rows the rules keep, their weights (global, so that
        # rank / normalised weightings see the whole table), organ validity, labels.
        kept_lazy = apply_rules(indexed, options.rules).with_columns(_weight_expr(options.sample_weighting), _without_std(names))
        valid = [name for name in mask_valid_columns().values() if name in kept_lazy.collect_schema().names()]
        label_columns = ["source", "image_id", *options.labels] if options.labels else []
        kept = kept_lazy.select("__row", "sample_weight", "__without_std", *valid, *label_columns).collect()
        _check_weights(kept, options.sample_weighting)
        labels = label_values(kept, options.labels, kept["__row"].to_numpy()) if options.labels else None
        # Pass 2, the kept rows' stored columns, streamed in batches (bounded memory).
        columns = ["__row", "source", "image_id", "frame", "height", "width", "landmarks"]
        columns += ["landmarks_std"] if spec.std else []
        columns += [name for name in spec.fields if name not in columns]
        wanted = indexed.filter(pl.col("__row").is_in(kept["__row"].implode())).select(columns)
        meta = {"format": "chexmask-u-rowstore", "version": 1, "key": key, "origin": origin, "rules": rules,
                "weighting": weighting, "input_rows": int(lazy.select(pl.len()).collect().item())}
        build_store(kept, wanted.collect_batches(chunk_size=BATCH_ROWS), target, spec=spec,
                    has_std_column=spec.std, labels=labels, meta=meta)
        # The batches' Arrow buffers are freed, but Arrow's allocator keeps their pages cached
        # (40 MB at 65k rows of a datasets.Dataset): hand them back rather than carry them into training.
        import pyarrow as pa

        pa.default_memory_pool().release_unused()

    try:
        store = open_or_build_store(root / key, key, build)
    except PermissionError as error:
        raise InputError(
            f"cannot write the dataset's row store under {str(root)!r} ({error.strerror}); pass store_dir= a writable folder"
        ) from None
    _check_soft_masks(store, options)
    return store


def _check_outside_input(root: Path, origin: dict[str, Any]) -> None:
    """Refuse a store folder inside a table folder: writing it would change the folder's identity (and the store's key)."""
    if origin["kind"] != "files":
        return
    given = Path(origin["path"])
    if given.is_dir() and (root.resolve() == given or given in root.resolve().parents):
        raise InputError(
            f"the row store folder {str(root)!r} (store_dir=, by default $CHEXMASK_U_CACHE/rowstore) lies inside the "
            f"input folder {str(given)!r}, so every store written there would change the input it describes; pass "
            "store_dir= a folder outside it"
        )


class PathTable(Sequence):
    """The located image paths of a dataset's rows, packed as UTF-8 bytes and offsets (small to pickle, no objects)."""

    def __init__(self, paths: Iterable[Path]) -> None:
        encoded = [os.fsencode(path) for path in paths]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        self.offsets[1:] = np.cumsum([len(item) for item in encoded])
        self.data = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> Path:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        return Path(os.fsdecode(self.data[self.offsets[index] : self.offsets[index + 1]].tobytes()))


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
    store_dir:
        Folder of the row store of a cache, a table file or folder, or a
        ``datasets.Dataset`` backed by cache files (default: ``<cache>/rowstore``
        for a cache, ``$CHEXMASK_U_CACHE/rowstore`` for the others; module
        docstring, Inputs and the row store).  Refused for inputs whose store
        is temporary.
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
        table: Table,
        images: Images = None,
        *,
        options: SampleOptions | None = None,
        store_dir: str | os.PathLike | None = None,
        **keywords: Any,
    ) -> None:
        self.options = options = SampleOptions.merge(options, keywords)
        self.resolver = as_resolver(images)
        self.builder = SampleBuilder(self.resolver, options)
        self.rows = row_store(table, options, owner=self, store_dir=store_dir)
        self.skipped = 0
        self.paths: PathTable | None = None
        self.index: np.ndarray | None = None
        _check_roots(self.resolver, sorted({self.rows.sources[code] for code in np.unique(self.rows.source_codes)}), options)
        if options.missing in ("raise", "skip") and self.resolver is not None:
            # Every row is located now (the look-ups an epoch would make, once),
            # so that a missing image fails here and not hours into training;
            # the paths are kept (packed), so epochs do not look them up again.
            report = check_images(self.rows.ids_frame(), self.resolver)
            if report.missing and options.missing == "raise":
                source, image_id, tried = report.examples[0]
                raise MissingImageError(source, image_id, tried, note=_missing_note(report))
            keep = np.array([p is not None for p in report.paths], dtype=bool)
            self.skipped = int((~keep).sum())
            self.paths = PathTable(p for p in report.paths if p is not None)
            if self.skipped:
                self.index = np.flatnonzero(keep)
                warnings.warn(f"CheXmaskUDataset: skipped {self.skipped} of {len(keep)} rows without an image on disk", stacklevel=2)

    def __len__(self) -> int:
        return len(self.rows) if self.index is None else len(self.index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} rows")
        index = int(index) % len(self)
        stored = index if self.index is None else int(self.index[index])
        path = None if self.paths is None else self.paths[index]
        return self.builder.build(self.rows.record(stored, index, self.options.label_policy), path)

    @property
    def table(self) -> pl.DataFrame:
        """The dataset's rows as a polars table (a copy of the mapped columns: for inspection, not for large data).

        Columns: ``source``, ``image_id``, ``frame``, ``height``, ``width``,
        ``landmarks``, ``sample_weight``, ``landmarks_std`` (when the input has
        it), then the ``labels`` (as stored: 1, 0, -1, null) and ``fields``
        columns, in the dataset's row order.
        """
        rows = self.rows
        keep = np.arange(len(rows)) if self.index is None else self.index
        ids = rows.ids_frame()[keep]
        frame = ids.with_columns(
            pl.Series("frame", [rows.frames[c] for c in np.asarray(rows.frame_codes)[keep]], dtype=pl.String),
            pl.Series("height", np.asarray(rows.heights)[keep]).replace(-1, None),
            pl.Series("width", np.asarray(rows.widths)[keep]).replace(-1, None),
            pl.Series("landmarks", np.asarray(rows.landmarks)[keep]),
            pl.Series("sample_weight", np.asarray(rows.weights)[keep]),
        )
        if rows.std is not None:
            std = pl.Series("landmarks_std", np.asarray(rows.std)[keep])
            frame = frame.with_columns(pl.when(pl.Series(np.asarray(rows.has_std)[keep])).then(std).otherwise(None).alias("landmarks_std"))
        if rows.labels is not None:
            values = np.asarray(rows.labels)[keep]
            frame = frame.with_columns(
                pl.Series(name, values[:, j]).fill_nan(None) for j, name in enumerate(self.options.labels)
            )
        if rows.fields is not None:
            fields = pl.from_arrow(rows.fields)[keep]
            frame = frame.with_columns(fields.drop([name for name in fields.columns if name in frame.columns]))
        return frame

    def check_images(self, max_examples: int = 5) -> ImageCheck:
        """How many rows have their image on disk (``str()`` of the result is a report)."""
        if self.resolver is None:
            raise InputError("this dataset has no image roots to check")
        ids = self.rows.ids_frame()
        return check_images(ids if self.index is None else ids[self.index], self.resolver, max_examples=max_examples)


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


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _pack(consumed: np.ndarray) -> str:
    return base64.b64encode(np.packbits(consumed).tobytes()).decode("ascii")


def _unpack(text: str, n: int) -> np.ndarray:
    try:
        bits = np.unpackbits(np.frombuffer(base64.b64decode(text.encode("ascii"), validate=True), dtype=np.uint8))
    except (ValueError, TypeError) as error:
        raise InputError(f"the state's consumed rows are unreadable ({error})") from None
    if len(bits) < n:
        raise InputError(f"the state's consumed rows cover {len(bits)} rows, the dataset has {n}")
    return bits[:n].astype(bool)


class CheXmaskUIterableDataset(torch.utils.data.IterableDataset):
    """Streamed, sharded version of :class:`CheXmaskUDataset` (same samples; sharding: module docstring).

    Parameters (besides ``table``, ``images``, ``options``, ``store_dir`` and the sample options of :class:`CheXmaskUDataset`)
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
        table: Table,
        images: Images = None,
        *,
        options: SampleOptions | None = None,
        block_rows: int = 256,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        rank: int | None = None,
        world_size: int | None = None,
        store_dir: str | os.PathLike | None = None,
        **keywords: Any,
    ) -> None:
        super().__init__()
        self.options = options = SampleOptions.merge(options, keywords)
        self.block_rows = _positive_int("block_rows", block_rows)
        self.shuffle_buffer = _positive_int("shuffle_buffer", shuffle_buffer)
        self.resolver = as_resolver(images)
        self.builder = SampleBuilder(self.resolver, options)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0
        self.rank, self.world_size = rank, world_size
        _rank_world(rank, world_size)
        self.rows = row_store(table, options, owner=self, store_dir=store_dir)
        self.n_rows = len(self.rows)
        self.n_source_rows = int(self.rows.meta["input_rows"])
        self._loaded: dict[str, Any] | None = None
        self._position: tuple[int, int, np.ndarray, int] | None = None
        _check_roots(self.resolver, sorted({self.rows.sources[code] for code in np.unique(self.rows.source_codes)}), options)

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffle order (call at the start of each epoch, on every rank)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Rows passing the rules, summed over all consumers (what one epoch yields in total)."""
        return self.n_rows

    def order(self, epoch: int | None = None) -> np.ndarray:
        """The global order of one epoch: stored row positions, (N,) int64 (module docstring)."""
        epoch = self.epoch if epoch is None else int(epoch)
        n, size = self.n_rows, self.block_rows
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        n_blocks = -(-n // size)
        blocks = np.random.default_rng([self.seed, epoch]).permutation(n_blocks)
        starts = blocks * size
        lengths = np.minimum(size, n - starts)
        rows = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(n)
        window_blocks = max(1, -(-self.shuffle_buffer // size))
        for w, first in enumerate(range(0, n_blocks, window_blocks)):
            lo = int(np.sum(lengths[:first]))
            hi = lo + int(np.sum(lengths[first : first + window_blocks]))
            rows[lo:hi] = np.random.default_rng([self.seed, epoch, w]).permutation(rows[lo:hi])
        return rows

    def _consumer(self) -> tuple[int, int]:
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = _rank_world(self.rank, self.world_size)
        return rank * n_workers + worker, world * n_workers

    def _plan(self) -> tuple[int, int, np.ndarray, np.ndarray, int]:
        """(consumer, consumers, rows consumed before this pass, this consumer's share, rows of it already done)."""
        consumer, consumers = self._consumer()
        consumed = np.zeros(self.n_rows, dtype=bool)
        done = 0
        state, self._loaded = self._loaded, None
        if state is not None and state["epoch"] == self.epoch:
            consumed = _unpack(state["consumed"], self.n_rows)
            own = state.get("consumer")
            if own is not None:
                if (own["index"], own["of"]) != (consumer, consumers):
                    raise InputError(
                        f"this state is consumer {own['index']} of {own['of']}'s, but it is loaded into consumer "
                        f"{consumer} of {consumers} (rank * num_workers + worker); to resume on another number of "
                        "ranks or workers, merge the states of all consumers with merge_states() first"
                    )
                done = int(own["done"])
        order = self.order()
        share = order[~consumed[order]][consumer::consumers]
        return consumer, consumers, consumed, share, done

    def __iter__(self) -> Iterator[dict[str, Any]]:
        consumer, consumers, consumed, share, done = self._plan()
        self._position = (consumer, consumers, consumed, done)
        skipped = 0
        for k in range(done, len(share)):
            stored = int(share[k])
            self._position = (consumer, consumers, consumed, k + 1)
            record = self.rows.record(stored, int(self.rows.rows[stored]), self.options.label_policy)
            if self.options.missing == "skip":
                path, _ = self.resolver.locate(record.source, record.image_id)
                if path is None:
                    skipped += 1
                    continue
                yield self.builder.build(record, path)
            else:
                yield self.builder.build(record)
        if skipped:
            warnings.warn(f"CheXmaskUIterableDataset consumer {consumer}/{consumers}: skipped {skipped} rows without an image on disk")

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Where this consumer stands in the epoch (torchdata ``Stateful`` protocol; module docstring).

        Called in the process iterating the dataset (each DataLoader worker
        under ``StatefulDataLoader``): the epoch, the rows consumed before this
        pass, and this consumer's index, count and progress.  Before any
        iteration it describes the start of the epoch.
        """
        base = {"format": STATE_FORMAT, "version": 1, "content": self.rows.meta["content"], "rows": self.n_rows,
                "seed": self.seed, "epoch": self.epoch, "shuffle": self.shuffle, "block_rows": self.block_rows,
                "shuffle_buffer": self.shuffle_buffer}
        if self._position is None:
            pending = self._loaded
            if pending is not None:
                return dict(pending)
            return {**base, "consumed": _pack(np.zeros(self.n_rows, dtype=bool)), "consumer": None}
        consumer, consumers, consumed, done = self._position
        return {**base, "consumed": _pack(consumed), "consumer": {"index": consumer, "of": consumers, "done": done}}

    def _check_state(self, state: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise InputError("not a CheXmaskUIterableDataset state (from state_dict() or merge_states())")
        if state.get("version") != 1:
            raise InputError(f"state version {state.get('version')!r}; this chexmask-u-tools reads version 1")
        mine = {"content": self.rows.meta["content"], "rows": self.n_rows, "seed": self.seed, "shuffle": self.shuffle,
                "block_rows": self.block_rows, "shuffle_buffer": self.shuffle_buffer}
        differ = {name: (state.get(name), value) for name, value in mine.items() if state.get(name) != value}
        if differ:
            detail = ", ".join(f"{name}: state {a!r}, dataset {b!r}" for name, (a, b) in differ.items())
            raise InputError(
                f"the state belongs to another dataset or order ({detail}); build the dataset with the same table, "
                "rules, seed, shuffle, block_rows and shuffle_buffer to resume"
            )
        return dict(state)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the next pass yields exactly what remains of the state's epoch (sets the epoch)."""
        state = self._check_state(state)
        self.epoch = int(state["epoch"])
        self._loaded = state
        self._position = None

    def merge_states(self, states: Iterable[Any]) -> dict[str, Any]:
        """One state covering every consumer: what any number of ranks and workers resumes from.

        ``states`` are this dataset's states (from every rank and worker of
        one run), or anything holding them, e.g. the ``state_dict()`` of each
        rank's ``StatefulDataLoader``; they are found by their format.

        Raises
        ------
        InputError
            States of different epochs or datasets, or a consumer missing
            (its rows would be yielded twice).
        """
        found: list[dict[str, Any]] = []

        def collect(item: Any) -> None:
            if isinstance(item, Mapping):
                if item.get("format") == STATE_FORMAT:
                    found.append(self._check_state(item))
                    return
                for value in item.values():
                    collect(value)
            elif isinstance(item, (list, tuple)):
                for value in item:
                    collect(value)

        collect(list(states))
        if not found:
            raise InputError("no CheXmaskUIterableDataset state among the given objects")
        epochs = {state["epoch"] for state in found}
        if len(epochs) != 1:
            raise InputError(f"the states are of different epochs {sorted(epochs)}; merge the states of one moment")
        epoch = epochs.pop()
        order = self.order(epoch)
        merged = np.zeros(self.n_rows, dtype=bool)
        consumers: dict[int, set[int]] = {}
        for state in found:
            base = _unpack(state["consumed"], self.n_rows)
            merged |= base
            own = state.get("consumer")
            if own is not None:
                consumers.setdefault(int(own["of"]), set()).add(int(own["index"]))
                share = order[~base[order]][int(own["index"]) :: int(own["of"])]
                merged[share[: int(own["done"])]] = True
        for count, seen in consumers.items():
            if seen != set(range(count)):
                missing = sorted(set(range(count)) - seen)
                raise InputError(
                    f"the states cover consumers {sorted(seen)} of {count}; consumers {missing} are missing, so the "
                    "rows they had yielded would be yielded again: pass the states of every rank and worker"
                )
        return {**found[0], "epoch": epoch, "consumed": _pack(merged), "consumer": None}

    def check_images(self, max_examples: int = 5) -> ImageCheck:
        """How many kept rows have their image on disk (``str()`` of the result is a report)."""
        if self.resolver is None:
            raise InputError("this dataset has no image roots to check")
        return check_images(self.rows.ids_frame(), self.resolver, max_examples=max_examples)
