"""Training data in PyTorch: map-style and iterable datasets over the canonical table, and sample transforms.

Importing this subpackage requires torch (the ``[torch]`` extra).
"""

from __future__ import annotations

from chexmask_u_tools.train.datasets import CheXmaskUDataset, CheXmaskUIterableDataset
from chexmask_u_tools.train.transforms import Compose, RandomAffine, apply_affine

__all__ = ["CheXmaskUDataset", "CheXmaskUIterableDataset", "Compose", "RandomAffine", "apply_affine"]
