"""Helpers for tests, tutorials and benchmarks: synthetic images in each source's layout and the reference model.

Nothing here is needed to use the toolkit; it makes examples runnable offline,
with no patient data.  :mod:`chexmask_u_tools.testing.reference_model` needs torch.
"""

from __future__ import annotations

from chexmask_u_tools.testing.images import demo_image_path, synthetic_xray, write_demo_images

__all__ = ["demo_image_path", "synthetic_xray", "write_demo_images"]
