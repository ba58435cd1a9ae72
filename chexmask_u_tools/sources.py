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
    "MetadataFormat",
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


@dataclass(frozen=True)
class MetadataFormat:
    """A database's own public metadata files, as published (read by :func:`chexmask_u_tools.cohorts.read_metadata`).

    ``roles`` maps each kind of file to the columns that identify it (all must
    be present; extra columns are fine): ``"images"`` (one row per image),
    ``"split"`` (image -> official split), ``"labels"`` (labels per study,
    joined on ``study_keys``).  ``files`` are the published file-name patterns
    (fnmatch, lower case) looked for in a folder; ``list_files`` map plain-text
    id lists to the split they define, ``file_splits`` csv file names to the
    split of all their rows.  ``columns`` map normalised names
    (``patient_id``, ``study_id``, ``view``, ``sex``, ``age``, ``birth_year``,
    ``study_date``, ``original_height``, ``original_width``, ``split``) to the
    file's column.  ``patient``: ``"column"`` (``columns["patient_id"]``),
    ``"path"`` (the ``patientNNNNN`` folder of the id, :attr:`SourceInfo.patient_in_id`) or ``"image"`` (no
    patient ids: each image is its own patient).  ``label_format``:
    ``"columns"`` (one column per label, 1/0/-1/blank), ``"pipe"`` (names
    joined by ``|``) or ``"list"`` (a Python-list-looking string; ``labels`` is
    then empty and the columns are the names found).  ``views``, ``sexes``,
    ``splits``: source spelling -> normalised value (others become null).
    """

    files: tuple[str, ...]
    roles: dict[str, tuple[str, ...]]
    columns: dict[str, str]
    patient: str
    labels: tuple[str, ...]
    label_format: str = "columns"
    views: dict[str, str] = field(default_factory=dict)
    sexes: dict[str, str] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)
    list_files: dict[str, str] = field(default_factory=dict)
    file_splits: dict[str, str] = field(default_factory=dict)
    study_keys: tuple[str, ...] = ()


CHEXPERT_LABELS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)  # fmt: skip
"""The 14 CheXpert labeler observations (CheXpert and MIMIC-CXR-JPG's chexpert/negbio files)."""

_MIMIC_METADATA = MetadataFormat(
    files=("mimic-cxr-2.0.0-metadata.csv*", "mimic-cxr-2.0.0-split.csv*", "mimic-cxr-2.0.0-chexpert.csv*",
           "mimic-cxr-2.0.0-negbio.csv*"),
    roles={"images": ("dicom_id", "subject_id", "study_id", "ViewPosition"), "split": ("dicom_id", "study_id", "subject_id", "split"),
           "labels": ("subject_id", "study_id", *CHEXPERT_LABELS)},
    columns={"patient_id": "subject_id", "study_id": "study_id", "view": "ViewPosition", "original_height": "Rows",
             "original_width": "Columns", "split": "split"},
    patient="column", labels=CHEXPERT_LABELS, views={"PA": "PA", "AP": "AP", "LATERAL": "LATERAL", "LL": "LL"},
    splits={"train": "train", "validate": "val", "test": "test"}, study_keys=("subject_id", "study_id"),
)  # fmt: skip
_CHEXPERT_METADATA = MetadataFormat(
    files=("train.csv*", "valid.csv*", "test.csv*", "test_labels.csv*"),
    roles={"images": ("Path", *CHEXPERT_LABELS)},
    columns={"view": "AP/PA", "frontal_lateral": "Frontal/Lateral", "sex": "Sex", "age": "Age"},
    patient="path", labels=CHEXPERT_LABELS, views={"PA": "PA", "AP": "AP", "LL": "LL", "Lateral": "LATERAL"},
    sexes={"Male": "M", "Female": "F"}, splits={"train": "train", "valid": "val", "test": "test"},
)  # fmt: skip
_NIH_METADATA = MetadataFormat(
    files=("data_entry_2017*.csv*", "train_val_list*.txt", "test_list*.txt"),
    roles={"images": ("Image Index", "Finding Labels", "Patient ID", "View Position")},
    columns={"patient_id": "Patient ID", "view": "View Position", "sex": "Patient Gender|Patient Sex", "age": "Patient Age",
             "original_width": "OriginalImage[Width", "original_height": "Height]"},
    patient="column", label_format="pipe", views={"PA": "PA", "AP": "AP"}, sexes={"M": "M", "F": "F"},
    labels=("No Finding", "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
            "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"),
    list_files={"train_val_list*": "train", "test_list*": "test"},
)  # fmt: skip
_PADCHEST_METADATA = MetadataFormat(
    files=("padchest_chest_x_ray_images_labels_160k*.csv*",),
    roles={"images": ("ImageID", "StudyID", "PatientID", "Projection", "Labels")},
    columns={"patient_id": "PatientID", "study_id": "StudyID", "view": "Projection", "sex": "PatientSex_DICOM",
             "birth_year": "PatientBirth", "study_date": "StudyDate_DICOM", "original_height": "Rows_DICOM",
             "original_width": "Columns_DICOM"},
    # AP_horizontal is PadChest's name for an AP image taken lying down (horizontal beam): an AP view.
    patient="column", label_format="list", labels=(), sexes={"M": "M", "F": "F"},
    views={"PA": "PA", "AP": "AP", "AP_horizontal": "AP", "L": "LATERAL"},
)  # fmt: skip
_VINDR_LABELS = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture", "Consolidation",
    "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity", "Lung cavity", "Lung cyst",
    "Mediastinal shift", "Nodule/Mass", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis", "Rib fracture", "Other lesion", "COPD", "Lung tumor", "Pneumonia", "Tuberculosis",
    "Other diseases", "No finding",
)  # fmt: skip
_VINDR_METADATA = MetadataFormat(
    files=("image_labels_train.csv*", "image_labels_test.csv*"),
    roles={"images": ("image_id", *_VINDR_LABELS)},
    columns={"reader": "rad_id"}, patient="image", labels=_VINDR_LABELS,
    file_splits={"*train*": "train", "*test*": "test"},
)  # fmt: skip


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
    metadata:
        The database's own metadata files (:class:`MetadataFormat`), or None.
    id_column_proves_source:
        Whether a file with ``id_column`` (and no name naming a source) can only
        be this source's.  False when other files share the column name:
        ``ImageID`` is also the physician files' and CheXmask v0.1's
        ``CANDID-PTX.csv`` id (SPEC section 1), ``image_id`` is the canonical
        table's and a common generic name.
    patient_in_id:
        A regular expression whose first group, searched in an image id, is
        the patient id, written as the database's metadata writes it, or None
        where the id does not name the patient (MIMIC-CXR-JPG dicom ids,
        Padchest, VinDr-CXR).  ChestX-ray8 file names are
        ``<patient>_<follow-up>.png`` (``00000001_000.png`` -> ``1``, the
        ``Patient ID`` column's value); CheXpert paths hold ``patientNNNNN``.
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
    metadata: MetadataFormat | None = None
    patient_in_id: str | None = None

    @property
    def publishes_patients(self) -> bool:
        """Whether the database's metadata identifies patients (VinDr-CXR's does not: each image is its own patient)."""
        return self.metadata is None or self.metadata.patient != "image"


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
            metadata=_MIMIC_METADATA,
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
            metadata=_CHEXPERT_METADATA,
            patient_in_id=r"(?:^|/)(patient\d+)/",
        ),
        SourceInfo(
            name="ChestX-ray8",
            aliases=("chestx-ray8", "chestx-ray14", "chestxray8", "chestxray14", "nih"),
            id_column="Image Index",
            image_layout=ImageLayout(folders=("", "images"), listed_folders="images", nested="images"),
            crop_border=False,
            demo_image_path=lambda image_id: f"images_{1 + _digest(f'ChestX-ray8/{image_id}') % 3:03d}/images/{image_id}",
            sample_id=lambda index, rng: f"{rng.integers(1, 30806):08d}_{rng.integers(0, 30):03d}.png",
            metadata=_NIH_METADATA,
            patient_in_id=r"(?:^|/)0*(\d+)_\d+(?:\.[A-Za-z]+)?$",
        ),
        SourceInfo(
            name="Padchest",
            aliases=("padchest",),
            id_column="ImageID",
            image_layout=ImageLayout(folders=("", "images"), listed_folders="digits"),
            crop_border=True,
            demo_image_path=lambda image_id: f"{_digest(f'Padchest/{image_id}') % 4}/{image_id}",
            sample_id=_padchest_sample_id,
            metadata=_PADCHEST_METADATA,
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
            metadata=_VINDR_METADATA,
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
