"""``cxu.to_hf_dataset``: the canonical table as a typed ``datasets.Dataset``, optionally with the user's images."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import polars as pl

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.images.resolver import ImageResolver, as_resolver
from chexmask_u_tools.io import hf
from chexmask_u_tools.schema import as_polars

__all__ = ["to_hf_dataset"]


def to_hf_dataset(
    table: pl.DataFrame | pl.LazyFrame,
    images: ImageResolver | Mapping[str, Any] | str | os.PathLike | Callable[[str, str], Any] | None = None,
    *,
    missing: str = "raise",
    cache_dir: str | os.PathLike | None = None,
    keep_in_memory: bool = False,
    progress: bool = False,
) -> Any:
    """A ``datasets.Dataset`` of the canonical table with typed features.

    Parameters
    ----------
    table:
        Canonical table, eager or lazy (a lazy table is streamed, never collected whole).
    images:
        The image roots the torch datasets take (source -> folder, one folder,
        an :class:`~chexmask_u_tools.images.resolver.ImageResolver` or a
        ``(source, image_id) -> path`` callable).  Adds an ``image`` column of
        type ``datasets.Image()`` pointing at each row's file; ``datasets``
        decodes it only when the column is read.
    missing:
        ``"raise"`` (default): a row whose image is not found raises
        :class:`~chexmask_u_tools.images.resolver.MissingImageError` listing the
        paths tried; ``"null"``: such rows get a null image.
    cache_dir, keep_in_memory, progress:
        Where the Arrow file the dataset memory-maps is written (default: the
        ``datasets`` cache), or hold it in memory instead; a bar of the rows
        written.  See :func:`chexmask_u_tools.io.hf.to_hf_dataset`.

    Notes
    -----
    Features: ``Array2D((120, 2), "float32")`` for ``landmarks`` and
    ``landmarks_std``, a fixed-length float32 list of 64 for ``latent_sigma``,
    strings for ids and RLE masks, plain values for the summaries.
    The rows are written :data:`~chexmask_u_tools.io.hf.BATCH_ROWS` at a time
    to an Arrow file that the dataset memory-maps, as ``datasets.load_dataset``
    does: memory stays bounded at the release's size, and DataLoader workers
    share the pages.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> ds = cxu.to_hf_dataset(cxu.load_sample().head(4))
    >>> len(ds), ds.features["latent_sigma"].length
    (4, 64)
    >>> cxu.from_hf_dataset(ds).height
    4
    """
    table = as_polars(table, argument="table")
    if missing not in ("raise", "null"):
        raise InputError(f"missing must be 'raise' or 'null', got {missing!r}")
    paths: Sequence[str | None] | None = None
    if images is not None:
        resolver = as_resolver(images)
        paths = []
        for source, image_id in table.lazy().select("source", "image_id").collect().iter_rows():
            if missing == "raise":
                paths.append(str(resolver.resolve(source, image_id)))
            else:
                found, _ = resolver.locate(source, image_id)
                paths.append(None if found is None else str(found))
    return hf.to_hf_dataset(
        table, image_paths=paths, cache_dir=cache_dir, keep_in_memory=keep_in_memory, progress=progress
    )
