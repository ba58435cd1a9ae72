"""Reading chest X-ray images as 8-bit grayscale arrays and the geometric preprocessing of CheXmask.

NumPy and Pillow only (no torch, no OpenCV), so it serves the predictor, datasets
and plotting alike.  Conventions: arrays are ``(H, W)`` uint8, row = y, column = x.

Conversions done by :func:`read_image`:

* ``L`` (8-bit gray): as is.  ``1`` (bilevel): 0 / 255.
* RGB / palette / CMYK / YCbCr: ITU-R 601 luma (Pillow's ``convert("L")``,
  ``L = 0.299 R + 0.587 G + 0.114 B``, the formula OpenCV's grayscale read uses).
* Alpha (``LA``, ``RGBA``, ``PA``): the alpha channel is discarded, as OpenCV's
  grayscale read does (X-ray PNGs with alpha carry an opaque one).
* More than 8 bits (16-bit PNG/TIFF ``I;16``, 32-bit ``I``, float ``F``, DICOM):
  ``high_bit="minmax"`` (default) stretches the image's own min..max to 0..255
  (rounded), which keeps 12-bit data stored in 16-bit containers visible;
  ``high_bit="shift"`` keeps the top 8 of 16 bits (``v >> 8``, OpenCV's
  ``IMREAD_GRAYSCALE`` behaviour).  A constant image becomes all zeros.
* DICOM (``.dcm``/``.dicom`` or the ``DICM`` magic): read with pydicom when it is
  installed (``pip install chexmask-u-tools[dicom]``), rescale slope/intercept
  applied, ``MONOCHROME1`` inverted, then scaled as above.
* EXIF orientation is applied (as OpenCV does by default).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import numpy as np

from chexmask_u_tools.errors import ImageError, InputError

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "MAX_SIDE",
    "MIN_SIDE",
    "list_images",
    "read_image",
    "read_image_reduced",
    "to_uint8",
]

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
"""File suffixes (case-insensitive) taken as images when listing a directory."""

MIN_SIDE = 8
"""Smallest accepted image side, pixels."""
MAX_SIDE = 32768
"""Largest accepted image side, pixels."""
MAX_PIXELS = 2**28
"""Largest accepted pixel count (268 M; the biggest public chest X-rays are ~20 M)."""

HighBit = Literal["minmax", "shift"]


def _check_size(height: int, width: int, path: object) -> None:
    if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE) or height * width > MAX_PIXELS:
        raise ImageError(
            f"{path}: image size {width}x{height} (WxH) is outside the accepted range "
            f"[{MIN_SIDE}, {MAX_SIDE}] per side, at most {MAX_PIXELS} pixels"
        )


def to_uint8(values: np.ndarray, high_bit: HighBit = "minmax", bits: int = 16) -> np.ndarray:
    """Scale a 2-D integer or float image with more than 8 bits to uint8.

    Parameters
    ----------
    values:
        (H, W) array of any real dtype.
    high_bit:
        ``"minmax"``: ``round((v - min) / (max - min) * 255)`` (zeros if constant);
        ``"shift"``: ``v >> (bits - 8)`` clipped to 0..255 (integers only).
    bits:
        Container depth for ``"shift"`` (16 for 16-bit PNG).
    """
    values = np.asarray(values)
    if high_bit == "shift":
        if not np.issubdtype(values.dtype, np.integer):
            raise InputError("high_bit='shift' needs an integer image; use 'minmax' for float images")
        return np.clip(values.astype(np.int64) >> (bits - 8), 0, 255).astype(np.uint8)
    if high_bit != "minmax":
        raise InputError(f"high_bit must be 'minmax' or 'shift', got {high_bit!r}")
    values = values.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    low, high = values[finite].min(), values[finite].max()
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = np.where(finite, (values - low) * (255.0 / (high - low)), 0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _read_dicom(path: Path, high_bit: HighBit) -> np.ndarray:
    try:
        import pydicom
    except ImportError as error:
        raise ImageError(f"{path}: reading DICOM needs pydicom (pip install 'chexmask-u-tools[dicom]')") from error
    try:
        dataset = pydicom.dcmread(str(path))
        pixels = dataset.pixel_array
    except Exception as error:  # pydicom raises many types for corrupt files
        raise ImageError(f"{path}: unreadable DICOM: {error}") from error
    if pixels.ndim != 2:
        raise ImageError(f"{path}: DICOM pixel data of shape {pixels.shape} is not a single grayscale frame")
    _check_size(*pixels.shape, path)
    slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
    intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
    values = pixels.astype(np.float64) * slope + intercept
    if str(getattr(dataset, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        values = values.max() - values
    if high_bit == "shift":
        bits = int(getattr(dataset, "BitsStored", 16) or 16)
        return to_uint8(np.rint(values - values.min()).astype(np.int64), "shift", bits=max(bits, 8))
    return to_uint8(values, "minmax")


def _pixels(image, path: Path, high_bit: HighBit) -> np.ndarray:
    """A loaded, EXIF-transposed Pillow image -> (H, W) uint8 (conversions: module docstring)."""
    mode = image.mode
    if mode in ("L", "1", "P", "PA", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        if mode in ("P", "PA"):
            image = image.convert("RGBA" if "transparency" in image.info or mode == "PA" else "RGB")
        if image.mode != "L":
            image = image.convert("L")
        # np.asarray of a Pillow image is a read-only view of a fresh buffer; the copy makes it writable.
        return np.asarray(image, dtype=np.uint8).copy()
    if mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.uint16)
        return to_uint8(values, high_bit, bits=16)
    if mode in ("I", "F"):
        values = np.asarray(image)
        return to_uint8(values, high_bit, bits=32 if mode == "I" else 16)
    raise ImageError(f"{path}: unsupported image mode {mode!r}")


def _read(
    path: str | os.PathLike, high_bit: HighBit, limit: Callable[[int, int], int] | None
) -> tuple[np.ndarray, int, tuple[int, int]]:
    """Decode, at ``1 / k`` of the resolution when ``limit(height, width)`` allows ``k > 1``.

    Returns the (ceil(H / k), ceil(W / k)) uint8 pixels, ``k`` and the full (H, W).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    if _is_dicom(path):
        pixels = _read_dicom(path, high_bit)
        return _box_reduce(pixels, limit(*pixels.shape) if limit else 1)
    try:
        with Image.open(path) as image:
            _check_size(image.height, image.width, path)
            full_w, full_h = image.size
            factor = max(1, limit(full_h, full_w)) if limit else 1
            drafted = False
            if factor > 1 and image.format == "JPEG":
                # DCT-domain scaling by 1/2, 1/4 or 1/8 while decoding: the inverse
                # DCT and the copies shrink (entropy decoding stays).  Pillow picks the
                # largest such scale that keeps at least the size asked for.
                answer = image.draft("L", (max(1, full_w // factor), max(1, full_h // factor)))
                if answer is not None:
                    drafted, factor = True, int(round(full_w / answer[1][2]))
            image.load()
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # orientations that swap the axes
                full_h, full_w = full_w, full_h
            ImageOps.exif_transpose(image, in_place=True)
            if factor > 1 and not drafted and image.mode == "L":
                # Average before leaving Pillow: the full-resolution pixels are never copied.
                image = image.reduce(factor)
                drafted = True
            pixels = _pixels(image, path, high_bit)
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise ImageError(f"{path}: not a readable image: {error}") from error
    except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt data
        raise ImageError(f"{path}: corrupt or truncated image: {error}") from error
    if drafted:
        return pixels, factor, (full_h, full_w)
    return _box_reduce(pixels, factor)


def _box_reduce(pixels: np.ndarray, factor: int) -> tuple[np.ndarray, int, tuple[int, int]]:
    """Mean of ``factor x factor`` blocks (partial blocks at the bottom / right edge: mean of what is there)."""
    full = pixels.shape
    if factor <= 1:
        return pixels, 1, full
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).reduce(factor), dtype=np.uint8).copy(), factor, full


def read_image(path: str | os.PathLike, *, high_bit: HighBit = "minmax") -> np.ndarray:
    """Read an image file as an (H, W) uint8 grayscale array (conversions: module docstring).

    Raises
    ------
    ImageError
        Missing or unreadable file, not an image, truncated data, multi-channel data
        that cannot be converted, a size outside [MIN_SIDE, MAX_SIDE] per side or above
        MAX_PIXELS, or a DICOM without pydicom installed.
    """
    return _read(path, high_bit, None)[0]


def read_image_reduced(
    path: str | os.PathLike, out_side: int, *, square: bool = True, high_bit: HighBit = "minmax"
) -> tuple[np.ndarray, int, tuple[int, int]]:
    """Read an image that will be shrunk to ``out_side x out_side``, decoding only the pixels needed.

    The image is read at ``1 / k`` of its resolution for the largest ``k`` that
    keeps it at least as large as its footprint in the output: ``max(H, W) / k >= out_side``
    when it will be zero-padded to a centred square first (``square=True``),
    ``min(H, W) / k >= out_side`` when it will be stretched to the square
    (``square=False``).  JPEG: DCT-domain scaling inside the decoder (``k`` in
    1, 2, 4, 8; libjpeg's scaled inverse DCT, within a few gray levels of the
    mean of each ``k x k`` block; a colour JPEG gives its luma channel Y), which
    skips the full-size inverse DCT and copies.  Other formats: decoded in full,
    then the mean of each ``k x k`` block (Pillow's ``Image.reduce``, any
    integer ``k``).  Either way reduced pixel ``i`` covers full-resolution pixels
    ``[k i, k i + k)`` (the last one what remains of the image), so
    full-resolution coordinate ``u`` is reduced coordinate ``(u + 0.5) / k - 0.5``
    (pixel centres on integers).  Not the pixels :func:`read_image` gives (that
    is what the model's preprocessing needs); meant for training data at a
    reduced size.

    Returns
    -------
    ``(pixels, k, (H, W))``: the (ceil(H / k), ceil(W / k)) uint8 array, the factor
    ``k >= 1`` and the full-resolution size (after the EXIF rotation, like the pixels).

    Raises
    ------
    ImageError
        As :func:`read_image`.
    """
    if isinstance(out_side, bool) or not isinstance(out_side, (int, np.integer)) or out_side < 1:
        raise InputError(f"out_side must be a positive integer, got {out_side!r}")

    def limit(height: int, width: int) -> int:
        return (max(height, width) if square else min(height, width)) // int(out_side)

    return _read(path, high_bit, limit)


def list_images(source: str | os.PathLike | Iterable[str | os.PathLike], *, recursive: bool = True) -> list[tuple[str, Path]]:
    """Image files to process, each with its image id.

    Parameters
    ----------
    source:
        A directory (files with an :data:`IMAGE_SUFFIXES` suffix, sorted; ids are the
        POSIX paths relative to it, like CheXpert's ``Path`` column), a text file
        listing one path per line (blank lines and ``#`` comments skipped; relative
        paths are relative to the list file; the id is the line as written), a single
        image file (id: its name), or an iterable of paths (id: the path as given).
    recursive:
        Descend into sub-directories of a directory source.

    Returns
    -------
    List of ``(image_id, path)``; ids are unique.

    Raises
    ------
    InputError
        Missing source, a directory without images, or duplicate ids.
    """
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if root.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            items = [(p.relative_to(root).as_posix(), p) for p in files]
            if not items:
                raise InputError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in directory {root}")
        elif root.is_file() and root.suffix.lower() in IMAGE_SUFFIXES:
            items = [(root.name, root)]
        elif root.is_file():
            items = []
            for line in root.read_text().splitlines():
                entry = line.strip()
                if entry and not entry.startswith("#"):
                    path = Path(entry)
                    items.append((entry, path if path.is_absolute() else root.parent / path))
            if not items:
                raise InputError(f"image list {root} names no files")
        else:
            raise InputError(f"image source {root} does not exist")
    else:
        items = [(os.fspath(p), Path(p)) for p in source]
    counts = Counter(image_id for image_id, _ in items)
    duplicates = sorted(i for i, n in counts.items() if n > 1)
    if duplicates:
        raise InputError(f"duplicate image ids ({len(duplicates)}): {duplicates[:5]}")
    return items
