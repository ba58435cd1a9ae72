"""The source registry: everything the toolkit knows about each of the five databases, in one place.

CheXmask-U segments images of five public chest X-ray databases.  Each
database names its images its own way, lays its files out its own way and was
preprocessed slightly differently.  Every module that needs such a fact reads
it from :data:`REGISTRY`, so adding a database is adding one
:class:`SourceInfo` record here.

Examples
--------
>>> from chexmask_u_tools.sources import REGISTRY, canonical_source, source_info
>>> canonical_source("chexpert"), canonical_source("NIH")
('CheXpert', 'ChestX-ray8')
>>> source_info("mimic").id_column
'dicom_id'
>>> [info.name for info in REGISTRY.values() if info.crop_border]
['MIMIC-CXR-JPG', 'Padchest']
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

from chexmask_u_tools.errors import InputError

__all__ = [
    "REGISTRY",
    "SOURCES",
    "ImageLayout",
    "SourceInfo",
    "canonical_source",
    "closest_source",
    "id_column_sources",
    "require_source",
    "source_info",
    "source_label",
    "sources_in_name",
]


@dataclass(frozen=True)
class ImageLayout:
    """How a database's own distribution stores an image, relative to the folder the user gives as its root.

    The resolver tries, for every root, the id under each of ``folders`` (``""``
    is the root itself), then under every sub-folder that ``listed_folders``
    selects from a listing of the root (``"images"``: ``images_001`` ...,
    ``"digits"``: ``0``, ``1`` ...), and, when ``nested`` is set, under
    ``<listed>/<nested>`` too.  An id without an image suffix is tried with each
    of ``suffixes`` appended, then as given.  Each of ``strip_prefixes`` found at
    the start of an id is tried kept and stripped; an id without one is also
    tried with each prepended.  ``index_files`` name metadata files in the root
    that map an id to its folder (MIMIC-CXR's ``files/pXX/pXXXXXXXX/sXXXXXXXX/``
    tree, which the id alone does not determine); without one the root is
    walked once for files named ``<id><suffix>``.
    """

    folders: tuple[str, ...] = ("",)
    listed_folders: str | None = None
    nested: str | None = None
    suffixes: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".dcm")
    strip_prefixes: tuple[str, ...] = ()
    index_files: tuple[str, ...] = ()


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def _hex(source: str, index: int) -> str:
    return hashlib.sha1(f"{source}-{index}".encode()).hexdigest()


@dataclass(frozen=True)
class SourceInfo:
    """One database of CheXmask-U.

    Attributes
    ----------
    name:
        The canonical name, as in the ``source`` column.
    aliases:
        Other spellings accepted from users and file names (lower case).
    id_column:
        The column that holds the image id in this source's released files.
    image_layout:
        Where an image lives under the user's copy of the database.
    crop_border:
        Whether black borders were cropped before padding to the square
        (SPEC section 4: MIMIC-CXR-JPG and Padchest only).
    demo_image_path:
        ``(image_id) -> relative path`` where the synthetic demo writer puts a
        stand-in image, following ``image_layout``.
    sample_id:
        ``(index, rng) -> id`` in the source's id format, for the synthetic sample.
    id_column_proves_source:
        Whether a file with ``id_column`` (and no name naming a source) can only
        be this source's.  False when other files share the column name:
        ``ImageID`` is also the physician files' and CheXmask v0.1's
        ``CANDID-PTX.csv`` id (SPEC section 1), ``image_id`` is the canonical
        table's and a common generic name.
    """

    name: str
    aliases: tuple[str, ...]
    id_column: str
    image_layout: ImageLayout
    crop_border: bool
    demo_image_path: Callable[[str], str]
    sample_id: Callable[[int, np.random.Generator], str]
    id_column_proves_source: bool = True
    notes: dict[str, str] = field(default_factory=dict)


def _with_suffix(image_id: str, suffix: str) -> str:
    return image_id if PurePosixPath(image_id).suffix else image_id + suffix


def _mimic_demo_path(image_id: str) -> str:
    h = _digest(f"MIMIC-CXR-JPG/{image_id}")
    subject = 10_000_000 + h % 9_000_000
    study = 50_000_000 + (h >> 24) % 9_000_000
    return f"files/p{str(subject)[:2]}/p{subject}/s{study}/{image_id}.jpg"


def _mimic_sample_id(index: int, rng: np.random.Generator) -> str:
    digest = _hex("MIMIC-CXR-JPG", index)
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def _padchest_sample_id(index: int, rng: np.random.Generator) -> str:
    digest = _hex("Padchest", index)
    return f"{int(digest[:30], 16)}_{digest[30:32]}-{rng.integers(100, 999)}-{rng.integers(100, 999)}.png"


REGISTRY: dict[str, SourceInfo] = {
    info.name: info
    for info in (
        SourceInfo(
            name="MIMIC-CXR-JPG",
            aliases=("mimic", "mimic-cxr", "mimic-cxr-jpg"),
            id_column="dicom_id",
            image_layout=ImageLayout(
                suffixes=(".jpg", ".png", ".dcm"),
                index_files=("mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-metadata.csv"),
            ),
            crop_border=True,
            demo_image_path=_mimic_demo_path,
            sample_id=_mimic_sample_id,
        ),
        SourceInfo(
            name="CheXpert",
            aliases=("chexpert",),
            id_column="Path",
            image_layout=ImageLayout(
                suffixes=(".jpg", ".png"), strip_prefixes=("CheXpert-v1.0/", "CheXpert-v1.0-small/")
            ),
            crop_border=False,
            demo_image_path=lambda image_id: _with_suffix(image_id, ".jpg"),
            sample_id=lambda index, rng: (
                f"train/patient{rng.integers(1, 64541):05d}/study{rng.integers(1, 6)}/view1_frontal.jpg"
            ),
        ),
        SourceInfo(
            name="ChestX-ray8",
            aliases=("chestx-ray8", "chestx-ray14", "chestxray8", "chestxray14", "nih"),
            id_column="Image Index",
            image_layout=ImageLayout(folders=("", "images"), listed_folders="images", nested="images"),
            crop_border=False,
            demo_image_path=lambda image_id: f"images_{1 + _digest(f'ChestX-ray8/{image_id}') % 3:03d}/images/{image_id}",
            sample_id=lambda index, rng: f"{rng.integers(1, 30806):08d}_{rng.integers(0, 30):03d}.png",
        ),
        SourceInfo(
            name="Padchest",
            aliases=("padchest",),
            id_column="ImageID",
            image_layout=ImageLayout(folders=("", "images"), listed_folders="digits"),
            crop_border=True,
            demo_image_path=lambda image_id: f"{_digest(f'Padchest/{image_id}') % 4}/{image_id}",
            sample_id=_padchest_sample_id,
            id_column_proves_source=False,
        ),
        SourceInfo(
            name="VinDr-CXR",
            aliases=("vindr", "vindrcxr", "vindr-cxr"),
            id_column="image_id",
            image_layout=ImageLayout(folders=("", "train", "test"), suffixes=(".dicom", ".dcm", ".png", ".jpg")),
            crop_border=False,
            demo_image_path=lambda image_id: f"train/{image_id}.png",
            sample_id=lambda index, rng: _hex("VinDr-CXR", index)[:32],
            id_column_proves_source=False,
        ),
    )
}
"""Canonical name -> :class:`SourceInfo`, in the order of :data:`SOURCES`."""

SOURCES: tuple[str, ...] = tuple(REGISTRY)
"""The five canonical source names."""

GENERIC_LAYOUT = ImageLayout()
"""The layout tried for a label that is not one of the five sources (private data)."""

_ALIASES: dict[str, str] = {
    spelling: info.name for info in REGISTRY.values() for spelling in (info.name.lower(), *info.aliases)
}


def canonical_source(name: str) -> str | None:
    """The canonical name of a source spelling (``ChestX-Ray8``, ``chexpert``, ``MIMIC`` ...), or None.

    Examples
    --------
    >>> canonical_source("ChestX-Ray8"), canonical_source("Chexpurt")
    ('ChestX-ray8', None)
    """
    return _ALIASES.get(name.strip().lower())


def closest_source(name: str) -> str | None:
    """The known spelling closest to ``name`` (difflib), for "did you mean" messages; None when nothing is close."""
    match = difflib.get_close_matches(name.strip().lower(), list(_ALIASES), n=1, cutoff=0.6)
    return _ALIASES[match[0]] if match else None


def require_source(name: str, *, argument: str = "source") -> str:
    """The canonical name of ``name``; raises :class:`InputError` naming ``argument`` and the closest valid name."""
    canonical = canonical_source(name)
    if canonical is None:
        hint = closest_source(name)
        suggestion = f" (did you mean {hint!r}?)" if hint else ""
        raise InputError(f"unknown {argument} {name!r}{suggestion}; expected one of {SOURCES}")
    return canonical


def source_label(name: str, *, argument: str = "source") -> str:
    """A ``source`` value given by a user: the canonical name of a known spelling, else the label itself.

    A label unlike every known spelling (``"private"``, ``"my-hospital"``) is
    kept as given, for the user's own data; one close to a known spelling
    (``"Chexpurt"``) is a typo and raises :class:`InputError` suggesting it,
    rather than starting a new source silently.

    Examples
    --------
    >>> source_label("chexpert"), source_label("private")
    ('CheXpert', 'private')
    >>> source_label("Chexpurt")
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.InputError: unknown source 'Chexpurt' (did you mean 'CheXpert'?); expected one of ('MIMIC-CXR-JPG', 'CheXpert', 'ChestX-ray8', 'Padchest', 'VinDr-CXR') or a label unlike all of them for your own data
    """
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{argument} must be a non-empty string, got {name!r}")
    canonical = canonical_source(name)
    if canonical is not None:
        return canonical
    hint = closest_source(name)
    if hint is not None:
        raise InputError(
            f"unknown {argument} {name!r} (did you mean {hint!r}?); expected one of {SOURCES} "
            "or a label unlike all of them for your own data"
        )
    return name.strip()


def sources_in_name(name: str) -> tuple[str, ...]:
    """The sources a file name spells out (any accepted spelling, case-insensitive, as a whole word).

    A spelling counts only between non-alphanumeric boundaries, so that
    ``MIMIC-CXR-JPG_part1.csv.gz`` names MIMIC-CXR-JPG while ``CANDID-PTX.csv``
    or ``vanishing.csv`` name nothing.  Several different sources in one name
    are returned in registry order (the caller decides that this is ambiguous).

    Examples
    --------
    >>> sources_in_name("MIMIC-CXR-JPG_part1.csv.gz"), sources_in_name("CANDID-PTX.csv")
    (('MIMIC-CXR-JPG',), ())
    >>> sources_in_name("chexpert_vs_nih.csv")
    ('CheXpert', 'ChestX-ray8')
    """
    text = str(name).lower()
    found = {
        canonical
        for spelling, canonical in _ALIASES.items()
        if re.search(rf"(?<![a-z0-9]){re.escape(spelling)}(?![a-z0-9])", text)
    }
    return tuple(source for source in SOURCES if source in found)


def source_info(name: str) -> SourceInfo:
    """The registry record of a source, by any accepted spelling (raises :class:`InputError` when unknown)."""
    return REGISTRY[require_source(name)]


def id_column_sources() -> dict[str, str]:
    """Released id column -> the source whose files use it (``ImageID`` -> ``Padchest`` ...)."""
    return {info.id_column: info.name for info in REGISTRY.values()}
