"""Training data in PyTorch: map-style and iterable datasets over the canonical table, and sample transforms.

Importing this subpackage requires torch (the ``[torch]`` extra).

``options``       :class:`SampleOptions`: what a sample holds, validated once
``sample``        the per-row steps: read image, geometry, preprocess, targets, assemble
``decode_cache``  decoded images on disk, shared by DataLoader workers
``datasets``      :class:`CheXmaskUDataset` (map-style) and :class:`CheXmaskUIterableDataset` (sharded stream)
``transforms``    :class:`RandomAffine`, :class:`Compose`
"""

from __future__ import annotations

from chexmask_u_tools.train.datasets import CheXmaskUDataset, CheXmaskUIterableDataset
from chexmask_u_tools.train.decode_cache import DecodeCache
from chexmask_u_tools.train.options import LabelPolicy, SampleOptions
from chexmask_u_tools.train.transforms import Compose, RandomAffine, apply_affine

__all__ = [
    "CheXmaskUDataset",
    "CheXmaskUIterableDataset",
    "Compose",
    "DecodeCache",
    "LabelPolicy",
    "RandomAffine",
    "SampleOptions",
    "apply_affine",
]
