"""Landmarks to masks: frames, exact rasterization (numpy and torch), soft masks and bands, shapely geometry.

The torch modules (:mod:`chexmask_u_tools.masks.raster_torch`,
:mod:`chexmask_u_tools.masks.soft_torch`, :mod:`chexmask_u_tools.masks.device`)
are imported on demand, so this subpackage works without torch:
``chexmask_u_tools.masks.DeviceMasks`` and the ``*_torch`` functions resolve on
first use.
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
from chexmask_u_tools.masks.raster import (
    label_map,
    raster_method,
    rasterize,
    rasterize_organs,
    scale_points,
    truncate_points,
)
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

# Names that need torch resolve on first use (module __getattr__), like the package's flat API.
_TORCH_NAMES = {
    "DeviceMasks": "device",
    "rasterize_organs_torch": "raster_torch",
    "rasterize_torch": "raster_torch",
    "soft_mask_organs_torch": "soft_torch",
    "soft_mask_torch": "soft_torch",
}

__all__ = [
    "DeviceMasks",
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
    "raster_method",
    "rasterize",
    "rasterize_organs",
    "rasterize_organs_torch",
    "rasterize_torch",
    "sample_masks",
    "sample_probability",
    "scale_points",
    "soft_mask",
    "soft_mask_organs",
    "soft_mask_organs_torch",
    "soft_mask_torch",
    "soft_method",
    "std_to_original_frame",
    "std_to_preprocessed_frame",
    "table_from_arrays",
    "to_original_frame",
    "to_preprocessed_frame",
    "truncate_points",
    "uncertainty_band",
]


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_TORCH_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
