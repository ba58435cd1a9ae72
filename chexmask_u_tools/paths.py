"""Finding each row's image on the user's disk.

CheXmask-U ships no images (SPEC section 1); a row names its image by the
source's own id.  :class:`ImageResolver` maps ``(source, image_id)`` to a file
under the user's copy of each database, trying the layouts the databases are
distributed in:

=================  ==========================================================
source             files tried under the root, in order
=================  ==========================================================
``CheXpert``       ``Path`` as given, with ``.jpg`` (then ``.png``) appended
                   when it has no suffix; a leading ``CheXpert-v1.0/`` or
                   ``CheXpert-v1.0-small/`` is tried both kept and stripped,
                   and the root may be the folder above ``CheXpert-v1.0*/``
``MIMIC-CXR-JPG``  ``files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg``.  The
                   subject and study ids are not in the row, so the root is
                   indexed once: from ``mimic-cxr-2.0.0-metadata.csv[.gz]``
                   when the root has it, else by walking ``files/`` (or the
                   root) for ``<dicom_id>.jpg``/``.png``/``.dcm``; also
                   ``<root>/<dicom_id>.jpg``
``ChestX-ray8``    ``<id>``, ``images/<id>``, ``images_NNN/<id>`` and
                   ``images_NNN/images/<id>`` for every ``images*`` folder
``Padchest``       ``<id>``, ``images/<id>``, ``<N>/<id>`` for every numbered
                   folder (the zip parts of BIMCV-PadChest)
``VinDr-CXR``      ``<id>``, ``train/<id>``, ``test/<id>`` with ``.dicom``,
                   ``.dcm``, ``.png``, ``.jpg`` appended
other labels       ``<id>``, then with ``.png``, ``.jpg``, ``.jpeg``, ``.dcm``
=================  ==========================================================

A user ``resolver(source, image_id)`` callable is asked first; it returns a
path, a list of candidate paths, or None to fall back to the built-in layouts.

Ids are data, not trusted paths: an id that is absolute, has a drive letter,
a ``..`` component, a backslash or a NUL is refused with
:class:`~chexmask_u_tools.errors.InputError` before any file is touched.  A
missing image raises :class:`MissingImageError`, whose message lists every
path tried.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Union

import numpy as np
import polars as pl

from .errors import ImageError, InputError

__all__ = [
    "ImageCheck",
    "ImageResolver",
    "MissingImageError",
    "check_image_id",
    "check_images",
    "demo_image_path",
    "landmarks_on_image",
    "write_demo_images",
]

PathLike = Union[str, os.PathLike]
Resolver = Callable[[str, str], Union[PathLike, Sequence[PathLike], None]]

_CHEXPERT_PREFIXES = ("CheXpert-v1.0/", "CheXpert-v1.0-small/")
_GENERIC_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")
_VINDR_SUFFIXES = (".dicom", ".dcm", ".png", ".jpg")
_MIMIC_SUFFIXES = (".jpg", ".png", ".dcm")
_MIMIC_METADATA = ("mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-metadata.csv")


class MissingImageError(ImageError):
    """No file was found for a row's image.

    Attributes
    ----------
    source, image_id:
        The row's source and id.
    tried:
        Every path (or searched index) tried, in order.
    """

    def __init__(self, source: str, image_id: str, tried: Sequence[str]) -> None:
        self.source = source
        self.image_id = image_id
        self.tried = list(tried)
        listing = "\n  ".join(self.tried) if self.tried else "(no image root configured for this source)"
        super().__init__(f"no image found for {source} id {image_id!r}; tried:\n  {listing}")


def check_image_id(image_id: object) -> str:
    """Return ``image_id`` if it is a safe relative path, else raise InputError.

    Refused: non-strings, empty ids, NUL characters, backslashes, absolute
    paths (POSIX or Windows, drive letters, UNC), ``~`` home references and
    any ``..`` component.
    """
    if not isinstance(image_id, str) or not image_id.strip():
        raise InputError(f"image id must be a non-empty string, got {image_id!r}")
    if "\x00" in image_id or "\\" in image_id:
        raise InputError(f"unsafe image id {image_id!r}: contains a NUL or a backslash")
    posix, windows = PurePosixPath(image_id), PureWindowsPath(image_id)
    if posix.is_absolute() or windows.drive or windows.root or image_id.startswith("~"):
        raise InputError(f"unsafe image id {image_id!r}: absolute paths are not accepted as ids")
    if ".." in posix.parts:
        raise InputError(f"unsafe image id {image_id!r}: '..' components could leave the image root")
    return image_id


def _canonical(source: str) -> str:
    from .table import canonical_source

    return canonical_source(source) or source


def _with_suffixes(name: str, suffixes: Sequence[str]) -> list[str]:
    if PurePosixPath(name).suffix.lower() in (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".bmp", ".tif", ".tiff"):
        return [name]
    return [name + suffix for suffix in suffixes] + [name]


class ImageResolver:
    """Map ``(source, image_id)`` to image files under per-source roots.

    Parameters
    ----------
    roots:
        Source name (any spelling the table reader knows, e.g. ``"mimic"``) ->
        a root folder or a list of them; or one folder used for every source.
    resolver:
        Optional ``resolver(source, image_id)`` asked first; returns a path, a
        list of candidate paths, or None to use the built-in layouts.  It must
        be picklable for DataLoader workers started with ``spawn``.

    Directory listings (``images*`` / numbered folders, the MIMIC index) are
    made once per root and cached on the instance; call :meth:`prepare` before
    starting DataLoader workers so that forked workers share them.
    """

    def __init__(
        self,
        roots: Mapping[str, PathLike | Sequence[PathLike]] | PathLike | None = None,
        *,
        resolver: Resolver | None = None,
    ) -> None:
        self.resolver = resolver
        self.roots: dict[str, list[Path]] = {}
        self.default_roots: list[Path] = []
        if isinstance(roots, (str, os.PathLike)):
            self.default_roots = [Path(roots)]
        elif roots is not None:
            for source, value in roots.items():
                paths = [value] if isinstance(value, (str, os.PathLike)) else list(value)
                self.roots.setdefault(_canonical(source), []).extend(Path(p) for p in paths)
        if roots is None and resolver is None:
            raise InputError("give image roots per source, a root folder, or a resolver callable")
        self._listings: dict[tuple[Path, str], list[str]] = {}
        self._mimic: dict[Path, tuple[dict[str, Path], str]] = {}

    def roots_for(self, source: str) -> list[Path]:
        """The configured roots of a source (the shared root when none is specific)."""
        return self.roots.get(_canonical(source), self.default_roots)

    def prepare(self, sources: Iterable[str] | None = None) -> "ImageResolver":
        """Build the cached listings / MIMIC index for the given sources (default: all configured)."""
        for source in sources if sources is not None else list(self.roots):
            source = _canonical(source)
            for root in self.roots_for(source):
                if source == "MIMIC-CXR-JPG":
                    self._mimic_index(root)
                elif source == "ChestX-ray8":
                    self._subdirs(root, "images")
                elif source == "Padchest":
                    self._subdirs(root, "digits")
        return self

    # ------------------------------------------------------------ listings
    def _subdirs(self, root: Path, kind: str) -> list[str]:
        key = (root, kind)
        if key not in self._listings:
            try:
                names = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
            except OSError:
                names = []
            if kind == "images":
                names = [n for n in names if n.startswith("images") and n != "images"]
            else:
                names = sorted((n for n in names if n.isdigit()), key=int)
            self._listings[key] = names
        return self._listings[key]

    def _mimic_index(self, root: Path) -> tuple[dict[str, Path], str]:
        if root in self._mimic:
            return self._mimic[root]
        index: dict[str, Path] = {}
        metadata = next((root / name for name in _MIMIC_METADATA if (root / name).is_file()), None)
        if metadata is not None:
            table = pl.read_csv(metadata, columns=["dicom_id", "subject_id", "study_id"], infer_schema_length=0)
            for dicom_id, subject, study in table.iter_rows():
                folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
                index[dicom_id] = folder / f"{dicom_id}.jpg"
            how = f"{metadata.name} ({len(index)} dicom ids)"
        else:
            top = root / "files" if (root / "files").is_dir() else root
            for folder, _, files in os.walk(top):
                for name in files:
                    stem, suffix = os.path.splitext(name)
                    if suffix.lower() in _MIMIC_SUFFIXES and stem not in index:
                        index[stem] = Path(folder) / name
            how = f"index of {len(index)} images found under {top}"
        self._mimic[root] = (index, how)
        return self._mimic[root]

    # ------------------------------------------------------------ candidates
    def _builtin(self, source: str, image_id: str, root: Path) -> list[Path | str]:
        """Candidate paths under one root; a str entry describes a searched index."""
        if source == "CheXpert":
            prefix = next((p for p in _CHEXPERT_PREFIXES if image_id.startswith(p)), None)
            if prefix is not None:
                relatives = [image_id, image_id[len(prefix):]]
            else:
                relatives = [image_id, *(p + image_id for p in _CHEXPERT_PREFIXES)]
            names = [n for rel in relatives for n in _with_suffixes(rel, (".jpg", ".png"))]
            return [root / n for n in names]
        if source == "MIMIC-CXR-JPG":
            index, how = self._mimic_index(root)
            hit = index.get(image_id) or index.get(PurePosixPath(image_id).stem)
            direct = [root / n for n in _with_suffixes(image_id, _MIMIC_SUFFIXES)]
            layout = f"{root}/files/pXX/pXXXXXXXX/sXXXXXXXX/{image_id}.jpg ({how})"
            return ([hit] if hit is not None else [layout]) + direct
        if source == "ChestX-ray8":
            folders = ["", "images"] + [
                part for d in self._subdirs(root, "images") for part in (d, f"{d}/images")
            ]
            return [root / folder / image_id if folder else root / image_id for folder in folders]
        if source == "Padchest":
            folders = ["", "images", *self._subdirs(root, "digits")]
            return [root / folder / image_id if folder else root / image_id for folder in folders]
        if source == "VinDr-CXR":
            names = _with_suffixes(image_id, _VINDR_SUFFIXES)
            return [root / folder / n if folder else root / n for folder in ("", "train", "test") for n in names]
        return [root / n for n in _with_suffixes(image_id, _GENERIC_SUFFIXES)]

    def locate(self, source: str, image_id: str) -> tuple[Path | None, list[str]]:
        """The first existing file for the row, and everything tried (as strings).

        Raises InputError for an unsafe id (see :func:`check_image_id`).
        """
        check_image_id(image_id)
        source = _canonical(source)
        tried: list[str] = []
        if self.resolver is not None:
            answer = self.resolver(source, image_id)
            if answer is not None:
                candidates = [answer] if isinstance(answer, (str, os.PathLike)) else list(answer)
                for candidate in candidates:
                    path = Path(candidate)
                    if path.is_file():
                        return path, tried
                    tried.append(f"{path} (from resolver)")
        for root in self.roots_for(source):
            for candidate in self._builtin(source, image_id, root):
                if isinstance(candidate, str):
                    tried.append(candidate)
                    continue
                if candidate.is_file():
                    return candidate, tried
                tried.append(str(candidate))
        return None, tried

    def resolve(self, source: str, image_id: str) -> Path:
        """The image file of a row; raises :class:`MissingImageError` listing every path tried."""
        path, tried = self.locate(source, image_id)
        if path is None:
            raise MissingImageError(_canonical(source), image_id, tried)
        return path

    def __call__(self, source: str, image_id: str) -> Path:
        return self.resolve(source, image_id)


def as_resolver(images: ImageResolver | Mapping | PathLike | Resolver | None) -> ImageResolver | None:
    """Accept an ImageResolver, a roots mapping / folder, or a resolver callable."""
    if images is None or isinstance(images, ImageResolver):
        return images
    if callable(images) and not isinstance(images, (str, os.PathLike, Mapping)):
        return ImageResolver(resolver=images)
    return ImageResolver(images)


# --------------------------------------------------------------------------- startup check


@dataclass
class ImageCheck:
    """Outcome of :func:`check_images`.

    Attributes
    ----------
    total, found:
        Rows checked and rows with an image on disk.
    per_source:
        Source -> ``(found, total)``.
    paths:
        One entry per row, in table order: the image path or None.
    examples:
        Up to ``max_examples`` missing rows as ``(source, image_id, tried)``.
    """

    total: int
    found: int
    per_source: dict[str, tuple[int, int]]
    paths: list[Path | None] = field(repr=False)
    examples: list[tuple[str, str, list[str]]] = field(default_factory=list, repr=False)

    @property
    def missing(self) -> int:
        return self.total - self.found

    def __str__(self) -> str:
        lines = [f"images on disk: {self.found} of {self.total} rows ({self.missing} missing)"]
        for source, (found, total) in sorted(self.per_source.items()):
            lines.append(f"  {source:<14} {found:>8} / {total}")
        for source, image_id, tried in self.examples:
            lines.append(f"  missing {source} {image_id!r}; tried {len(tried)} paths, first: {tried[0] if tried else '-'}")
        return "\n".join(lines)


def check_images(
    table: pl.DataFrame | pl.LazyFrame,
    images: ImageResolver | Mapping | PathLike | Resolver,
    *,
    max_examples: int = 5,
) -> ImageCheck:
    """Report how many rows of a canonical table have their image on disk.

    Run it before training: it resolves every row once (building the MIMIC
    index if needed) and prints nothing; ``str(result)`` is the report.
    Raises InputError on an unsafe id.
    """
    resolver = as_resolver(images)
    rows = table.lazy().select("source", "image_id").collect()
    resolver.prepare(rows["source"].unique().to_list())
    paths: list[Path | None] = []
    per_source: dict[str, list[int]] = {}
    examples: list[tuple[str, str, list[str]]] = []
    for source, image_id in rows.iter_rows():
        path, tried = resolver.locate(source, image_id)
        paths.append(path)
        counts = per_source.setdefault(source, [0, 0])
        counts[1] += 1
        if path is not None:
            counts[0] += 1
        elif len(examples) < max_examples:
            examples.append((source, image_id, tried))
    found = sum(p is not None for p in paths)
    return ImageCheck(len(paths), found, {s: (f, t) for s, (f, t) in per_source.items()}, paths, examples)


# --------------------------------------------------------------------------- row geometry


def landmarks_on_image(
    landmarks: np.ndarray,
    std: np.ndarray | None,
    *,
    row_frame: str,
    original_size: tuple[int, int] | None,
    frame: str,
    size: int | None,
) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
    """A row's landmarks and std on an output image of the chosen frame and size.

    Parameters
    ----------
    landmarks, std:
        (120, 2) in pixels of ``row_frame``; ``std`` may be None.
    row_frame:
        ``"preprocessed"`` (1024 frame) or ``"original"``.
    original_size:
        ``(height, width)`` of the original image; needed unless both frames
        are ``"preprocessed"``.
    frame:
        Output frame.  ``"preprocessed"``: the 1024 frame (rows in the original
        frame are mapped by :func:`~chexmask_u_tools.frames.to_preprocessed_frame`),
        scaled by ``size / 1024``.  ``"original"``: the original image (rows in
        the 1024 frame are mapped by :func:`~chexmask_u_tools.frames.to_original_frame`,
        exact, not rounded), then x scaled by ``size / width`` and y by
        ``size / height`` (``size=None``: native size).
    size:
        Output side ``S`` (None: 1024 for ``"preprocessed"``, native for ``"original"``).

    Returns
    -------
    ``(landmarks, std, (out_height, out_width))``: float64 (120, 2) arrays
    (``std`` None when not given) and the output image size.
    """
    from .frames import std_to_original_frame, std_to_preprocessed_frame, to_original_frame, to_preprocessed_frame
    from .schema import FRAMES, PREPROCESSED_SIZE

    if frame not in FRAMES or row_frame not in FRAMES:
        raise InputError(f"frames must be one of {FRAMES}, got frame={frame!r}, row_frame={row_frame!r}")
    landmarks = np.asarray(landmarks, dtype=np.float64)
    std = None if std is None else np.asarray(std, dtype=np.float64)
    if original_size is None and "original" in (frame, row_frame):
        raise InputError("the original image size is needed to move landmarks between the original and 1024 frames")
    if frame == "preprocessed":
        if row_frame == "original":
            oh, ow = original_size
            landmarks = to_preprocessed_frame(landmarks, oh, ow)
            std = None if std is None else std_to_preprocessed_frame(std, oh, ow)
        side = PREPROCESSED_SIZE if size is None else int(size)
        out = (side, side)
        factor = np.array([side / PREPROCESSED_SIZE] * 2)
    else:
        oh, ow = original_size
        if row_frame == "preprocessed":
            landmarks = to_original_frame(landmarks, oh, ow, round_clip=False)
            std = None if std is None else std_to_original_frame(std, oh, ow)
        out = (int(oh), int(ow)) if size is None else (int(size), int(size))
        factor = np.array([out[1] / ow, out[0] / oh])
    return landmarks * factor, None if std is None else std * factor, out


# --------------------------------------------------------------------------- demo trees


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def demo_image_path(source: str, image_id: str) -> str:
    """Where a database's own distribution would put an image, relative to its root.

    MIMIC gets made-up (but stable) subject / study folders, since the rows do
    not carry them; ChestX-ray8 goes to ``images_001/images/``, Padchest to a
    numbered folder, VinDr-CXR to ``train/<id>.png`` (PNG, as DICOM writing
    would need pydicom).
    """
    check_image_id(image_id)
    source = _canonical(source)
    h = _digest(f"{source}/{image_id}")
    if source == "CheXpert":
        return image_id if PurePosixPath(image_id).suffix else image_id + ".jpg"
    if source == "MIMIC-CXR-JPG":
        subject = 10_000_000 + h % 9_000_000
        study = 50_000_000 + (h >> 24) % 9_000_000
        return f"files/p{str(subject)[:2]}/p{subject}/s{study}/{image_id}.jpg"
    if source == "ChestX-ray8":
        return f"images_{1 + h % 3:03d}/images/{image_id}"
    if source == "Padchest":
        return f"{h % 4}/{image_id}"
    if source == "VinDr-CXR":
        return f"train/{image_id}.png"
    return image_id if PurePosixPath(image_id).suffix else image_id + ".png"


def write_demo_images(
    table: pl.DataFrame,
    root: PathLike,
    *,
    shapes: Sequence[tuple[int, int]] = ((256, 256), (240, 300), (300, 240)),
    seed: int = 0,
) -> dict[str, Path]:
    """Write a synthetic stand-in image for every row, in each source's layout.

    For tests, tutorials and benchmarks (no patient data, no network).  Row
    ``i`` gets an image of size ``shapes[i % len(shapes)]`` (height, width) in
    the original frame: a smooth body, dark lungs and a bright heart drawn from
    the row's 1024-frame landmarks (preprocessed rows) and mapped back through
    the centred-square padding, plus noise.  Rows in the original frame use
    their own Height/Width instead.

    Returns
    -------
    Source -> its root folder (``root/<source>``), ready for :class:`ImageResolver`.
    """
    from PIL import Image

    from .raster import rasterize_organs

    root = Path(root)
    rng = np.random.default_rng(seed)
    roots: dict[str, Path] = {}
    columns = table.select("source", "image_id", "frame", "height", "width", "landmarks")
    for i, (source, image_id, frame, height, width, landmarks) in enumerate(columns.iter_rows()):
        source = _canonical(source)
        points = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
        if frame == "original" and height and width:
            h, w = int(height), int(width)
            side = 256
            points = points * (side / max(h, w))
            top, left = (side - round(h * side / max(h, w))) // 2, (side - round(w * side / max(h, w))) // 2
            points = points + (left, top)
        else:
            h, w = shapes[i % len(shapes)]
            side = 256
            points = points * (side / 1024.0)
            top, left = (side - round(h * side / max(h, w))) // 2, (side - round(w * side / max(h, w))) // 2
        masks = rasterize_organs(points, side, side)
        yy, xx = np.mgrid[0:side, 0:side] / side
        canvas = 150 + 60 * np.exp(-((xx - 0.5) ** 2) / 0.08) - 40 * yy
        canvas = np.where(masks[0] | masks[1], canvas - 100, canvas)
        canvas = np.where(masks[2], canvas + 70, canvas)
        inner_h, inner_w = side - 2 * top, side - 2 * left
        crop = np.clip(canvas[top : top + inner_h, left : left + inner_w], 0, 255).astype(np.uint8)
        image = np.asarray(Image.fromarray(crop).resize((w, h), Image.BILINEAR), dtype=np.float64)
        image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
        target = root / source / demo_image_path(source, image_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(target.name + ".part")
        Image.fromarray(image).save(temp, format="JPEG" if target.suffix == ".jpg" else "PNG", quality=92)
        os.replace(temp, target)
        roots[source] = root / source
    return roots
