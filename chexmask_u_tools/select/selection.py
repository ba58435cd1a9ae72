"""Selections by source and frame: validated name sets and the row filter they imply."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.schema import FRAMES
from chexmask_u_tools.sources import SOURCES, canonical_source

__all__ = ["normalize_frames", "normalize_sources", "row_filter"]

def normalize_sources(sources: Sequence[str] | str | None) -> set[str] | None:
    if sources is None:
        return None
    if isinstance(sources, str):
        sources = [sources]
    names = set()
    for name in sources:
        canonical = canonical_source(name)
        if canonical is None:
            raise InputError(f"unknown source {name!r}; expected one of {SOURCES}")
        names.add(canonical)
    return names


def normalize_frames(frames: Sequence[str] | str | None) -> set[str] | None:
    if frames is None:
        return None
    if isinstance(frames, str):
        frames = [frames]
    for frame in frames:
        if frame not in FRAMES:
            raise InputError(f"unknown frame {frame!r}; expected one of {FRAMES}")
    return set(frames)


def row_filter(sources: set[str] | None, frames: set[str] | None) -> pl.Expr | None:
    conditions = []
    if sources is not None:
        conditions.append(pl.col("source").is_in(sorted(sources)))
    if frames is not None:
        conditions.append(pl.col("frame").is_in(sorted(frames)))
    if not conditions:
        return None
    return pl.all_horizontal(conditions)
