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
from .raster import label_map, rasterize, rasterize_organs, scale_points, truncate_points
from .released import to_released, write_released
from .rules import Rule, apply_rules, dice_rule, image_rule, latent_rule, node_rule, organ_rule, parse_rule, rule_report
from .rle import rle_decode, rle_decode_many, rle_encode, rle_encode_many
from .sample import load_sample, sample_dir, sample_files
from .schema import CANONICAL_SCHEMA, FRAMES, SOURCES, mask_shape, mask_shape_exprs
from .table import detect_layout, read_table, read_tables, scan_table
from .soft import (
    band_mask,
    pixel_weight_map,
    sample_masks,
    sample_probability,
    soft_mask,
    soft_mask_organs,
    uncertainty_band,
)
from .weights import SampleWeighting, node_weights, sample_weights, soft_pixel_weights
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

from . import hub, plots
from .analysis import node_error_vs_sigma, ood_scores, roc_auc, uncertainty_vs_corruption
from .cache import build_cache, find_cache, open_cache
from .corruptions import gaussian_blur, gaussian_noise, occlude
from .filtering import apply_filters, filter_criteria, filter_report
from .hub import HubRepo, LocalMirror, discover
from .frames import (
    convert_table_frame,
    frame_scale,
    std_to_original_frame,
    std_to_preprocessed_frame,
    to_original_frame,
    to_preprocessed_frame,
)
from .geometry import heart_lung_overlap, organ_areas, organ_polygons, organ_validity
from .images import crop_black_border, list_images, pad_to_square, read_image
from .paths import ImageResolver, MissingImageError, check_images

__version__ = "0.1.0"

# Names that need torch (the ``[torch]`` extra) resolve on first use, so that
# ``import chexmask_u_tools`` works, and stays fast, without torch installed.
_TORCH_NAMES = {
    "rasterize_torch": "raster_torch",
    "rasterize_organs_torch": "raster_torch",
    "HybridGNet": "model",
    "load_pretrained": "model",
    "predict": "model",
    "roi_sample": "model",
}


def __getattr__(name: str):
    module = _TORCH_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_TORCH_NAMES))
