"""Landmarks to masks: frames, exact rasterization (numpy and torch), soft masks and bands, shapely geometry.

The torch modules (:mod:`chexmask_u_tools.masks.raster_torch`,
:mod:`chexmask_u_tools.masks.soft_torch`) are imported on demand, so this
subpackage works without torch.
"""

from __future__ import annotations

from chexmask_u_tools.masks.frames import (
    convert_table_frame,
    frame_scale,
    landmarks_on_image,
    std_to_original_frame,
    std_to_preprocessed_frame,
    to_original_frame,
    to_preprocessed_frame,
)
from chexmask_u_tools.masks.geometry import heart_lung_overlap, organ_areas, organ_polygons, organ_validity
from chexmask_u_tools.masks.raster import label_map, rasterize, rasterize_organs, scale_points, truncate_points
from chexmask_u_tools.masks.tables import add_masks, table_from_arrays
from chexmask_u_tools.masks.soft import (
    band_mask,
    band_z,
    pixel_weight_map,
    sample_masks,
    sample_probability,
    soft_mask,
    soft_mask_organs,
    soft_method,
    uncertainty_band,
)

__all__ = [
    "add_masks",
    "band_mask",
    "band_z",
    "convert_table_frame",
    "frame_scale",
    "heart_lung_overlap",
    "label_map",
    "landmarks_on_image",
    "organ_areas",
    "organ_polygons",
    "organ_validity",
    "pixel_weight_map",
    "rasterize",
    "rasterize_organs",
    "sample_masks",
    "sample_probability",
    "scale_points",
    "soft_mask",
    "soft_mask_organs",
    "soft_method",
    "std_to_original_frame",
    "std_to_preprocessed_frame",
    "table_from_arrays",
    "to_original_frame",
    "to_preprocessed_frame",
    "truncate_points",
    "uncertainty_band",
]
