"""HybridGNet with two image-to-graph skip connections, in plain PyTorch (SPEC section 6).

A convolutional encoder maps a (B, 1, S, S) image in [0, 1] (S = 1024 for the
published weights) to a 64-d Gaussian posterior; a graph decoder maps a latent
vector to 120 landmark positions in [0, 1] units (times 1024 = pixels of the
preprocessed frame).  The skip-connection variant lets two decoder stages read
encoder features at the nodes' provisional positions (:func:`roi_sample`).

Parameter names and shapes are those of the published state_dict, so
``model.load_state_dict(published, strict=True)`` works unchanged.  Graph
operators are non-persistent buffers: they follow ``.to(device)`` / ``.double()``
and stay out of the state_dict.

Differences from the authors' code that do not change the function:

* BatchNorm without running statistics normalises with the statistics of the
  batch; the reference always ran one image at a time, so here every image is
  normalised on its own (instance norm with BN's affine weights), which makes
  batching images safe.
* Chebyshev convolutions are dense matrix products with the precomputed
  polynomials ``T_k(L_hat)`` instead of message passing (equal up to summation order).
* The decoder accepts any number of latent samples per image and shares the
  image's feature maps across them.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.layout import ORGAN_SIZES, ORGANS, ring_adjacency
from chexmask_u_tools.model.roi import ROI_RULES, roi_sample

FINE_SIZES: tuple[int, ...] = tuple(ORGAN_SIZES[o] for o in ORGANS)
"""Ring sizes of the 120-node output graph (right lung, left lung, heart)."""

COARSE_SIZES: tuple[int, ...] = tuple((n + 1) // 2 for n in FINE_SIZES)
"""Ring sizes of the 60-node graph the decoder starts from: (22, 25, 13)."""

DEFAULT_CONFIG: dict[str, Any] = {
    "latents": 64,
    "inputsize": 1024,
    "K": 6,
    "filters": [2, 32, 32, 32, 16, 16, 16],
    "skip_connections": True,
    "roi_align": "torchvision",
}
"""Architecture hyper-parameters of the published model (config.json keys)."""

CONFIG_RANGES: dict[str, tuple[int, int]] = {
    "latents": (1, 1024),
    "inputsize": (32, 4096),
    "K": (1, 32),
    "filters": (1, 1024),
}
"""Accepted inclusive range of each integer config key (``filters``: each entry;
``inputsize`` also a multiple of 32).  Checked before any tensor is allocated: an
``inputsize`` of 4096 already means two 64 x 2 M encoder heads (1 GB in float32)."""


def check_architecture(latents: Any, input_size: Any, K: Any, filters: Any) -> list[int]:
    """Validate the integer hyper-parameters against :data:`CONFIG_RANGES`; return ``filters`` as ints.

    Raises
    ------
    InputError
        Naming the config key, the value and the accepted range.

    Examples
    --------
    >>> check_architecture(64, 1024, 6, [2, 32, 32, 32, 16, 16, 16])
    [2, 32, 32, 32, 16, 16, 16]
    >>> check_architecture(64, 100000, 6, [2, 32, 32, 32, 16, 16, 16])
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.InputError: config key 'inputsize' = 100000 is outside the accepted range [32, 4096] (a multiple of 32)
    """

    def integer(key: str, value: Any, extra: str = "") -> int:
        low, high = CONFIG_RANGES[key]
        accepted = f"the accepted range [{low}, {high}]{extra}"
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InputError(f"config key {key!r} must be an integer in {accepted}, got {value!r}")
        if not low <= int(value) <= high:
            raise InputError(f"config key {key!r} = {value} is outside {accepted}")
        return int(value)

    integer("latents", latents)
    size = integer("inputsize", input_size, " (a multiple of 32)")
    if size % 32:
        raise InputError(f"config key 'inputsize' = {size} is not a multiple of 32 (accepted range [32, 4096])")
    integer("K", K)
    if isinstance(filters, (str, bytes)) or not hasattr(filters, "__len__") or len(filters) != 7:
        raise InputError(f"config key 'filters' must be a list of 7 integers, got {filters!r}")
    return [integer("filters", f, " for every entry of 'filters'") for f in filters]


def chebyshev_basis(adjacency: np.ndarray, order: int) -> np.ndarray:
    """Chebyshev polynomials of the scaled graph Laplacian.

    Uses torch_geometric's ChebConv convention: symmetric normalisation and
    ``lambda_max = 2``, so ``L_hat = L - I = -D^-1/2 A D^-1/2`` (``-A/2`` on rings).

    Parameters
    ----------
    adjacency:
        (N, N) symmetric 0/1 adjacency without self loops.
    order:
        Number of polynomials K (>= 1).

    Returns
    -------
    (K, N, N) float64 array ``[T_0, ..., T_{K-1}]`` with ``T_0 = I``, ``T_1 = L_hat``,
    ``T_k = 2 L_hat T_{k-1} - T_{k-2}``.
    """
    adjacency = np.asarray(adjacency, dtype=np.float64)
    degree = adjacency.sum(axis=1)
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.where(degree > 0, degree, 1.0)), 0.0)
    l_hat = -(inv_sqrt[:, None] * adjacency * inv_sqrt[None, :])
    basis = [np.eye(len(adjacency))]
    if order > 1:
        basis.append(l_hat)
    while len(basis) < order:
        basis.append(2.0 * l_hat @ basis[-1] - basis[-2])
    return np.stack(basis[:order])


def ring_upsample_matrix(fine_sizes: Sequence[int] = FINE_SIZES) -> np.ndarray:
    """Linear map from the coarse rings to the fine rings (the decoder's unpooling).

    For each organ ring of ``n`` fine nodes and ``m = ceil(n / 2)`` coarse nodes,
    fine node ``2j`` copies coarse node ``j`` and fine node ``2j + 1`` is the mean of
    coarse nodes ``j`` and ``(j + 1) mod m``.

    Returns
    -------
    (sum(n), sum(m)) float64 array ``U`` with ``fine = U @ coarse``.
    """
    coarse_sizes = [(n + 1) // 2 for n in fine_sizes]
    matrix = np.zeros((sum(fine_sizes), sum(coarse_sizes)))
    fine_start = coarse_start = 0
    for n, m in zip(fine_sizes, coarse_sizes):
        for i in range(n):
            j = i // 2
            if i % 2 == 0:
                matrix[fine_start + i, coarse_start + j] = 1.0
            else:
                matrix[fine_start + i, coarse_start + j] += 0.5
                matrix[fine_start + i, coarse_start + (j + 1) % m] += 0.5
        fine_start += n
        coarse_start += m
    return matrix


def max_pool2x2(x: torch.Tensor) -> torch.Tensor:
    """2 x 2 max pooling with stride 2 (odd trailing rows / columns dropped, as ``F.max_pool2d``).

    Equal to ``F.max_pool2d(x, 2)`` bit for bit, written as two elementwise maxima of
    strided views: on CPU it skips the index bookkeeping of the pooling kernel (measured
    about 7x faster on (4, 8, 1024, 1024) float32 maps).

    Examples
    --------
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> max_pool2x2(x).flatten().tolist()
    [5.0, 7.0, 13.0, 15.0]
    """
    height, width = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :height, :width]
    rows = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
    return torch.maximum(rows[..., 0::2], rows[..., 1::2])


class SampleNorm2d(nn.Module):
    """BatchNorm2d without running statistics, applied to each image on its own.

    Equals ``nn.BatchNorm2d(c, track_running_stats=False)`` run on a batch of one
    image, in train or eval mode alike.  Parameters ``weight`` and ``bias`` (C,)
    carry BN's names so published weights load unchanged.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class ResidualBlock(nn.Module):
    """Pre-activation residual block: (norm, ReLU, conv3x3) twice plus a shortcut, then ReLU.

    The shortcut is a bias-free 1x1 conv followed by a norm when the channel count
    changes, the identity otherwise.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        # In-place ReLUs act on fresh norm outputs: on 1024x1024 maps, not allocating
        # (and page-faulting) another buffer is a large part of the CPU time.
        self.block = nn.Sequential(
            SampleNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            SampleNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
        )
        self.skip: nn.Sequential | None = None
        if in_channels != out_channels:
            self.skip = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
                SampleNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor, pool: bool = False) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W), or (B, C_out, H/2, W/2) with ``pool=True``.

        ``pool=True`` max-pools before the final ReLU (the two commute), so the ReLU
        touches a quarter of the values.
        """
        shortcut = x if self.skip is None else self.skip(x)
        out = self.block(x)
        out += shortcut
        if pool:
            out = max_pool2x2(out)
        return out.relu_()


class Encoding(NamedTuple):
    """What the decoder needs from one encoder pass over B images."""

    mu: torch.Tensor
    """(B, latents) posterior mean."""
    logvar: torch.Tensor
    """(B, latents) posterior log-variance; the posterior sigma is ``exp(logvar / 2)``."""
    coarse_map: torch.Tensor
    """(B, 128, S/32, S/32) output of the sixth block (read by skip block 1)."""
    fine_map: torch.Tensor
    """(B, 128, S/16, S/16) output of the fifth block (read by skip block 2)."""


class Encoder(nn.Module):
    """Six residual blocks (1 -> 8 -> 16 -> 32 -> 64 -> 128 -> 128 channels), max-pool 2 between."""

    def __init__(self, latents: int = 64, input_size: int = 1024) -> None:
        super().__init__()
        if input_size % 32 != 0 or input_size <= 0:
            raise InputError(f"input size must be a positive multiple of 32, got {input_size}")
        channels = [1, 8, 16, 32, 64, 128, 128]
        for i in range(6):
            self.add_module(f"dconv_down{i + 1}", ResidualBlock(channels[i], channels[i + 1]))
        side = input_size // 32
        self.fc_mu = nn.Linear(channels[-1] * side * side, latents)
        self.fc_logvar = nn.Linear(channels[-1] * side * side, latents)

    def forward(self, x: torch.Tensor) -> Encoding:
        blocks = [getattr(self, f"dconv_down{i + 1}") for i in range(6)]
        for block in blocks[:4]:
            x = block(x, pool=True)
        fine_map = blocks[4](x)
        coarse_map = blocks[5](max_pool2x2(fine_map))
        flat = coarse_map.flatten(1)
        return Encoding(self.fc_mu(flat), self.fc_logvar(flat), coarse_map, fine_map)


class ChebConv(nn.Module):
    """Chebyshev spectral graph convolution in dense form.

    ``out = sum_k T_k(L_hat) x W_k^T + bias`` where the caller supplies the
    (K, N, N) polynomial matrices.  Parameters are named like torch_geometric's
    ChebConv: ``lins.{k}.weight`` (out, in) and ``bias`` (out,).
    """

    def __init__(self, in_channels: int, out_channels: int, K: int, bias: bool = True) -> None:
        super().__init__()
        if K < 1:
            raise InputError(f"ChebConv needs K >= 1, got {K}")
        self.in_channels, self.out_channels, self.K = in_channels, out_channels, K
        self.lins = nn.ModuleList([nn.Linear(in_channels, out_channels, bias=False) for _ in range(K)])
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        for lin in self.lins:
            nn.init.xavier_uniform_(lin.weight)

    def forward(self, x: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
        """x: (..., N, in) -> (..., N, out); ``basis`` (K, N, N), unused when K == 1."""
        if self.K == 1:
            out = x @ self.lins[0].weight.t()
        else:
            n = x.shape[-2]
            # Project first (in >= out for every layer here), then mix nodes with one
            # (N, K*N) @ (K*N, out) product per graph.
            weight = torch.cat([lin.weight for lin in self.lins], dim=0).t()
            projected = (x @ weight).unflatten(-1, (self.K, self.out_channels))
            projected = projected.transpose(-3, -2).flatten(-3, -2)
            mixer = basis.transpose(0, 1).reshape(n, self.K * n)
            out = mixer @ projected
        if self.bias is not None:
            out = out + self.bias
        return out


class SkipBlock(nn.Module):
    """Image-to-graph skip connection: nodes predict a position, read the map there.

    ``graphConv_pre`` (a bias-free K = 1 ChebConv, i.e. a linear map to 2 values)
    gives each node a position ``p`` in [0, 1] units; the block returns the node
    features concatenated with the map sampled at ``p * side`` and with ``p``.
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.graphConv_pre = ChebConv(in_channels, 2, K=1, bias=False)

    def forward(self, x: torch.Tensor, feature_map: torch.Tensor, rule: str) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, *S, N, F), feature_map: (B, C, h, w) -> ((B, *S, N, F + C + 2), positions (B, *S, N, 2))."""
        pos = self.graphConv_pre(x, None)
        batch = x.shape[0]
        # The authors scale both axes by the map's width (square maps).
        points = pos.reshape(batch, -1, 2) * feature_map.shape[-1]
        sampled = roi_sample(feature_map, points, rule=rule).reshape(*pos.shape[:-1], -1)
        return torch.cat([x, sampled.to(x.dtype), pos], dim=-1), pos


def _node_norm(x: torch.Tensor) -> torch.Tensor:
    # InstanceNorm1d on (B, nodes, features) normalises each node over its features.
    return F.layer_norm(x, x.shape[-1:], eps=1e-5)


_COMPILED_ENCODERS: "weakref.WeakKeyDictionary[nn.Module, Any]" = weakref.WeakKeyDictionary()
"""torch.compile'd encoders by model, kept outside the module so state_dict keys do not change."""


class HybridGNet(nn.Module):
    """HybridGNet landmark model (skip-connection variant by default).

    Parameters
    ----------
    latents:
        Latent dimension (64 published).
    input_size:
        Side of the square input image (1024 published; any multiple of 32).
    K:
        Chebyshev order of the graph convolutions (6 published).
    filters:
        Decoder feature sizes ``[2, f1, ..., f6]`` in the authors' order
        (``[2, 32, 32, 32, 16, 16, 16]`` published).
    skip_connections:
        True for the two image-to-graph skip blocks (``SC_1``, ``SC_2``), False for
        the plain HybridGNet decoder.
    roi_align:
        Sampling rule of the skip blocks, see :func:`roi_sample`: ``"torchvision"``
        reproduces the authors' compiled kernel, ``"nominal"`` is the smooth 3x3 rule.

    Notes
    -----
    Shapes: images ``(B, 1, input_size, input_size)`` float in [0, 1]; landmarks
    ``(..., 120, 2)`` (x, y) in [0, 1] units of the square input (times 1024 =
    pixels of the preprocessed frame).

    Examples
    --------
    The published architecture, and a small one for a quick forward pass:

    >>> sum(p.numel() for p in HybridGNet().parameters())
    17511090
    >>> model = HybridGNet(input_size=64).eval()
    >>> model(torch.zeros(2, 1, 64, 64)).shape
    torch.Size([2, 120, 2])
    """

    def __init__(
        self,
        latents: int = 64,
        input_size: int = 1024,
        K: int = 6,
        filters: Sequence[int] = (2, 32, 32, 32, 16, 16, 16),
        skip_connections: bool = True,
        roi_align: str = "torchvision",
    ) -> None:
        super().__init__()
        filters = check_architecture(latents, input_size, K, filters)
        if roi_align not in ROI_RULES:
            raise InputError(f"unknown roi_align rule {roi_align!r}; expected one of {ROI_RULES}")
        self.config: dict[str, Any] = {
            "latents": int(latents),
            "inputsize": int(input_size),
            "K": int(K),
            "filters": filters,
            "skip_connections": bool(skip_connections),
            "roi_align": roi_align,
        }
        self.latents, self.input_size, self.roi_align = int(latents), int(input_size), roi_align
        self.skip_connections = bool(skip_connections)
        self.coarse_nodes = sum(COARSE_SIZES)
        self.encoder = Encoder(latents, input_size)
        self.dec_lin = nn.Linear(latents, filters[6] * self.coarse_nodes)
        feature_channels = 128
        extra = feature_channels + 2 if skip_connections else 0
        self.graphConv_up6 = ChebConv(filters[6], filters[5], K)
        self.graphConv_up5 = ChebConv(filters[5], filters[4], K)
        if skip_connections:
            self.SC_1 = SkipBlock(filters[4])
        self.graphConv_up4 = ChebConv(filters[4] + extra, filters[3], K)
        self.graphConv_up3 = ChebConv(filters[3], filters[2], K)
        if skip_connections:
            self.SC_2 = SkipBlock(filters[2])
        self.graphConv_up2 = ChebConv(filters[2] + extra, filters[1], K)
        self.graphConv_up1 = ChebConv(filters[1], filters[0], 1, bias=False)
        self._filters = filters
        dtype = torch.get_default_dtype()
        self.register_buffer(
            "cheb_coarse", torch.as_tensor(chebyshev_basis(ring_adjacency(COARSE_SIZES), K), dtype=dtype), persistent=False
        )
        self.register_buffer(
            "cheb_fine", torch.as_tensor(chebyshev_basis(ring_adjacency(FINE_SIZES), K), dtype=dtype), persistent=False
        )
        self.register_buffer(
            "upsample", torch.as_tensor(ring_upsample_matrix(FINE_SIZES), dtype=dtype), persistent=False
        )

    @classmethod
    def from_config(cls, config: dict[str, Any], **overrides: Any) -> "HybridGNet":
        """Build from a config.json-style dict; unknown keys are ignored.

        Accepted keys: ``latents``, ``inputsize``/``input_size``, ``K``, ``filters``,
        ``skip_connections``/``skip`` (bool), ``roi_align``.  Integer values are
        checked against :data:`CONFIG_RANGES` before anything is allocated
        (:class:`InputError` naming the key and the range).
        """
        merged = {**config, **overrides}
        kwargs: dict[str, Any] = {}
        if "latents" in merged:
            kwargs["latents"] = merged["latents"]
        for key in ("input_size", "inputsize"):
            if key in merged:
                kwargs["input_size"] = merged[key]
        if "K" in merged:
            kwargs["K"] = merged["K"]
        if "filters" in merged:
            kwargs["filters"] = merged["filters"]
        for key in ("skip", "skip_connections"):
            if key in merged:
                if not isinstance(merged[key], bool):
                    raise InputError(f"config key {key!r} must be true or false, got {merged[key]!r}")
                kwargs["skip_connections"] = merged[key]
        if "roi_align" in merged:
            kwargs["roi_align"] = str(merged["roi_align"])
        return cls(**kwargs)

    def _check_images(self, x: torch.Tensor) -> None:
        expected = (1, self.input_size, self.input_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise InputError(f"images must have shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor, compiled: bool = False) -> Encoding:
        """Run the encoder once: (B, 1, S, S) images -> :class:`Encoding`.

        ``compiled=True`` runs it through ``torch.compile`` (compiled on first use for this
        model, then reused): the same function, equal to float rounding; worth it for
        long runs (compiling takes a minute or more on a CPU).
        """
        self._check_images(x)
        if compiled:
            encoder = _COMPILED_ENCODERS.get(self)
            if encoder is None:
                encoder = _COMPILED_ENCODERS[self] = torch.compile(self.encoder, dynamic=False)
            return Encoding(*encoder(x))
        return self.encoder(x)

    def decode(self, z: torch.Tensor, encoding: Encoding) -> torch.Tensor:
        """Decode latent samples: z (B, S, latents) -> landmarks (B, S, 120, 2) in [0, 1] units.

        All S samples of an image read the same feature maps of ``encoding``.
        """
        if z.ndim != 3 or z.shape[0] != encoding.mu.shape[0] or z.shape[-1] != self.latents:
            raise InputError(
                f"z must have shape (B={encoding.mu.shape[0]}, S, {self.latents}), got {tuple(z.shape)}"
            )
        rule = self.roi_align
        x = F.relu(self.dec_lin(z)).unflatten(-1, (self.coarse_nodes, self._filters[6]))
        x = F.relu(_node_norm(self.graphConv_up6(x, self.cheb_coarse)))
        x = F.relu(_node_norm(self.graphConv_up5(x, self.cheb_coarse)))
        if self.skip_connections:
            x, _ = self.SC_1(x, encoding.coarse_map, rule)
        x = F.relu(_node_norm(self.graphConv_up4(x, self.cheb_coarse)))
        x = self.upsample @ x
        x = F.relu(_node_norm(self.graphConv_up3(x, self.cheb_fine)))
        if self.skip_connections:
            x, _ = self.SC_2(x, encoding.fine_map, rule)
        x = F.relu(_node_norm(self.graphConv_up2(x, self.cheb_fine)))
        return self.graphConv_up1(x, None)

    def sample_landmarks(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, Encoding]:
        """Landmarks for latent samples ``z = mu + eps * exp(logvar / 2)``.

        Parameters
        ----------
        x:
            (B, 1, S, S) images in [0, 1].
        eps:
            (B, n_samples, latents) standard normal draws.

        Returns
        -------
        landmarks (B, n_samples, 120, 2) in [0, 1] units, and the :class:`Encoding`
        (its ``logvar`` gives the latent sigmas).  The encoder runs once per image.
        """
        encoding = self.encode(x)
        if eps.ndim != 3 or eps.shape[0] != x.shape[0] or eps.shape[-1] != self.latents:
            raise InputError(f"eps must have shape (B={x.shape[0]}, S, {self.latents}), got {tuple(eps.shape)}")
        eps = eps.to(device=encoding.mu.device, dtype=encoding.mu.dtype)
        z = encoding.mu[:, None, :] + eps * torch.exp(0.5 * encoding.logvar)[:, None, :]
        return self.decode(z, encoding), encoding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Landmarks at the posterior mean: (B, 1, S, S) -> (B, 120, 2) in [0, 1] units."""
        encoding = self.encode(x)
        return self.decode(encoding.mu[:, None, :], encoding)[:, 0]
