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
    SkippedRowsWarning,
    WeightsError,
)
from .layout import N_LATENT, N_NODES, ORGAN_SIZES, ORGAN_SLICES, ORGANS, ring_adjacency, ring_edges, split_organs
from .parsing import format_points, parse_numbers, parse_points
from .released import to_released, write_released
from .rle import rle_decode, rle_decode_many, rle_encode, rle_encode_many
from .sample import load_sample, sample_dir, sample_files
from .schema import CANONICAL_SCHEMA, FRAMES, SOURCES, mask_shape, mask_shape_exprs
from .table import detect_layout, read_table, read_tables, scan_table
from .uncertainty import (
    add_summaries,
    latent_sigma_mean,
    node_sigma,
    node_sigma_max,
    node_sigma_mean,
    node_sigma_quantile,
    organ_sigma_mean,
    summary_by_source,
)

__version__ = "0.1.0"
