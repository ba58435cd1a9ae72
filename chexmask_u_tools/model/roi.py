"""Sampling image features at graph nodes: the skip connection's ``roi_align`` in plain torch.

The reference model reads, for every node, the mean of a small grid of bilinear
samples of a feature map around the node's predicted position.  The authors used
torchvision's compiled ``roi_align`` with box ``(P - 1, P + 2)`` per axis,
``aligned=True``, output ``1x1`` and adaptive sampling (SPEC section 6).  This
module reproduces that arithmetic without torchvision, batched over images and
nodes, and differentiable with respect to both the feature map and the points.

Border rules (shared by both rules, as in the compiled kernel): a sample whose
x or y lies outside ``[-1, size]`` contributes zero but still counts in the
average; otherwise coordinates below zero are clamped to zero and coordinates at
or beyond ``size - 1`` to the last pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from chexmask_u_tools.errors import InputError

ROI_RULES: tuple[str, ...] = ("torchvision", "nominal")


def _axis_taps(coord: torch.Tensor, size: int, rule: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-axis bilinear taps of the sample grid around ``coord``.

    Parameters
    ----------
    coord:
        (...,) float index coordinate of the box centre along one axis (pixel
        centres on integers).
    size:
        Length of the feature map along that axis.
    rule:
        ``"torchvision"`` or ``"nominal"``.

    Returns
    -------
    index:
        (..., 2G) int64 pixel indices in ``[0, size - 1]`` (low and high tap of each of
        the G sample slots).
    weight:
        (..., 2G) interpolation weights, zero for unused slots and for samples outside
        ``[-1, size]``; NaN coordinates give NaN weights so that NaN propagates.
    count:
        (...,) number of samples along this axis (the divisor is the product over axes).
    """
    if rule == "torchvision":
        # Replicate the kernel's float arithmetic op by op (each torch op rounds to
        # the dtype): the box is (P - 1, P + 2), shifted by -0.5 for aligned=True,
        # and the grid size is ceil(width) with the width computed in that dtype.
        start = (coord - 1.0) - 0.5
        end = (coord + 2.0) - 0.5
        width = end - start
        # width is within a few ulps of 3, so the grid is 3 or 4; it can leave
        # that range only for |P| >~ 2**21, where every sample is outside the map
        # and the value is zero whatever the grid, so clamping changes nothing.
        grid = torch.nan_to_num(torch.ceil(width), nan=3.0).clamp(3.0, 4.0)
        slots = torch.arange(4, dtype=coord.dtype, device=coord.device) + 0.5
        pos = start[..., None] + (slots * width[..., None]) / grid[..., None]
        used = slots < grid[..., None]
        count = grid
    elif rule == "nominal":
        offsets = torch.tensor([-1.0, 0.0, 1.0], dtype=coord.dtype, device=coord.device)
        pos = coord[..., None] + offsets
        used = None
        count = torch.full_like(coord, 3.0)
    else:
        raise InputError(f"unknown roi rule {rule!r}; expected one of {ROI_RULES}")

    # Written as "not outside" so that NaN counts as inside and poisons the result.
    inside = ~((pos < -1.0) | (pos > size))
    if used is not None:
        inside = inside & used
    clamped = torch.nan_to_num(pos, nan=0.0).clamp(0.0, float(size))
    low = torch.floor(clamped)
    at_end = low >= size - 1
    low = torch.where(at_end, torch.full_like(low, size - 1), low)
    frac = torch.where(at_end, torch.zeros_like(pos), clamped - low)
    frac = torch.where(torch.isnan(pos), pos, frac)
    low_index = low.to(torch.int64)
    high_index = torch.clamp(low_index + 1, max=size - 1)
    zero = torch.zeros_like(frac)
    w_low = torch.where(inside, 1.0 - frac, zero)
    w_high = torch.where(inside, frac, zero)
    index = torch.stack([low_index, high_index], dim=-1).flatten(-2)
    weight = torch.stack([w_low, w_high], dim=-1).flatten(-2)
    return index, weight, count


def roi_sample(feature_map: torch.Tensor, points: torch.Tensor, rule: str = "torchvision") -> torch.Tensor:
    """Mean of a 3x3 (or 4-per-axis) bilinear sample grid of ``feature_map`` around each point.

    Parameters
    ----------
    feature_map:
        (B, C, H, W) float tensor.
    points:
        (B, N, 2) float tensor of (x, y) positions in the map's index coordinates
        (x = column, y = row, pixel centres on integers): the model passes ``p * h``
        for positions ``p`` in [0, 1] units.  Coordinates are computed in at least
        float32 even when the map is bf16/fp16.
    rule:
        ``"torchvision"`` (default) reproduces torchvision's compiled ``roi_align`` for
        the box ``(P - 1, P + 2)`` per axis, ``aligned=True``, output 1x1, adaptive
        sampling: the grid is ``ceil(width)`` per axis with the width computed in the
        points' dtype, so it is 3 (offsets -1, 0, +1) or, when rounding makes the
        width a hair above 3, 4 (offsets about +-0.375, +-1.125).  ``"nominal"`` always
        uses exactly 3x3 samples at offsets -1, 0, +1: the same function without the
        rounding-dependent jump, smooth in the points (use it for gradients, exact
        tests and reproducibility across hardware).

    Returns
    -------
    (B, N, C) tensor in the feature map's dtype.

    Examples
    --------
    At an integer point both rules average the 3 x 3 pixels around it:

    >>> import torch
    >>> feature_map = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> points = torch.tensor([[[1.0, 1.0], [1.0, 2.0]]])  # (x, y)
    >>> roi_sample(feature_map, points).flatten().tolist()
    [5.0, 9.0]
    >>> roi_sample(feature_map, points, rule="nominal").flatten().tolist()
    [5.0, 9.0]
    """
    if feature_map.ndim != 4:
        raise InputError(f"feature_map must have shape (B, C, H, W), got {tuple(feature_map.shape)}")
    if points.ndim != 3 or points.shape[-1] != 2 or points.shape[0] != feature_map.shape[0]:
        raise InputError(
            f"points must have shape (B, N, 2) with B = {feature_map.shape[0]}, got {tuple(points.shape)}"
        )
    if not points.is_floating_point():
        raise InputError(f"points must be floating point, got {points.dtype}")
    batch, channels, height, width = feature_map.shape
    n_points = points.shape[1]
    coords = points.to(torch.promote_types(points.dtype, torch.float32))
    ix, wx, cx = _axis_taps(coords[..., 0], width, rule)
    iy, wy, cy = _axis_taps(coords[..., 1], height, rule)
    # The bilinear weights are separable, so the whole grid is an outer product of
    # per-axis taps; duplicate indices (clamped taps) simply add up in the bag.
    weight = (wy[..., :, None] * wx[..., None, :]) / (cx * cy)[..., None, None]
    base = (torch.arange(batch, device=points.device) * (height * width)).view(batch, 1, 1, 1)
    index = base + iy[..., :, None] * width + ix[..., None, :]
    # Channels-last table: one copy of the map per image, shared by all of its points
    # (and so by all latent samples decoded from it).
    table = feature_map.permute(0, 2, 3, 1).reshape(batch * height * width, channels)
    out = F.embedding_bag(
        index.reshape(batch * n_points, -1),
        table,
        per_sample_weights=weight.reshape(batch * n_points, -1).to(table.dtype),
        mode="sum",
    )
    return out.view(batch, n_points, channels)
