"""chexmask-u-tools: load, rasterize, filter and recompute CheXmask-U segmentations."""

from __future__ import annotations

from .errors import (
    CheXmaskUError,
    FileReadError,
    HubError,
    ImageError,
    InputError,
    PointsParseError,
    RecordError,
    RLEError,
    SchemaError,
    WeightsError,
)
from .layout import N_LATENT, N_NODES, ORGAN_SIZES, ORGAN_SLICES, ORGANS, ring_adjacency, ring_edges, split_organs
from .schema import CANONICAL_SCHEMA, FRAMES, SOURCES

__version__ = "0.1.0"
