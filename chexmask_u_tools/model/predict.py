"""Per-node uncertainty for your own chest X-rays, computed the way CheXmask-U was (SPEC sections 4-5).

Pipeline per image: read as 8-bit gray (:mod:`chexmask_u_tools.images.read`), optional
black-border crop, zero pad to a centred square, bilinear resize to the model's
input size (torch, ``align_corners=False``, no antialias, rounded back to 8 bit
like OpenCV's ``resize`` on uint8), ``/ 255``.  The encoder runs once per image;
its S latent samples ``z = mu + eps * exp(logvar / 2)`` are decoded together,
reading the image's feature maps without copying them.  Per node: the mean and
the population standard deviation (ddof 0) of x and y over the samples, in
pixels of the 1024 frame; per latent dimension the posterior sigma.

Reproducibility: image ``i``'s draws come from a CPU ``torch.Generator`` seeded with
``blake2b(f"{seed}:{image_id}")``, so they do not depend on batch size, order,
device or the number of processes.  The arithmetic can: under the default
``roi_align="torchvision"`` rule a last-bit difference upstream (another BLAS
blocking for another batch size, another GPU) can flip a node's sampling grid
and move it by pixels (SPEC section 6).  ``roi_align="nominal"`` makes results
agree to float rounding across batch sizes and hardware.

Writing (:func:`predict_to_parquet`) is resumable: results go to part files
(each written to a temporary name, then renamed) in ``<out>.parts/``; ids already
in ``<out>`` or in a part are skipped; at the end the parts are merged into
``<out>`` atomically.  Under ``torchrun`` every rank takes a disjoint shard.

Provenance: every file written carries :func:`prediction_provenance` (the
package version, the weights, the sample count, seed, dtype and roi-align rule;
see :mod:`chexmask_u_tools.io.provenance`), and a rerun into an output made
with other weights or settings is refused instead of mixing the two.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from chexmask_u_tools._atomic import atomic_path
from chexmask_u_tools.errors import ImageError, InputError
from chexmask_u_tools.images.preprocess import crop_black_border, pad_to_square, resize_levels
from chexmask_u_tools.images.read import list_images, read_image
from chexmask_u_tools.io.provenance import PROVENANCE_KEY, provenance_text, read_provenance
from chexmask_u_tools.schema import CANONICAL_SCHEMA, FRAMES, PREPROCESSED_SIZE, RLE_COLUMNS
from chexmask_u_tools.model.hybridgnet import Encoding, HybridGNet

DTYPES: tuple[str, ...] = ("fp32", "tf32", "bf16", "fp64")
"""``fp32``: IEEE float32 everywhere (TF32 disabled); ``tf32``: TF32 tensor cores for
convolutions and matmuls on CUDA; ``bf16``: the encoder under bf16 autocast, the
decoder (positions, sampling grid, statistics) in float32; ``fp64``: float64
everywhere (slow; for verification, results agree across batch sizes and
processes to ~1e-9 px under the nominal rule)."""


# ----------------------------------------------------------------------------- randomness


def image_seed(seed: int, image_id: str) -> int:
    """Stable 63-bit seed of one image: ``blake2b(f"{seed}:{image_id}")`` (independent of PYTHONHASHSEED)."""
    digest = hashlib.blake2b(f"{int(seed)}:{image_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def draw_eps(seed: int, image_ids: Sequence[str], n_samples: int, latents: int = 64) -> torch.Tensor:
    """Standard normal draws (B, n_samples, latents) float32 on the CPU, one generator per image."""
    out = torch.empty(len(image_ids), n_samples, latents)
    for row, image_id in zip(out, image_ids):
        generator = torch.Generator().manual_seed(image_seed(seed, image_id))
        row.copy_(torch.randn(n_samples, latents, generator=generator))
    return out


# ----------------------------------------------------------------------------- preprocessing


@dataclass
class Prepared:
    """One image after the NumPy part of preprocessing."""

    image_id: str
    square: np.ndarray
    """(L, L) uint8, the (cropped) image zero-padded to a centred square."""
    height: int
    """Original image height (before any crop), pixels."""
    width: int
    crop: tuple[int, int, int, int]
    """(top, left, height, width) of the kept region; the whole image without crop."""


def prepare(image_id: str, path: str | os.PathLike, crop_border: bool = False) -> Prepared:
    """Read one file and pad it to a square (raises :class:`ImageError`)."""
    image = read_image(path)
    height, width = image.shape
    crop = (0, 0, height, width)
    if crop_border:
        image, crop = crop_black_border(image)
    square, _ = pad_to_square(image)
    return Prepared(image_id, square, height, width, crop)


def to_model_input(squares: Sequence[np.ndarray], size: int, device: torch.device | str) -> torch.Tensor:
    """Resize uint8 squares to (B, 1, size, size) float32 in [0, 1] on ``device`` (see :func:`resize_levels`).

    The uint8 pixels travel to the device (pinned host memory and an asynchronous copy
    on CUDA), and the resize runs there.
    """
    device = torch.device(device)
    out = torch.empty(len(squares), 1, size, size, device=device)
    for i, square in enumerate(squares):
        pixels = torch.from_numpy(np.ascontiguousarray(square))
        if device.type == "cuda":
            pixels = pixels.pin_memory()
        pixels = pixels.to(device, non_blocking=True)
        out[i, 0] = resize_levels(pixels, (size, size)) / 255.0
    return out


# ----------------------------------------------------------------------------- inference


def configure_precision(dtype: str, device: torch.device) -> torch.dtype | None:
    """Set TF32 switches for ``dtype`` and return the encoder autocast dtype (or None).

    The model's own dtype is the caller's choice (``model.double()`` for ``fp64``).
    """
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
        torch.backends.cudnn.allow_tf32 = dtype == "tf32"
    return torch.bfloat16 if dtype == "bf16" else None


def keep_freed_memory(limit: int = 2**30) -> bool:
    """Let this process reuse freed large blocks instead of returning them to the system (glibc only).

    A HybridGNet forward pass at 1024 x 1024 allocates and frees activations of 32-128 MB.
    glibc serves blocks above its mmap threshold (at most 32 MB) with fresh ``mmap``
    pages, so every such activation is page-faulted and zeroed by the kernel again; on
    CPU that was about 40 % of the encoder's time at batch 4.  This sets glibc's
    ``M_MMAP_THRESHOLD`` to ``limit`` bytes and ``M_TRIM_THRESHOLD`` to its maximum, so
    freed blocks are reused.  The cost: the process keeps its peak memory until it
    exits.  :func:`iter_predictions` calls it for CPU runs (``keep_memory=True``).

    Returns
    -------
    True when both settings were applied; False off Linux / glibc (nothing changes).
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h> parameter numbers
    return bool(mallopt(m_mmap_threshold, int(limit)) == 1 and mallopt(m_trim_threshold, 2**31 - 1) == 1)


@torch.inference_mode()
def predict_batch(
    model: HybridGNet,
    images: torch.Tensor,
    eps: torch.Tensor,
    autocast_dtype: torch.dtype | None = None,
    *,
    compile: bool = False,
) -> dict[str, torch.Tensor]:
    """Mean and spread of the landmarks of B images over their latent samples.

    Parameters
    ----------
    model:
        HybridGNet in eval mode.
    images:
        (B, 1, S, S) float in [0, 1], on the model's device.
    eps:
        (B, n, latents) standard normal draws (any device).
    autocast_dtype:
        Run the encoder under autocast with this dtype (e.g. bf16); the decoder and the
        statistics stay in the model's dtype.
    compile:
        Run the encoder through ``torch.compile`` (see :meth:`HybridGNet.encode`): the
        same numbers to float rounding, faster after a one-off compilation.

    Returns
    -------
    dict of float64 CPU tensors: ``mean`` and ``std`` (B, 120, 2), pixels of the 1024
    frame (std with ddof 0), ``latent_sigma`` (B, latents) = ``exp(logvar / 2)``.

    Notes
    -----
    All S draws of an image are decoded in one pass that reads the image's feature maps
    in place; the encoder runs once per image.
    """
    device = images.device
    with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        encoding = model.encode(images, compiled=compile)
    param_dtype = model.dec_lin.weight.dtype
    encoding = Encoding(*(t.to(param_dtype) for t in encoding))
    eps = eps.to(device=device, dtype=param_dtype)
    z = encoding.mu[:, None, :] + eps * torch.exp(0.5 * encoding.logvar)[:, None, :]
    samples = model.decode(z, encoding).double() * PREPROCESSED_SIZE
    return {
        "mean": samples.mean(dim=1).cpu(),
        "std": samples.std(dim=1, correction=0).cpu(),
        "latent_sigma": torch.exp(0.5 * encoding.logvar.double()).cpu(),
    }


# ----------------------------------------------------------------------------- rows


def _original_frame(mean: np.ndarray, std: np.ndarray, prepared: Prepared) -> tuple[np.ndarray, np.ndarray]:
    from chexmask_u_tools.masks.frames import std_to_original_frame, to_original_frame

    top, left, crop_h, crop_w = prepared.crop
    # The 1024 frame is the padded square of the kept region, so the scale is the crop's.
    spread = std_to_original_frame(std, crop_h, crop_w)
    if (crop_h, crop_w) == (prepared.height, prepared.width):
        return to_original_frame(mean, prepared.height, prepared.width), spread
    # Map into the crop, shift by its offset, then round and clip to the full image.
    points = to_original_frame(mean, crop_h, crop_w, round_clip=False) + np.array([left, top], dtype=np.float64)
    limits = np.array([prepared.width - 1, prepared.height - 1], dtype=np.float64)
    return np.clip(np.rint(points), 0.0, limits), spread


def prediction_rows(
    prepared: Sequence[Prepared],
    stats: dict[str, torch.Tensor],
    *,
    source: str = "private",
    frames: Sequence[str] = FRAMES,
) -> pl.DataFrame:
    """Canonical rows (:data:`~chexmask_u_tools.schema.CANONICAL_SCHEMA`) of a predicted batch.

    ``preprocessed`` rows carry the 1024-frame statistics; ``original`` rows the same
    mapped to the image's own pixels (SPEC section 4: landmarks rounded and clipped,
    std divided by the scale; a border crop is undone).  Masks are rasterized from
    the mean landmarks of each frame and run-length encoded.
    """
    from chexmask_u_tools.masks.raster import rasterize_organs
    from chexmask_u_tools.io.rle import rle_encode
    from chexmask_u_tools.select.uncertainty import add_summaries

    unknown = [f for f in frames if f not in FRAMES]
    if unknown:
        raise InputError(f"unknown frames {unknown}; expected a subset of {FRAMES}")
    columns: dict[str, list[Any]] = {name: [] for name in CANONICAL_SCHEMA.names() if name in _BASE_COLUMNS}
    means, stds, sigmas = (stats[k].numpy() for k in ("mean", "std", "latent_sigma"))
    for item, mean, std, sigma in zip(prepared, means, stds, sigmas):
        for frame in frames:
            if frame == "preprocessed":
                height = width = PREPROCESSED_SIZE
                points, spread = mean, std
            else:
                height, width = item.height, item.width
                points, spread = _original_frame(mean, std, item)
            masks = rasterize_organs(points, height, width, allow_empty=True)  # a prediction may leave the image
            columns["source"].append(source)
            columns["image_id"].append(item.image_id)
            columns["frame"].append(frame)
            columns["height"].append(height)
            columns["width"].append(width)
            columns["dice_rca_mean"].append(None)
            columns["dice_rca_max"].append(None)
            columns["landmarks"].append(np.asarray(points, dtype=np.float32))
            columns["landmarks_std"].append(np.asarray(spread, dtype=np.float32))
            columns["latent_sigma"].append(np.asarray(sigma, dtype=np.float32))
            for k, column in enumerate(RLE_COLUMNS.values()):
                columns[column].append(rle_encode(masks[k]))
    base = pl.DataFrame(columns, schema={k: CANONICAL_SCHEMA[k] for k in columns})
    return add_summaries(base).select(CANONICAL_SCHEMA.names()).cast(dict(CANONICAL_SCHEMA))


_BASE_COLUMNS = (
    "source",
    "image_id",
    "frame",
    "height",
    "width",
    "dice_rca_mean",
    "dice_rca_max",
    "landmarks",
    "landmarks_std",
    "latent_sigma",
    *RLE_COLUMNS.values(),
)


# ----------------------------------------------------------------------------- driver


@dataclass
class PredictReport:
    """What a prediction run did."""

    done: int = 0
    """Images predicted in this run (by this process)."""
    skipped: int = 0
    """Images skipped because the output already had them."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(image id, reason) of images that could not be read or prepared, whatever the error
    (:class:`ImageError`, ``MemoryError``, ...): each is reported and skipped, the run goes on."""
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.done / self.seconds if self.seconds > 0 else 0.0
        text = f"{self.done} images predicted ({rate:.2f} images/s), {self.skipped} already done, {len(self.failed)} failed"
        if self.failed:
            text += "\n" + "\n".join(f"  {image_id}: {reason}" for image_id, reason in self.failed)
        return text


def _prefetch(items: Sequence[tuple[str, Path]], crop_border: bool, workers: int) -> Iterator[Prepared | tuple[str, str]]:
    """Read images in background threads (Pillow and NumPy release the GIL), in order, bounded look-ahead."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque[tuple[str, Future]] = deque()
        iterator = iter(items)
        limit = max(4, 4 * workers)

        def fill() -> None:
            while len(pending) < limit:
                try:
                    image_id, path = next(iterator)
                except StopIteration:
                    return
                pending.append((image_id, pool.submit(prepare, image_id, path, crop_border)))

        fill()
        while pending:
            image_id, future = pending.popleft()
            fill()
            try:
                prepared = future.result()
            except ImageError as error:
                yield (image_id, str(error))
            except Exception as error:  # noqa: BLE001 - one image's failure (MemoryError, a decoder bug) must not end the run
                yield (image_id, f"{type(error).__name__}: {error}")
            else:
                yield prepared


def iter_predictions(
    model: HybridGNet,
    items: Sequence[tuple[str, Path]],
    *,
    batch_size: int = 8,
    n_samples: int = 50,
    seed: int = 0,
    dtype: str = "fp32",
    crop_border: bool = False,
    source: str = "private",
    frames: Sequence[str] = FRAMES,
    workers: int = 4,
    report: PredictReport | None = None,
    progress: bool = False,
    compile: bool = False,
    keep_memory: bool = True,
) -> Iterator[pl.DataFrame]:
    """Predict ``(image_id, path)`` items batch by batch, yielding canonical row batches.

    Images are read and padded in ``workers`` background threads while the model runs
    (Pillow and NumPy release the GIL), so decoding overlaps compute; on CUDA the batch
    is staged in pinned memory and copied asynchronously.  ``compile`` runs the encoder
    through ``torch.compile``; ``keep_memory`` (CPU runs) calls :func:`keep_freed_memory`.
    Precision is opt-in through ``dtype`` (:data:`DTYPES`: ``tf32`` and ``bf16`` trade
    accuracy for speed on GPUs; the default ``fp32`` keeps TF32 off).

    An image whose reading or preparation fails in any way (:class:`ImageError`, ``MemoryError``,
    an ``OSError`` from the disk, ...) is recorded in ``report.failed`` and skipped; the run goes on.
    """
    if batch_size < 1 or n_samples < 1:
        raise InputError(f"batch_size and n_samples must be >= 1, got {batch_size}, {n_samples}")
    device, param_dtype = model.dec_lin.weight.device, model.dec_lin.weight.dtype
    autocast_dtype = configure_precision(dtype, device)
    if keep_memory and device.type == "cpu":
        keep_freed_memory()
    report = report if report is not None else PredictReport()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), unit="img", desc="predict", file=sys.stderr)

    def run(batch: list[Prepared]) -> pl.DataFrame:
        ids = [p.image_id for p in batch]
        images = to_model_input([p.square for p in batch], model.input_size, device).to(param_dtype)
        stats = predict_batch(model, images, draw_eps(seed, ids, n_samples, model.latents), autocast_dtype, compile=compile)
        return prediction_rows(batch, stats, source=source, frames=frames)

    batch: list[Prepared] = []
    try:
        for result in _prefetch(items, crop_border, workers):
            if isinstance(result, tuple):
                report.failed.append(result)
                if bar is not None:
                    bar.update(1)
                continue
            batch.append(result)
            if len(batch) == batch_size:
                yield run(batch)
                report.done += len(batch)
                if bar is not None:
                    bar.update(len(batch))
                batch = []
        if batch:
            yield run(batch)
            report.done += len(batch)
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()


def predict(
    images: str | os.PathLike | Iterable[str | os.PathLike],
    model: HybridGNet | None = None,
    **kwargs: Any,
) -> pl.DataFrame:
    """Predict landmarks and uncertainty for images, in memory.

    Parameters
    ----------
    images:
        Directory, image list file, single image or iterable of paths
        (see :func:`chexmask_u_tools.images.read.list_images`).
    model:
        A loaded :class:`HybridGNet` (default: :func:`load_pretrained`, i.e. the
        published weights).
    **kwargs:
        Options of :func:`iter_predictions` (``batch_size``, ``n_samples`` (50),
        ``seed``, ``dtype``, ``crop_border``, ``source``, ``frames``, ``workers``,
        ``progress``).

    Returns
    -------
    Canonical table (one row per image and frame), ordered by image id then frame.
    """
    if model is None:
        from chexmask_u_tools.model.pretrained import load_pretrained

        model = load_pretrained()
    parts = list(iter_predictions(model.eval(), list_images(images), **kwargs))
    if not parts:
        return pl.DataFrame(schema=CANONICAL_SCHEMA)
    return _ordered(pl.concat(parts))


def _ordered(table: pl.DataFrame) -> pl.DataFrame:
    frame_rank = pl.col("frame").replace_strict({f: i for i, f in enumerate(FRAMES)}, default=len(FRAMES))
    return table.sort([pl.col("image_id"), frame_rank])


# ----------------------------------------------------------------------------- resumable parquet output


def prediction_provenance(
    model: HybridGNet, *, n_samples: int = 50, seed: int = 0, dtype: str = "fp32", crop_border: bool = False, tool: str = "predict"
) -> dict[str, str]:
    """What produced a set of predictions: recorded in every file written, shown on dataset cards.

    The weights are named as their loader recorded them (``model.weights_origin``):
    the Hub repo, revision, commit and the weights file's sha256, a local file
    and its sha256, or ``random`` with its seed.

    Examples
    --------
    >>> from chexmask_u_tools.model.pretrained import random_model
    >>> record = prediction_provenance(random_model(seed=3, input_size=64), n_samples=8, seed=1)
    >>> record["weights"], record["weights.seed"], record["samples"], record["roi_align"]
    ('random', '3', '8', 'torchvision')
    """
    from importlib.metadata import PackageNotFoundError, version

    try:  # the installed distribution's version (the package's __init__ sits above this layer)
        release = version("chexmask-u-tools")
    except PackageNotFoundError:
        release = "unknown"
    origin = dict(getattr(model, "weights_origin", None) or {"unknown": "weights not loaded by chexmask-u-tools"})
    kind = "random" if "random" in origin else "hub" if "hub" in origin else "file" if "file" in origin else "unknown"
    record = {
        "tool": f"chexmask-u-tools {release} ({tool})",
        "weights": kind,
        **{f"weights.{key}": str(value) for key, value in origin.items() if key != "random"},
        "samples": str(n_samples),
        "seed": str(seed),
        "dtype": dtype,
        "roi_align": str(getattr(model, "roi_align", "")),
        "crop_border": str(bool(crop_border)),
        "torch": torch.__version__,
    }
    return record


def write_predictions(table: pl.DataFrame, path: str | os.PathLike, provenance: dict[str, str] | None = None) -> None:
    """Write predictions to parquet atomically, ``provenance`` in the file's key-value metadata."""
    import pyarrow.parquet as pq

    arrow = table.to_arrow()
    if provenance is not None:
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), PROVENANCE_KEY: provenance_text(provenance)})
    with atomic_path(path) as temporary:
        pq.write_table(arrow, temporary, compression="zstd")


def _check_same_provenance(files: Iterable[Path], provenance: dict[str, str] | None) -> None:
    """Refuse to add predictions to files made with other weights or settings (the rows would be mixed silently)."""
    if provenance is None:
        return
    for file in files:
        recorded = read_provenance(file) if file.is_file() else None
        if recorded is not None and recorded != provenance:
            differ = sorted(key for key in set(recorded) | set(provenance) if recorded.get(key) != provenance.get(key))
            raise InputError(
                f"{file} holds predictions made with other settings ({', '.join(differ)} differ: "
                + ", ".join(f"{key} {recorded.get(key)!r} there, {provenance.get(key)!r} now" for key in differ[:3])
                + "); write to another --out (out=), or remove it to start over"
            )


def parts_dir(out: str | os.PathLike) -> Path:
    """Folder of the part files of an output (``<out>.parts``)."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def done_ids(out: str | os.PathLike) -> set[str]:
    """Image ids already present in ``out`` or in its part files."""
    out = Path(out)
    files = [out] if out.is_file() else []
    if parts_dir(out).is_dir():
        files += sorted(parts_dir(out).glob("*.parquet"))
    ids: set[str] = set()
    for file in files:
        ids.update(pl.read_parquet(file, columns=["image_id"])["image_id"].to_list())
    return ids


def merge_parts(out: str | os.PathLike, provenance: dict[str, str] | None = None) -> pl.DataFrame:
    """Merge ``out`` and its part files into ``out`` atomically (with ``provenance``), then delete the parts."""
    out = Path(out)
    folder = parts_dir(out)
    part_files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if provenance is None:  # keep what the parts recorded
        provenance = next((found for file in [*part_files, out] if file.is_file() and (found := read_provenance(file))), None)
    tables = ([pl.read_parquet(out)] if out.is_file() else []) + [pl.read_parquet(p) for p in part_files]
    merged = _ordered(pl.concat(tables)) if tables else pl.DataFrame(schema=CANONICAL_SCHEMA)
    merged = merged.unique(subset=["image_id", "frame"], keep="first", maintain_order=True)
    write_predictions(merged, out, provenance)
    for part in part_files:
        part.unlink()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return merged


def predict_to_parquet(
    images: str | os.PathLike | Iterable[str | os.PathLike],
    out: str | os.PathLike,
    model: HybridGNet,
    *,
    rank: int = 0,
    world_size: int = 1,
    flush_every: int = 256,
    merge: bool = True,
    provenance: dict[str, str] | None = None,
    **kwargs: Any,
) -> PredictReport:
    """Predict into a parquet file, resumably; one shard per rank when ``world_size > 1``.

    Ranks take every ``world_size``-th image of the sorted id list (sharding happens
    before skipping finished ids, so ranks never disagree about ownership).  Each
    writes ``<out>.parts/part-r<rank>-<n>.parquet`` every ``flush_every`` images.
    With ``merge=True`` (single process) the parts are merged at the end; under
    torch.distributed the caller merges on rank 0 after a barrier (see the CLI).
    Every file carries ``provenance`` (default: :func:`prediction_provenance`
    of the model and options); resuming into files of other provenance raises
    :class:`~chexmask_u_tools.errors.InputError`.
    """
    if not 0 <= rank < world_size:
        raise InputError(f"rank {rank} is outside [0, {world_size})")
    out = Path(out)
    if provenance is None:
        options = {key: kwargs[key] for key in ("seed", "dtype", "crop_border") if key in kwargs}
        provenance = prediction_provenance(model, n_samples=kwargs.get("n_samples", 50), **options)
    folder = parts_dir(out)
    _check_same_provenance([out, *(sorted(folder.glob("*.parquet")) if folder.is_dir() else [])], provenance)
    items = list_images(images)[rank::world_size]
    finished = done_ids(out)
    todo = [item for item in items if item[0] not in finished]
    report = PredictReport(skipped=len(items) - len(todo))
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob(f"part-r{rank:05d}-*.parquet"))
    counter = 1 + max((int(p.stem.rsplit("-", 1)[1]) for p in existing), default=-1)
    buffer: list[pl.DataFrame] = []
    buffered = 0
    start = time.perf_counter()

    def flush() -> None:
        nonlocal counter, buffered
        if buffer:
            write_predictions(pl.concat(buffer), folder / f"part-r{rank:05d}-{counter:06d}.parquet", provenance)
            counter += 1
            buffer.clear()
            buffered = 0

    try:
        for rows in iter_predictions(model.eval(), todo, report=report, **kwargs):
            buffer.append(rows)
            buffered += rows["image_id"].n_unique()
            if buffered >= flush_every:
                flush()
    finally:
        flush()  # keep whatever was computed, even when interrupted
        report.seconds = time.perf_counter() - start
    if merge:
        merge_parts(out, provenance)
    return report
