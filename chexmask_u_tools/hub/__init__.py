"""CheXmask-U on the Hugging Face Hub or a local mirror of it: locations, discovery, streaming, the parquet cache.

Every Hub request goes to ``HF_ENDPOINT`` through ``huggingface_hub`` and is
retried only under a :class:`RetryPolicy` (attempts, backoff, a time budget);
see :mod:`chexmask_u_tools.hub.location`.

The dataset repo's file list is not known in advance, so nothing here names a
file: a :class:`DatasetLocation` lists the files at one immutable revision,
:func:`discover` classifies them by source and frame from their paths, and the
readers detect each file's columns.  :func:`scan`, :func:`scan_parts` and
:func:`load` prefer a complete local cache (:mod:`chexmask_u_tools.hub.cache`)
of the same revision.
"""

from __future__ import annotations

from chexmask_u_tools.hub.discovery import DataFile, Discovery, classify, discover
from chexmask_u_tools.hub.location import (
    DEFAULT_REPO,
    PARQUET_CONVERSION_REVISION,
    DatasetLocation,
    HubFile,
    HubRepo,
    LocalMirror,
    RepoEntry,
    RetryPolicy,
    hub_offline,
    open_location,
)
from chexmask_u_tools.hub.inputs import open_table
from chexmask_u_tools.hub.read import load, remote_scan, scan, scan_parts
from chexmask_u_tools.hub.stream import RetryingReader, iter_file_batches
from chexmask_u_tools.io.table import canonicalize_batch

__all__ = [
    "DEFAULT_REPO",
    "PARQUET_CONVERSION_REVISION",
    "DataFile",
    "DatasetLocation",
    "Discovery",
    "HubFile",
    "HubRepo",
    "LocalMirror",
    "RepoEntry",
    "RetryPolicy",
    "RetryingReader",
    "canonicalize_batch",
    "classify",
    "discover",
    "hub_offline",
    "iter_file_batches",
    "load",
    "open_location",
    "open_table",
    "remote_scan",
    "scan",
    "scan_parts",
]
