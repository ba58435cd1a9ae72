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

Memory per image is bounded.  The size in the file header is checked against
:data:`MIN_SIDE`, :data:`MAX_SIDE` and :data:`MAX_PIXELS` before any pixel is
decoded; the decoded image is then converted to uint8 in strips of rows, so the
peak is Pillow's decoded image (1 byte per pixel for ``L``, 2 for 16-bit, 4 for
RGB and 32-bit) plus the (H, W) uint8 result plus one strip (at most 32 MB):
about 0.8 GB for a 16-bit image at :data:`MAX_PIXELS`.  A JPEG whose coded
data is too short for the size its header claims (fewer bits than 8x8 blocks,
which no valid Huffman-coded JPEG can be) is refused before decoding, instead of
decoding a few real rows and a gray rest.  Truncated data is always an error:
Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
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
MAX_PIXELS = 2**27
"""Largest accepted pixel count (134,217,728, e.g. 11585 x 11585; the biggest public chest
X-rays have ~20 M).  Checked from the file header before decoding; it bounds the memory
of one read (module docstring)."""

_STRIP_PIXELS = 2**22
"""Pixels converted at a time (a strip of rows): bounds the float64 temporaries to 32 MB."""

HighBit = Literal["minmax", "shift"]


def _check_size(height: int, width: int, path: object) -> None:
    if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE) or height * width > MAX_PIXELS:
        raise ImageError(
            f"{path}: image size {width}x{height} (WxH) is outside the accepted range "
            f"[{MIN_SIDE}, {MAX_SIDE}] per side and at most MAX_PIXELS = {MAX_PIXELS} pixels "
            "(chexmask_u_tools.images.read; checked before decoding to bound memory): downscale the file first"
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
    extrema = _finite_extrema(values)
    if extrema is None:
        return np.zeros(values.shape, dtype=np.uint8)
    return _minmax_scale(values, *extrema)


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
        # The header's size is checked before the pixel data is decoded.
        _check_size(int(getattr(dataset, "Rows", 0) or 0), int(getattr(dataset, "Columns", 0) or 0), path)
        pixels = dataset.pixel_array
    except ImageError:
        raise
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


_HUFFMAN_DCT_FRAMES = (0xC0, 0xC1, 0xC2)  # baseline, extended sequential, progressive


def _check_jpeg_data(path: Path, width: int, height: int) -> None:
    """Refuse a JPEG whose entropy-coded data cannot cover the size its header claims.

    Every 8x8 block of a Huffman-coded DCT JPEG costs at least one bit (its DC code,
    in the first scan that covers it), so a valid file holds at least as many coded
    bits after its first SOS marker as its smallest component has blocks.  libjpeg
    fills what is missing with gray and only warns, and Pillow drops the warning.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        if handle.read(2) != b"\xff\xd8":
            return
        frame: int | None = None
        components: list[tuple[int, int]] = []
        while True:
            byte = handle.read(1)
            while byte == b"\xff":  # fill bytes before a marker
                byte = handle.read(1)
            if not byte:
                return
            marker = byte[0]
            if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
                continue
            head = handle.read(2)
            if len(head) < 2:
                return
            length = int.from_bytes(head, "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                body = handle.read(length - 2)
                frame = marker
                count = body[5] if len(body) > 5 else 0
                components = [(body[7 + 3 * i] >> 4, body[7 + 3 * i] & 15) for i in range(count) if 8 + 3 * i < len(body)]
                continue
            if marker == 0xDA:
                coded = size - (handle.tell() + length - 2)
                break
            if marker == 0xD9:
                return
            handle.seek(length - 2, os.SEEK_CUR)
    if frame not in _HUFFMAN_DCT_FRAMES or not components:
        return  # arithmetic coding can be shorter; lossless and hierarchical are not bounded here
    h_max = max(h for h, _ in components) or 1
    v_max = max(v for _, v in components) or 1

    def ceil_div(a: int, b: int) -> int:
        return -(-a // b)

    blocks = min(
        ceil_div(ceil_div(width * h, h_max), 8) * ceil_div(ceil_div(height * v, v_max), 8) for h, v in components
    )
    if coded * 8 < blocks:
        raise ImageError(
            f"{path}: JPEG header claims {width}x{height} (WxH) pixels, i.e. at least {blocks} coded 8x8 blocks, "
            f"but the file holds only {max(coded, 0)} bytes of coded data (at least one bit per block is needed): "
            "truncated or corrupt"
        )


def _row_strips(height: int, width: int) -> Iterator[tuple[int, int]]:
    rows = max(1, _STRIP_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        yield top, min(height, top + rows)


def _finite_extrema(values: np.ndarray) -> tuple[float, float] | None:
    if np.issubdtype(values.dtype, np.integer):
        return (float(values.min()), float(values.max())) if values.size else None
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else None


def _minmax_scale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``round((v - low) / (high - low) * 255)`` clipped to 0..255; non-finite values become 0."""
    values = values.astype(np.float64)
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    finite = np.isfinite(values)
    scaled = np.where(finite, (values - low) * (255.0 / (high - low)), 0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


_EIGHT_BIT_MODES = ("L", "1", "P", "PA", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def _pixels(image, path: Path, high_bit: HighBit) -> np.ndarray:
    """A loaded, EXIF-transposed Pillow image -> (H, W) uint8 (conversions: module docstring).

    Converted in strips of rows: no full-size copy besides the result (module docstring).
    """
    mode = image.mode
    width, height = image.size
    out = np.empty((height, width), dtype=np.uint8)

    def strip(top: int, bottom: int):
        return image.crop((0, top, width, bottom))

    if mode in _EIGHT_BIT_MODES:
        target = None
        if mode in ("P", "PA"):
            target = "RGBA" if "transparency" in image.info or mode == "PA" else "RGB"
        for top, bottom in _row_strips(height, width):
            part = strip(top, bottom)
            if target is not None:
                part = part.convert(target)
            if part.mode != "L":
                part = part.convert("L")
            out[top:bottom] = np.asarray(part, dtype=np.uint8)
        return out
    if mode.startswith("I;16"):
        dtype, bits = np.uint16, 16
    elif mode in ("I", "F"):
        dtype, bits = None, 32 if mode == "I" else 16
    else:
        raise ImageError(f"{path}: unsupported image mode {mode!r}")

    def values(top: int, bottom: int) -> np.ndarray:
        return np.asarray(strip(top, bottom), dtype=dtype)

    if high_bit == "shift":
        for top, bottom in _row_strips(height, width):
            out[top:bottom] = to_uint8(values(top, bottom), "shift", bits=bits)
        return out
    if high_bit != "minmax":
        raise InputError(f"high_bit must be 'minmax' or 'shift', got {high_bit!r}")
    extrema = [e for e in (_finite_extrema(values(t, b)) for t, b in _row_strips(height, width)) if e is not None]
    if not extrema:
        out[:] = 0
        return out
    low, high = min(e[0] for e in extrema), max(e[1] for e in extrema)
    for top, bottom in _row_strips(height, width):
        out[top:bottom] = _minmax_scale(values(top, bottom), low, high)
    return out


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
            if image.format == "JPEG":
                _check_jpeg_data(path, image.width, image.height)
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
    except MemoryError as error:
        raise ImageError(f"{path}: not enough memory to decode this image ({error or 'MemoryError'})") from error
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as error:  # truncated or corrupt data
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
