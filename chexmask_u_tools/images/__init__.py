"""The user's images: reading them as 8-bit gray, CheXmask's preprocessing, and finding each row's file."""

from __future__ import annotations

from chexmask_u_tools.images.preprocess import (
    bilinear_taps,
    crop_black_border,
    pad_offsets,
    pad_to_square,
    resample_reduced,
    resize_levels,
)
from chexmask_u_tools.images.read import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    MAX_SIDE,
    MIN_SIDE,
    list_images,
    read_image,
    read_image_reduced,
    to_uint8,
)
from chexmask_u_tools.images.resolver import (
    ImageCheck,
    ImageResolver,
    MissingImageError,
    as_resolver,
    check_image_id,
    check_images,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "MAX_SIDE",
    "MIN_SIDE",
    "ImageCheck",
    "ImageResolver",
    "MissingImageError",
    "as_resolver",
    "bilinear_taps",
    "check_image_id",
    "check_images",
    "crop_black_border",
    "list_images",
    "pad_offsets",
    "pad_to_square",
    "read_image",
    "read_image_reduced",
    "resample_reduced",
    "resize_levels",
    "to_uint8",
]
