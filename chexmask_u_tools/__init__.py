"""chexmask-u-tools: load, rasterize, filter and recompute CheXmask-U segmentations.

The public API is flat: ``import chexmask_u_tools as cxu`` then ``cxu.read_table``,
``cxu.rasterize``, ``cxu.apply_rules`` ...  The subpackages show the architecture,
each importing only from those listed below it:

========== ====================================================================
``cli``      the ``chexmask-u`` command: argument parsing and printing only
``testing``  synthetic images, the Hub emulator, the straightforward reference model
``publish``  Hugging Face ``datasets`` out, Hub-ready folders
``cohorts``  source metadata, patient splits and dataset cards
``analysis`` the paper's experiments, corruptions and plots
``train``    PyTorch datasets and transforms (needs torch)
``model``    HybridGNet in plain PyTorch, weights and prediction (needs torch)
``images``   reading images, CheXmask's preprocessing, finding each row's file
``masks``    frames, exact rasterization, soft masks, geometry
``hub``      Hub and mirror locations, discovery, streaming, the parquet cache
``io``       parsing, RLE, the canonical table readers and released writers
``select``   uncertainty expressions, rules and weights
foundation   ``errors``, ``layout``, ``schema``, ``sources`` (the source registry), ``citation``
========== ====================================================================
"""

from __future__ import annotations

from importlib import import_module as _import_module

from chexmask_u_tools import hub
from chexmask_u_tools.analysis import (
    gaussian_blur,
    gaussian_noise,
    node_error_vs_sigma,
    occlude,
    ood_scores,
    roc_auc,
    uncertainty_vs_corruption,
)
from chexmask_u_tools.citation import cite
from chexmask_u_tools.cohorts import (
    JoinReport,
    MetadataWarning,
    add_patient_ids,
    attach_metadata,
    check_leakage,
    describe,
    label_columns,
    patient_split,
    read_metadata,
    select_cohort,
    unique_patients,
)
from chexmask_u_tools.errors import (
    CheXmaskUError,
    ColumnNameWarning,
    FileReadError,
    HubError,
    ImageError,
    InputError,
    IntegrityWarning,
    PointsParseError,
    RecordError,
    RLEError,
    SchemaError,
    SkippedRowsWarning,
    WeightsError,
)
from chexmask_u_tools.hub import HubRepo, LocalMirror, discover
from chexmask_u_tools.hub.cache import build_cache, find_cache, open_cache
from chexmask_u_tools.hub.inputs import open_table
from chexmask_u_tools.images import (
    ImageResolver,
    MissingImageError,
    check_images,
    crop_black_border,
    list_images,
    pad_to_square,
    read_image,
)
from chexmask_u_tools.io import (
    detect_layout,
    format_points,
    load_sample,
    map_columns,
    parse_numbers,
    parse_points,
    read_provenance,
    read_table,
    read_tables,
    rle_decode,
    rle_decode_many,
    rle_encode,
    rle_encode_many,
    rle_method,
    rle_problems,
    sample_dir,
    sample_files,
    scan_table,
    to_pandas,
    to_released,
    write_released,
)
from chexmask_u_tools.layout import N_LATENT, N_NODES, ORGAN_SIZES, ORGAN_SLICES, ORGANS, ring_adjacency, ring_edges, split_organs
from chexmask_u_tools.masks import (
    add_masks,
    band_mask,
    band_z,
    convert_table_frame,
    frame_scale,
    heart_lung_overlap,
    label_map,
    organ_areas,
    organ_polygons,
    organ_validity,
    pixel_weight_map,
    raster_method,
    rasterize,
    rasterize_organs,
    sample_masks,
    sample_probability,
    scale_points,
    soft_mask,
    soft_mask_organs,
    soft_method,
    std_to_original_frame,
    std_to_preprocessed_frame,
    table_from_arrays,
    to_original_frame,
    to_preprocessed_frame,
    truncate_points,
    uncertainty_band,
)
from chexmask_u_tools.io.hf import from_hf_dataset
from chexmask_u_tools.publish import save_hub_folder, to_hf_dataset
from chexmask_u_tools.schema import (
    CANONICAL_SCHEMA,
    FRAMES,
    MAX_MASK_PIXELS,
    SOURCES,
    as_polars,
    mask_shape,
    mask_shape_exprs,
    nearest_indices,
)
from chexmask_u_tools.select import (
    ColumnRule,
    Rule,
    SampleWeighting,
    add_summaries,
    apply_filters,
    apply_rules,
    check_rules,
    dice_rule,
    filter_criteria,
    filter_report,
    filter_rules,
    image_rule,
    latent_rule,
    latent_sigma_mean,
    node_rule,
    node_sigma,
    node_sigma_max,
    node_sigma_mean,
    node_sigma_quantile,
    node_weights,
    organ_rule,
    organ_sigma_mean,
    parse_rule,
    parse_rules,
    require_uncertainty,
    rule_report,
    sample_weights,
    soft_pixel_weights,
    summary_by_source,
)

__version__ = "0.1.0"

# Names that need torch (the ``[torch]`` extra) resolve on first use, so that
# ``import chexmask_u_tools`` works, and stays fast, without torch installed.
_TORCH_NAMES = {
    "rasterize_torch": "masks.raster_torch",
    "rasterize_organs_torch": "masks.raster_torch",
    "soft_mask_torch": "masks.soft_torch",
    "soft_mask_organs_torch": "masks.soft_torch",
    "DeviceMasks": "masks.device",
    "HybridGNet": "model",
    "load_pretrained": "model",
    "predict": "model",
    "prediction_provenance": "model",
    "roi_sample": "model",
    "CheXmaskUDataset": "train",
    "CheXmaskUIterableDataset": "train",
    "SampleOptions": "train",
}

# Modules of the flat 0.1 layout, kept as attributes under their old names so
# that code written against 0.1 (``cxu.plots.plot_contours``) keeps working.
_MODULE_ALIASES = {
    "analysis": "analysis",
    "cache": "hub.cache",
    "corruptions": "analysis.corruptions",
    "errors": "errors",
    "filtering": "select.filtering",
    "frames": "masks.frames",
    "geometry": "masks.geometry",
    "images": "images",
    "layout": "layout",
    "parsing": "io.parsing",
    "paths": "images.resolver",
    "plots": "analysis.plots",
    "raster": "masks.raster",
    "released": "io.released",
    "rle": "io.rle",
    "rules": "select.rules",
    "sample": "io.sample",
    "schema": "schema",
    "soft": "masks.soft",
    "table": "io.table",
    "uncertainty": "select.uncertainty",
    "weights": "select.weights",
}


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        return getattr(_import_module(f"{__name__}.{_TORCH_NAMES[name]}"), name)
    if name in _MODULE_ALIASES:
        return _import_module(f"{__name__}.{_MODULE_ALIASES[name]}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_TORCH_NAMES) | set(_MODULE_ALIASES))
