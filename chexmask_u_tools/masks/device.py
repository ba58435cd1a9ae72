"""Organ masks drawn on the training device, inside the training step: :class:`DeviceMasks`.

A data loader that hands over only landmarks and std (the torch datasets'
``masks="device"``) leaves the masks to the step, where the batch already is:
``DeviceMasks`` turns a batch of landmarks (B, 120, 2) and std (B, 120, 2) into
organ masks (B, 3, S, S) on the batch's device, the same masks the CPU path
draws:

* ``kind="hard"``: bool masks, pixel for pixel
  :func:`~chexmask_u_tools.masks.raster.rasterize_organs` (the torch kernel of
  :mod:`~chexmask_u_tools.masks.raster_torch` on CUDA, its numpy kernel on CPU);
* ``kind="soft"``: float32 masks within 1e-5 of
  :func:`~chexmask_u_tools.masks.soft.soft_mask_organs` (on CUDA the torch soft
  masks of :mod:`~chexmask_u_tools.masks.soft_torch`, every organ of the
  batch at once on the device, with no work per organ on the host; on CPU the
  CPU soft masks themselves, which are faster there).  A row without std (``has_std``
  False, or a std of NaN only, as the datasets return it) gets its hard masks
  as 0/1 floats, like the datasets' ``soft_missing="hard"``.

This module imports torch; ``chexmask_u_tools.masks`` imports it only when
``DeviceMasks`` is first used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.layout import N_NODES, ORGANS
from chexmask_u_tools.masks.raster import check_size
from chexmask_u_tools.masks.raster_torch import rasterize_organs_torch, require_on_grid_torch
from chexmask_u_tools.masks.soft import soft_mask_organs
from chexmask_u_tools.masks.soft_torch import soft_mask_organs_torch
from chexmask_u_tools.select.weights import soft_pixel_weights

__all__ = ["DeviceMasks"]

_BACKENDS = ("auto", "torch", "numpy")
_PIXEL_WEIGHT_KEYS = ("floor", "power", "reduce")


def _real_tensor(value: Any, name: str, device: torch.device | None = None) -> torch.Tensor:
    """``value`` as a real-valued tensor (arrays and lists as float64), on ``device`` when given."""
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError) as error:
            raise InputError(f"{name} must be a real numeric tensor or array: {error}") from None
    if value.dtype == torch.bool or value.is_complex():
        raise InputError(f"{name} must be a real numeric tensor, got {value.dtype}")
    return value if device is None else value.to(device)


class DeviceMasks(torch.nn.Module):
    """Organ masks of a batch of landmarks, drawn on the batch's device (module docstring).

    Call it as ``masks(landmarks, std=None, has_std=None)``, or ``masks(batch)``
    with a datasets' batch dict (its ``landmarks``, ``std`` and ``has_std``):
    ``landmarks`` is a (B, 120, 2) (or one (120, 2)) real tensor in pixels of
    the mask grid, x = column, and the masks land on its device; ``std`` is
    (B, 120, 2) or (B, 120), the per-node std in the same pixels (needed for
    ``kind="soft"``; a row of NaN has none); ``has_std`` is an optional (B,)
    bool tensor (False rows are drawn hard).  It returns bool (``"hard"``) or
    float32 (``"soft"``) (B, 3, H, W) masks in
    :data:`~chexmask_u_tools.layout.ORGANS` order ((3, H, W) for one set), and
    with ``pixel_weights`` the pair ``(masks, pixel_weight)``, the float32
    weights shaped like the masks ((B, H, W) with ``reduce``).  There is
    nothing to learn: the module has no parameters and no gradient flows to
    the landmarks.

    Parameters
    ----------
    size:
        Mask size ``S`` (square) or ``(height, width)``, in the pixels of the
        landmarks (the datasets' output frame: their ``size``).
    kind:
        ``"hard"``: bool masks, exactly
        :func:`~chexmask_u_tools.masks.raster.rasterize_organs`; ``"soft"``:
        float32 probabilities, within 1e-5 of
        :func:`~chexmask_u_tools.masks.soft.soft_mask_organs` (rows without std:
        their hard masks as 0/1).
    pixel_weights:
        ``kind="soft"`` only.  True, or keyword arguments of
        :func:`~chexmask_u_tools.select.weights.soft_pixel_weights` (``floor``,
        ``power``, ``reduce``): the weights computed from the soft masks on the
        device, as the datasets' ``pixel_weights`` (rows without std: 1
        everywhere).
    band:
        As in :func:`~chexmask_u_tools.masks.soft.soft_mask`: evaluate the
        closed form only near the contour (same values, faster).
    allow_empty, allow_partial:
        By default landmarks that do not belong to the grid raise
        :class:`~chexmask_u_tools.errors.InputError` (a node beyond it by more
        than :data:`~chexmask_u_tools.masks.raster.OFF_GRID_MARGIN` of its
        side, or none on it: landmarks of another frame), as
        :func:`~chexmask_u_tools.masks.raster.rasterize_organs` does;
        ``allow_partial=True`` draws what falls on the grid,
        ``allow_empty=True`` checks nothing.
    backend:
        ``"auto"`` (CUDA and other devices: torch kernels; CPU: the CPU
        kernels, faster there), ``"torch"`` (torch kernels on any device) or
        ``"numpy"`` (CPU tensors only).  All give the same masks.

    Examples
    --------
    >>> import numpy as np, torch
    >>> import chexmask_u_tools as cxu
    >>> sample = cxu.load_sample()
    >>> landmarks = torch.as_tensor(np.stack(sample["landmarks"].to_numpy()[:4])) / 16  # 1024 frame -> 64 px
    >>> std = torch.as_tensor(np.stack(sample["landmarks_std"].to_numpy()[:4])) / 16
    >>> hard = cxu.DeviceMasks(64)(landmarks)
    >>> hard.shape, hard.dtype
    (torch.Size([4, 3, 64, 64]), torch.bool)
    >>> bool((hard[0].numpy() == cxu.rasterize_organs(landmarks[0].numpy(), 64, 64)).all())
    True
    >>> std[1] = float("nan")  # a row without std: its hard masks, as 0/1
    >>> soft, weight = cxu.DeviceMasks(64, "soft", pixel_weights={"floor": 0.1})(landmarks, std)
    >>> soft.dtype, tuple(weight.shape), bool(torch.equal(soft[1], hard[1].float()))
    (torch.float32, (4, 3, 64, 64), True)
    >>> reference = cxu.soft_mask_organs(landmarks[0].numpy(), std[0].numpy(), 64, 64)
    >>> float(abs(soft[0] - torch.from_numpy(reference)).max()) < 1e-5
    True
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        kind: Literal["hard", "soft"] = "hard",
        *,
        pixel_weights: bool | Mapping[str, Any] = False,
        band: bool = True,
        allow_empty: bool = False,
        allow_partial: bool = False,
        backend: Literal["auto", "torch", "numpy"] = "auto",
    ) -> None:
        super().__init__()
        try:
            height, width = check_size(*size) if isinstance(size, (tuple, list)) and len(size) == 2 else check_size(size, size)
        except InputError as error:
            raise InputError(f"size must be S or (height, width), the landmarks' pixel grid: {error}") from None
        if kind not in ("hard", "soft"):
            raise InputError(f"kind must be 'hard' or 'soft', got {kind!r}")
        if backend not in _BACKENDS:
            raise InputError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        self.height, self.width, self.kind, self.band, self.backend = height, width, kind, bool(band), backend
        self.allow_empty, self.allow_partial = bool(allow_empty), bool(allow_partial)
        self.pixel_weight_options = self._pixel_weight_options(pixel_weights, kind)

    @staticmethod
    def _pixel_weight_options(pixel_weights, kind: str) -> dict[str, Any] | None:
        if pixel_weights is False or pixel_weights is None:
            return None
        if kind != "soft":
            raise InputError("pixel_weights are computed from soft masks: use kind='soft'")
        options = {} if pixel_weights is True else dict(pixel_weights) if isinstance(pixel_weights, Mapping) else None
        if options is None:
            raise InputError(f"pixel_weights must be True, False or a dict of {_PIXEL_WEIGHT_KEYS}, got {pixel_weights!r}")
        unknown = sorted(set(options) - set(_PIXEL_WEIGHT_KEYS))
        if unknown:
            raise InputError(f"unknown pixel_weights option(s) {unknown}; the options are {_PIXEL_WEIGHT_KEYS}")
        soft_pixel_weights(torch.zeros((1, len(ORGANS), 1, 1)), **options)  # refuse bad values now, not in the step
        return options

    def extra_repr(self) -> str:
        weights = "" if self.pixel_weight_options is None else f", pixel_weights={self.pixel_weight_options}"
        return f"size=({self.height}, {self.width}), kind={self.kind!r}{weights}, backend={self.backend!r}"

    def forward(self, landmarks: Any, std: Any = None, has_std: Any = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if isinstance(landmarks, Mapping):
            batch = landmarks
            if "landmarks" not in batch:
                raise InputError(f"a batch dict needs 'landmarks' (and 'std' for soft masks); it has {sorted(batch)}")
            landmarks, std, has_std = batch["landmarks"], batch.get("std", std), batch.get("has_std", has_std)
        lm = _real_tensor(landmarks, "landmarks")
        single = lm.ndim == 2
        lm = lm[None] if single else lm
        if lm.ndim != 3 or lm.shape[-2:] != (N_NODES, 2):
            raise InputError(f"landmarks must have shape (B, 120, 2) or (120, 2), got {tuple(lm.shape)}")
        backend = self._backend(lm.device)
        if self.kind == "hard":
            out = self._hard(lm, backend)
        else:
            if std is None:
                raise InputError("kind='soft' needs std (B, 120, 2); pass kind='hard' for masks without uncertainty")
            out = self._soft(lm, _real_tensor(std, "std", lm.device), has_std, backend)
        if single:
            out = out[0]
        if self.pixel_weight_options is None:
            return out
        return out, soft_pixel_weights(out, **self.pixel_weight_options)

    def _backend(self, device: torch.device) -> str:
        if self.backend == "auto":
            return "numpy" if device.type == "cpu" else "torch"
        if self.backend == "numpy" and device.type != "cpu":
            raise InputError(f"backend='numpy' needs CPU tensors; the landmarks are on {device} (use backend='auto')")
        return self.backend

    def _hard(self, lm: torch.Tensor, backend: str) -> torch.Tensor:
        if not self.allow_empty and len(lm):
            require_on_grid_torch(lm, self.height, self.width, allow_partial=self.allow_partial)
        return rasterize_organs_torch(lm, self.height, self.width, backend=backend)

    def _rows_with_std(self, std: torch.Tensor, has_std: Any, batch: int) -> torch.Tensor:
        """(B,) bool on std's device: rows drawn soft.  A row's std is all finite, or (no std) all NaN."""
        if std.ndim not in (2, 3) or std.shape[0] != batch or std.shape[1] != N_NODES or (std.ndim == 3 and std.shape[2] != 2):
            raise InputError(f"std must have shape (B, 120, 2) or (B, 120) with B = {batch}, got {tuple(std.shape)}")
        flat = std.flatten(1)  # (B, 120 or 240); an empty batch too
        finite = torch.isfinite(flat).all(dim=1)
        if has_std is None:
            usable = finite
            broken = ~finite & ~torch.isnan(flat).all(dim=1)
            why = "mixes NaN or infinite values with numbers (a row without std is NaN throughout)"
        else:
            usable = has_std if isinstance(has_std, torch.Tensor) else torch.as_tensor(np.asarray(has_std))
            if usable.dtype != torch.bool:
                raise InputError(f"has_std must be a bool tensor (the datasets' has_std), got {usable.dtype}")
            usable = usable.to(std.device).reshape(-1)
            if usable.shape != (batch,):
                raise InputError(f"has_std must have shape (B,) with B = {batch}, got {tuple(usable.shape)}")
            broken = usable & ~finite
            why = "is marked has_std but holds NaN or infinite values"
        if bool(broken.any()):
            row = int(broken.nonzero()[0, 0])
            raise InputError(f"std of batch row {row} {why}")
        return usable

    def _soft(self, lm: torch.Tensor, std: torch.Tensor, has_std: Any, backend: str) -> torch.Tensor:
        usable = self._rows_with_std(std, has_std, len(lm))
        soft_rows = usable.nonzero()[:, 0]
        hard_rows = (~usable).nonzero()[:, 0]
        if len(soft_rows) and not len(hard_rows):  # the usual batch: drawn straight into the result
            return self._draw_soft(lm, std, backend)
        out = torch.empty((len(lm), len(ORGANS), self.height, self.width), dtype=torch.float32, device=lm.device)
        out[hard_rows] = self._hard(lm[hard_rows], backend).to(torch.float32)
        if len(soft_rows):
            out[soft_rows] = self._draw_soft(lm[soft_rows], std[soft_rows], backend)
        return out

    def _draw_soft(self, lm: torch.Tensor, std: torch.Tensor, backend: str) -> torch.Tensor:
        """float32 (B, 3, H, W) soft masks of rows that all have std, on the landmarks' device."""
        options = {"band": self.band, "allow_empty": self.allow_empty, "allow_partial": self.allow_partial}
        if backend == "torch":
            return soft_mask_organs_torch(lm, std, self.height, self.width, **options)
        points = lm.detach().to(torch.float64).numpy()
        sigma = std.detach().to(torch.float64).numpy()
        return torch.from_numpy(soft_mask_organs(points, sigma, self.height, self.width, **options))
