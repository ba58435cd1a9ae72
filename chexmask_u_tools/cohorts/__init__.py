"""Cohorts: each source's own metadata, labels and official splits; patient-level splits; a dataset card.

:func:`read_metadata` reads a database's published metadata files into one
normalised table, :func:`attach_metadata` joins it to CheXmask-U rows,
:func:`patient_split` / :func:`check_leakage` / :func:`unique_patients` work
per patient, and :func:`describe` writes a Markdown card of the cohort.
"""

from chexmask_u_tools.cohorts.card import describe, markdown_table, select_cohort
from chexmask_u_tools.cohorts.join import JoinReport, attach_metadata, metadata_key
from chexmask_u_tools.cohorts.metadata import (
    LABEL_PREFIX,
    METADATA_SCHEMA,
    MetadataWarning,
    detect_metadata_source,
    label_columns,
    metadata_files,
    read_metadata,
)
from chexmask_u_tools.cohorts.splits import (
    DEFAULT_FRACTIONS,
    PATIENT_ID_FROM,
    add_patient_ids,
    check_leakage,
    patient_hash,
    patient_split,
    unique_patients,
)

__all__ = [
    "DEFAULT_FRACTIONS",
    "LABEL_PREFIX",
    "PATIENT_ID_FROM",
    "METADATA_SCHEMA",
    "JoinReport",
    "MetadataWarning",
    "add_patient_ids",
    "attach_metadata",
    "check_leakage",
    "describe",
    "detect_metadata_source",
    "label_columns",
    "markdown_table",
    "metadata_files",
    "metadata_key",
    "patient_hash",
    "patient_split",
    "read_metadata",
    "select_cohort",
    "unique_patients",
]
