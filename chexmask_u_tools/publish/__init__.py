"""Sharing: the canonical table as a Hugging Face ``datasets.Dataset`` (with image files) and Hub-ready folders."""

from __future__ import annotations

from chexmask_u_tools.publish.hf import to_hf_dataset
from chexmask_u_tools.publish.hub_folder import save_hub_folder

__all__ = ["save_hub_folder", "to_hf_dataset"]
