"""Sample transforms: :class:`Compose` and :class:`RandomAffine`, moving every field of a sample together."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from chexmask_u_tools.errors import InputError

__all__ = [
    "Compose",
    "RandomAffine",
    "apply_affine",
]



class Compose:
    """Apply sample transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[dict], dict]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: dict) -> dict:
        for transform in self.transforms:
            sample = transform(sample)
        return sample


_BILINEAR_KEYS = ("image", "soft_masks", "pixel_weight")


class RandomAffine:
    """Random rotation, scaling, translation and horizontal flip, the same for every field.

    The map on pixel coordinates (x, y), pixel centres on integers, about the
    image centre ``c = ((W - 1) / 2, (H - 1) / 2)`` is ``p' = c + t + s R(theta) F (p - c)``
    with ``F = diag(-1, 1)`` when flipped.  ``image``, ``soft_masks`` (and soft
    ``masks``) and ``pixel_weight`` are resampled bilinearly, hard ``masks``
    by nearest neighbour; pixels from outside the image are 0 (1 for
    ``pixel_weight``).  ``landmarks`` map exactly; ``std`` maps as the
    marginal standard deviations of ``diag(std_x**2, std_y**2)`` under the
    linear part ``M = s R F``: ``std'_x = sqrt(M00**2 std_x**2 + M01**2 std_y**2)``
    and likewise for y.  Landmarks outside the image are kept (not clipped).

    Lungs under a flip.  Mask channels are labelled by ``lungs``:
    ``"position"`` (default) swaps channels 0 and 1 (and ``mask_valid``,
    ``pixel_weight``, ``soft_masks``) so that channel 0 is still the lung on the
    image's left, as in unflipped data: what a segmentation network trained on
    CheXmask's convention expects.  ``"anatomy"`` keeps the channels, so
    channel 0 stays the patient's right lung, now on the image's right.
    Landmarks are never reordered (the lungs have 44 and 50 nodes, so their
    rings cannot swap places): node ``i`` is still the same anatomical point,
    which matches ``"anatomy"``; train landmarks and masks jointly with
    ``lungs="anatomy"`` or without flips.  A flipped chest X-ray shows a
    mirrored anatomy (heart on the image's left) in either case.  The sample
    gets ``flipped`` (bool tensor).

    Parameters
    ----------
    degrees:
        Rotation drawn uniformly in ``[-degrees, degrees]``.
    translate:
        Shift drawn uniformly in ``[-translate, translate]`` times the width / height.
    scale:
        ``(low, high)``: scale drawn uniformly.
    hflip:
        Probability of a horizontal flip.
    generator:
        Optional ``torch.Generator`` for reproducible draws (default: torch's
        global generator, seeded per DataLoader worker).
    """

    def __init__(
        self,
        degrees: float = 0.0,
        translate: float = 0.0,
        scale: tuple[float, float] = (1.0, 1.0),
        hflip: float = 0.0,
        *,
        lungs: Literal["position", "anatomy"] = "position",
        generator: torch.Generator | None = None,
    ) -> None:
        if degrees < 0 or not 0 <= translate < 1 or not 0 < scale[0] <= scale[1] or not 0 <= hflip <= 1:
            raise InputError("RandomAffine needs degrees >= 0, 0 <= translate < 1, 0 < scale[0] <= scale[1], 0 <= hflip <= 1")
        if lungs not in ("position", "anatomy"):
            raise InputError(f"lungs must be 'position' or 'anatomy', got {lungs!r}")
        self.degrees, self.translate, self.scale, self.hflip = float(degrees), float(translate), tuple(scale), float(hflip)
        self.lungs = lungs
        self.generator = generator

    def _uniform(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.generator))

    def draw(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """A random ``(M, b, flipped)`` with ``p' = M p + b`` in pixel coordinates."""
        theta = math.radians(self._uniform(-self.degrees, self.degrees))
        s = self._uniform(*self.scale)
        t = np.array([self._uniform(-self.translate, self.translate) * width, self._uniform(-self.translate, self.translate) * height])
        flipped = bool(float(torch.rand((), generator=self.generator)) < self.hflip)
        rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        matrix = s * rotation @ np.diag([-1.0 if flipped else 1.0, 1.0])
        centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
        return matrix, centre + t - matrix @ centre, flipped

    def __call__(self, sample: dict) -> dict:
        height, width = sample["image"].shape[-2:]
        matrix, offset, flipped = self.draw(height, width)
        return apply_affine(sample, matrix, offset, flipped, lungs=self.lungs)


def apply_affine(sample: dict, matrix: np.ndarray, offset: np.ndarray, flipped: bool, *, lungs: str = "position") -> dict:
    """Apply ``p' = matrix @ p + offset`` (pixel coordinates) to every geometric field of a sample.

    ``flipped`` says whether ``matrix`` mirrors (determinant < 0); with
    ``lungs="position"`` the lung channels are then swapped (see :class:`RandomAffine`).
    """
    height, width = sample["image"].shape[-2:]
    inverse = np.linalg.inv(matrix)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij")
    q = torch.stack([xs - offset[0], ys - offset[1]], dim=-1)
    p = q @ torch.from_numpy(inverse.T)
    # align_corners=True: -1 and 1 are the centres of the edge pixels.
    grid = torch.stack([2 * p[..., 0] / max(width - 1, 1) - 1, 2 * p[..., 1] / max(height - 1, 1) - 1], dim=-1)
    grid = grid.float()[None]
    out = dict(sample)
    for key in ("image", "masks", "soft_masks", "pixel_weight"):
        if key not in sample:
            continue
        value = sample[key]
        is_bool = value.dtype == torch.bool
        data = value.float().reshape(1, -1, height, width)  # (C, H, W) or a reduced (H, W) map
        if key == "pixel_weight":
            data = data - 1.0  # so that zero padding reads as weight 1
        mode = "nearest" if is_bool else "bilinear"
        warped = F.grid_sample(data, grid, mode=mode, padding_mode="zeros", align_corners=True).reshape(value.shape)
        if key == "pixel_weight":
            warped = warped + 1.0
        if value.dtype == torch.uint8:  # an image_dtype="uint8" image stays on its 8-bit levels
            out[key] = warped.round_().clamp_(0, 255).to(torch.uint8)
        else:
            out[key] = warped > 0.5 if is_bool else warped
    m = torch.from_numpy(matrix).float()
    out["landmarks"] = sample["landmarks"] @ m.T + torch.from_numpy(offset).float()
    variance = sample["std"] ** 2
    out["std"] = torch.sqrt(variance @ (m**2).T)
    if flipped and lungs == "position":
        swap = [1, 0, 2]
        for key in ("masks", "soft_masks", "pixel_weight", "mask_valid"):
            if key in out and out[key].ndim in (1, 3):  # organ-channel fields only
                out[key] = out[key][swap]
    out["flipped"] = torch.tensor(bool(flipped))
    return out
