"""Finding each row's image on the user's disk.

CheXmask-U ships no images (SPEC section 1); a row names its image by the
source's own id.  :class:`ImageResolver` maps ``(source, image_id)`` to a file
under the user's copy of each database, trying the layouts the databases are
distributed in.  Each layout is the source's
:class:`~chexmask_u_tools.sources.ImageLayout` in the source registry (one
generic candidate generator reads it, :meth:`ImageResolver.candidates`); today
it says:

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
                   (an id without an image suffix: with ``.png``, ``.jpg``,
                   ``.jpeg``, ``.dcm`` appended first, as for Padchest)
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

import difflib
import errno
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import polars as pl

from chexmask_u_tools.errors import ImageError, InputError
from chexmask_u_tools.sources import (
    GENERIC_LAYOUT,
    REGISTRY,
    SOURCES,
    ImageLayout,
    canonical_source,
    closest_source,
)

__all__ = [
    "ImageCheck",
    "ImageResolver",
    "MissingImageError",
    "as_resolver",
    "check_image_id",
    "check_images",
    "image_layout",
]

PathLike = str | os.PathLike
Resolver = Callable[[str, str], PathLike | Sequence[PathLike] | None]

_KNOWN_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".bmp", ".tif", ".tiff")


class MissingImageError(ImageError):
    """No file was found for a row's image.

    Attributes
    ----------
    source, image_id:
        The row's source and id.
    tried:
        Every path (or searched index) tried, in order.

    ``note`` (optional) leads the message, e.g. how many rows miss their image.
    """

    def __init__(self, source: str, image_id: str, tried: Sequence[str], *, note: str | None = None) -> None:
        self.source = source
        self.image_id = image_id
        self.tried = list(tried)
        listing = "\n  ".join(self.tried) if self.tried else "(no image root configured for this source)"
        message = f"no image found for {source} id {image_id!r}; tried:\n  {listing}"
        super().__init__(message if note is None else f"{note}\nfirst missing row: {message}")


MAX_NAME_BYTES = 255
"""Longest file or folder name common file systems store (NAME_MAX on Linux, macOS and Windows)."""


def check_image_id(image_id: object) -> str:
    """Return ``image_id`` if it is a safe relative path, else raise InputError.

    Refused: non-strings, empty ids, NUL characters, backslashes, absolute
    paths (POSIX or Windows, drive letters, UNC), ``~`` home references, any
    ``..`` component, ids naming no file (``.``, ``./``: the root itself) and
    text that is not valid Unicode (an unpaired surrogate such as ``\udcff``,
    left by decoding non-UTF-8 bytes with ``errors="surrogateescape"``).

    Examples
    --------
    >>> check_image_id("train/patient00001/study1/view1_frontal.jpg")
    'train/patient00001/study1/view1_frontal.jpg'
    >>> check_image_id("../etc/passwd")
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.InputError: unsafe image id '../etc/passwd': '..' components could leave the image root
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
    if not posix.parts:
        raise InputError(f"image id {image_id!r} names no file (it is the image root itself); fix the row's id")
    try:
        image_id.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InputError(
            f"image id {image_id!r} is not valid text: {error.object[error.start]!r} at position {error.start} is an "
            "unpaired surrogate, which no file name holds (e.g. bytes that were not UTF-8, decoded with "
            "errors='surrogateescape'); "
            "read the table with its real encoding (CheXmask-U files are UTF-8) or fix the row's id"
        ) from None
    longest = max(len(part.encode("utf-8")) for part in posix.parts)
    if longest > MAX_NAME_BYTES:
        raise InputError(
            f"image id {image_id[:60]!r}... has a path component of {longest} bytes; no file system "
            f"stores names over {MAX_NAME_BYTES} bytes, so it names no image file"
        )
    return image_id


def _is_file(path: Path) -> bool:
    """``path.is_file()``, where a name too long for the file system is simply no file."""
    try:
        return path.is_file()
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            return False
        raise


def _canonical(source: str) -> str:
    return canonical_source(source) or source


def image_layout(source: str) -> ImageLayout:
    """The registry's :class:`~chexmask_u_tools.sources.ImageLayout` of a source label
    (:data:`~chexmask_u_tools.sources.GENERIC_LAYOUT` for a label that is not one of the five sources).

    Examples
    --------
    >>> image_layout("vindr").folders
    ('', 'train', 'test')
    >>> image_layout("my-hospital").suffixes
    ('.png', '.jpg', '.jpeg', '.dcm')
    """
    canonical = canonical_source(source)
    return REGISTRY[canonical].image_layout if canonical is not None else GENERIC_LAYOUT


def _root_key(key: object) -> str:
    """The canonical source of a roots key; a key close to a source name is refused as a typo."""
    if not isinstance(key, str) or not key.strip():
        raise InputError(f"image root keys must be source names, got {key!r}")
    canonical = canonical_source(key)
    if canonical is not None:
        return canonical
    close = closest_source(key)
    if close is not None:
        raise InputError(
            f"unknown source {key!r} in the image roots (did you mean {close!r}?); the sources are {SOURCES} "
            "(a label of your own, far from these names, is accepted as is)"
        )
    return key


def _existing_root(path: PathLike, key: str | None) -> Path:
    """``path`` as a Path; InputError naming the key and the path when it is not an existing folder."""
    root = Path(path)
    if not root.is_dir():
        what = f"image root for {key!r}" if key is not None else "image root"
        state = "is not a folder" if root.exists() else "does not exist"
        raise InputError(f"{what} {state}: {root}; pass the folder holding that database's images")
    return root


def _with_suffixes(name: str, suffixes: Sequence[str]) -> list[str]:
    if PurePosixPath(name).suffix.lower() in _KNOWN_SUFFIXES:
        return [name]
    return [name + suffix for suffix in suffixes] + [name]


def _relative_names(image_id: str, layout: ImageLayout) -> list[str]:
    """The file names an id may have under a folder: prefix variants, then suffix variants of each."""
    prefix = next((p for p in layout.strip_prefixes if image_id.startswith(p)), None)
    if prefix is not None:
        relatives = [image_id, image_id[len(prefix) :]]
    else:
        relatives = [image_id, *(p + image_id for p in layout.strip_prefixes)]
    return [name for relative in relatives for name in _with_suffixes(relative, layout.suffixes)]


def _selects(selector: str, name: str) -> bool:
    """Whether a sub-folder ``name`` is one of ``ImageLayout.listed_folders``:
    ``"digits"`` selects numbered folders, any other word the folders starting with it."""
    return name.isdigit() if selector == "digits" else name.startswith(selector)


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

    Notes
    -----
    The files tried for a row follow the source's
    :class:`~chexmask_u_tools.sources.ImageLayout` in the source registry.
    Directory listings (``images*`` / numbered folders, the MIMIC index) are
    made once per root and cached on the instance; call :meth:`prepare` before
    starting DataLoader workers so that forked workers share them.

    Examples
    --------
    A ChestX-ray8 copy keeps its images in ``images_NNN/images/``:

    >>> import tempfile, pathlib
    >>> import chexmask_u_tools as cxu
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "images_001" / "images").mkdir(parents=True)
    >>> _ = (root / "images_001" / "images" / "00000001_000.png").write_bytes(b"")
    >>> resolver = cxu.ImageResolver({"chestx-ray8": root})
    >>> resolver.resolve("ChestX-ray8", "00000001_000.png").relative_to(root).as_posix()
    'images_001/images/00000001_000.png'
    >>> resolver.resolve("ChestX-ray8", "00000002_000.png")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    chexmask_u_tools.images.resolver.MissingImageError: no image found for ChestX-ray8 id '00000002_000.png'; tried:
    ...
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
            self.default_roots = [_existing_root(roots, None)]
        elif roots is not None:
            if not isinstance(roots, Mapping):
                raise InputError(f"image roots must be a folder or a mapping source -> folder(s), got {type(roots).__name__}")
            for key, value in roots.items():
                source = _root_key(key)
                paths = [value] if isinstance(value, (str, os.PathLike)) else list(value)
                self.roots.setdefault(source, []).extend(_existing_root(p, key) for p in paths)
        if roots is None and resolver is None:
            raise InputError("give image roots per source, a root folder, or a resolver callable")
        self._listings: dict[tuple[Path, str], list[str]] = {}
        self._indexes: dict[Path, tuple[dict[str, Path], str]] = {}

    def check_labels(self, labels: Iterable[str]) -> None:
        """Refuse a roots key that is neither one of the five sources nor one of ``labels`` (a table's source values).

        Raises :class:`~chexmask_u_tools.errors.InputError` naming the key and
        the closest valid name.
        """
        labels = {str(label) for label in labels}
        valid = sorted(labels | set(SOURCES))
        for key in self.roots:
            if key not in labels and canonical_source(key) is None:
                close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise InputError(
                    f"image root key {key!r} is neither a source nor a source label of the table{hint}; "
                    f"the table's sources are {sorted(labels)}"
                )

    def sources_without_roots(self, labels: Iterable[str]) -> list[str]:
        """The labels among ``labels`` that no root (and no resolver callable) can serve."""
        if self.resolver is not None or self.default_roots:
            return []
        return sorted({str(label) for label in labels if not self.roots_for(str(label))})

    def roots_for(self, source: str) -> list[Path]:
        """The configured roots of a source (the shared root when none is specific)."""
        return self.roots.get(_canonical(source), self.default_roots)

    def prepare(self, sources: Iterable[str] | None = None) -> ImageResolver:
        """Build the cached listings / MIMIC index for the given sources (default: all configured)."""
        for source in sources if sources is not None else list(self.roots):
            layout = image_layout(source)
            for root in self.roots_for(source):
                if layout.index_files:
                    self._index(root, layout)
                if layout.listed_folders:
                    self._listed(root, layout)
        return self

    # ------------------------------------------------------------ listings
    def _listed(self, root: Path, layout: ImageLayout) -> list[str]:
        """The sub-folders of ``root`` that ``layout.listed_folders`` selects (not those in ``layout.folders``)."""
        key = (root, layout.listed_folders)
        if key not in self._listings:
            try:
                names = [entry.name for entry in os.scandir(root) if entry.is_dir()]
            except OSError:
                names = []
            names = [n for n in names if _selects(layout.listed_folders, n) and n not in layout.folders]
            self._listings[key] = sorted(names, key=lambda n: (int(n), n) if n.isdigit() else (-1, n))
        return self._listings[key]

    def _index(self, root: Path, layout: ImageLayout) -> tuple[dict[str, Path], str]:
        """Id -> file for a source whose folders the id alone does not determine, and how it was built.

        From the first of ``layout.index_files`` present in the root (the
        MIMIC-CXR-JPG metadata format: ``dicom_id``, ``subject_id``,
        ``study_id`` -> ``files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg``), else
        by walking ``files/`` (or the root) once for ``<id><suffix>`` files.
        """
        if root in self._indexes:
            return self._indexes[root]
        index: dict[str, Path] = {}
        metadata = next((root / name for name in layout.index_files if (root / name).is_file()), None)
        if metadata is not None:
            table = pl.read_csv(metadata, columns=["dicom_id", "subject_id", "study_id"], infer_schema_length=0)
            for dicom_id, subject, study in table.iter_rows():
                folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
                index[dicom_id] = folder / f"{dicom_id}.jpg"
            how = f"{metadata.name} ({len(index)} dicom ids)"
        else:
            top = root / "files" if (root / "files").is_dir() else root
            suffixes = {s.lower() for s in layout.suffixes}
            for folder, _, files in os.walk(top):
                for name in files:
                    stem, suffix = os.path.splitext(name)
                    if suffix.lower() in suffixes and stem not in index:
                        index[stem] = Path(folder) / name
            how = f"index of {len(index)} images found under {top}"
        self._indexes[root] = (index, how)
        return self._indexes[root]

    # ------------------------------------------------------------ candidates
    def candidates(self, source: str, image_id: str, root: Path) -> list[Path | str]:
        """Paths to try under one root, in order; a str entry describes a searched index.

        The index hit (sources with ``index_files``), then every folder of the
        layout (``folders``, the listed sub-folders, each followed by its
        ``nested`` folder) times every name variant of the id (prefixes kept,
        stripped or added, then suffixes appended).
        """
        layout = image_layout(source)
        names = _relative_names(image_id, layout)
        found: list[Path | str] = []
        if layout.index_files:
            index, how = self._index(root, layout)
            hit = index.get(image_id) or index.get(PurePosixPath(image_id).stem)
            found.append(hit if hit is not None else f"{root}/files/pXX/pXXXXXXXX/sXXXXXXXX/{image_id}.jpg ({how})")
        folders = list(layout.folders)
        if layout.listed_folders:
            for listed in self._listed(root, layout):
                folders += [listed, f"{listed}/{layout.nested}"] if layout.nested else [listed]
        found += [root / folder / name if folder else root / name for folder in folders for name in names]
        return found

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
                    if _is_file(path):
                        return path, tried
                    tried.append(f"{path} (from resolver)")
        for root in self.roots_for(source):
            for candidate in self.candidates(source, image_id, root):
                if isinstance(candidate, str):
                    tried.append(candidate)
                    continue
                if _is_file(candidate):
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

    Raises
    ------
    InputError
        An unsafe id (see :func:`check_image_id`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import polars as pl
    >>> import chexmask_u_tools as cxu
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "00000001_000.png").write_bytes(b"")
    >>> table = pl.DataFrame({"source": ["ChestX-ray8"] * 2, "image_id": ["00000001_000.png", "00000002_000.png"]})
    >>> check = cxu.check_images(table, {"ChestX-ray8": root})
    >>> check.found, check.missing, check.per_source
    (1, 1, {'ChestX-ray8': (1, 2)})
    >>> print(str(check).splitlines()[0])
    images on disk: 1 of 2 rows (1 missing)
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
