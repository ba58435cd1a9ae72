"""A deliberately straightforward implementation of the same model, for checks and benchmarks.

It reads the parameters of a :class:`HybridGNet` but computes everything its own
way, the way the authors' pipeline does: one image at a time (BatchNorm in
training mode on a batch of one), one latent sample at a time, Chebyshev
convolutions as message passing over the ring edge list (gather along edges,
scatter-add into nodes), ``roi_align`` as an explicit loop over the sample grid
with four-corner bilinear reads, unpooling by explicit node indices.

It shares no code with :mod:`.hybridgnet` or :mod:`.roi`, so agreement between the
two is evidence that the fast version is right.  ``scripts/bench_model.py`` times it
as the baseline.  It is not meant for production use.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from chexmask_u_tools.layout import ORGAN_SIZES, ORGANS, ring_edges
from chexmask_u_tools.model.hybridgnet import HybridGNet

_FINE = tuple(ORGAN_SIZES[o] for o in ORGANS)
_COARSE = tuple((n + 1) // 2 for n in _FINE)


def _edge_lists(sizes: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    edges = ring_edges(sizes)
    src = np.concatenate([edges[:, 0], edges[:, 1]])
    dst = np.concatenate([edges[:, 1], edges[:, 0]])
    degree = np.bincount(dst, minlength=int(sum(sizes))).astype(np.float64)
    # Scaled sym-normalised Laplacian with lambda_max = 2: off-diagonal -1/sqrt(d_i d_j), zero diagonal.
    norm = -1.0 / np.sqrt(degree[src] * degree[dst])
    return (
        torch.as_tensor(src, device=device),
        torch.as_tensor(dst, device=device),
        torch.as_tensor(norm, device=device),
    )


def _propagate(x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(x)
    return out.index_add_(0, dst, norm.to(x.dtype)[:, None] * x[src])


def _cheb_edges(x: torch.Tensor, edges: tuple, weights: list[torch.Tensor], bias: torch.Tensor | None) -> torch.Tensor:
    """x (N, F); weights [W_k (out, in)]; Chebyshev recurrence by message passing."""
    t_prev, out = x, x @ weights[0].t()
    if len(weights) > 1:
        t_cur = _propagate(x, *edges)
        out = out + t_cur @ weights[1].t()
        for w in weights[2:]:
            t_next = 2.0 * _propagate(t_cur, *edges) - t_prev
            out = out + t_next @ w.t()
            t_prev, t_cur = t_cur, t_next
    return out if bias is None else out + bias


def _norm_nodes(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5)


def _unpool(x: torch.Tensor) -> torch.Tensor:
    rows = []
    coarse_start = 0
    for n, m in zip(_FINE, _COARSE):
        for i in range(n):
            j = coarse_start + i // 2
            if i % 2 == 0:
                rows.append(x[j])
            else:
                rows.append(0.5 * (x[j] + x[coarse_start + (i // 2 + 1) % m]))
        coarse_start += m
    return torch.stack(rows)


def reference_roi(feature_map: torch.Tensor, points: torch.Tensor, rule: str) -> torch.Tensor:
    """roi_align of one image, box (P-1, P+2) per axis, aligned, 1x1: (C,H,W), (N,2) -> (N,C)."""
    channels, height, width = feature_map.shape
    x_c, y_c = points[:, 0], points[:, 1]
    if rule == "nominal":
        grid_x = grid_y = torch.full_like(x_c, 3.0)
    else:
        start_x, start_y = (x_c - 1.0) - 0.5, (y_c - 1.0) - 0.5
        bin_x = ((x_c + 2.0) - 0.5) - start_x
        bin_y = ((y_c + 2.0) - 0.5) - start_y
        grid_x, grid_y = torch.ceil(bin_x), torch.ceil(bin_y)
    count = torch.clamp(grid_x * grid_y, min=1.0)
    out = torch.zeros(points.shape[0], channels, dtype=feature_map.dtype, device=feature_map.device)
    flat = feature_map.reshape(channels, height * width)
    max_grid = int(max(grid_x.max().item(), grid_y.max().item(), 0))
    for iy in range(max_grid):
        if rule == "nominal":
            y = y_c + (iy - 1.0)
        else:
            y = start_y + ((iy + 0.5) * bin_y) / grid_y
        for ix in range(max_grid):
            x = x_c + (ix - 1.0) if rule == "nominal" else start_x + ((ix + 0.5) * bin_x) / grid_x
            active = (iy < grid_y) & (ix < grid_x) & (y >= -1.0) & (y <= height) & (x >= -1.0) & (x <= width)
            yy, xx = torch.clamp(y, min=0.0), torch.clamp(x, min=0.0)
            y_low = torch.clamp(torch.floor(yy), max=height - 1)
            x_low = torch.clamp(torch.floor(xx), max=width - 1)
            yy = torch.where(y_low >= height - 1, y_low, yy)
            xx = torch.where(x_low >= width - 1, x_low, xx)
            y_high = torch.clamp(y_low + 1, max=height - 1)
            x_high = torch.clamp(x_low + 1, max=width - 1)
            ly, lx = yy - y_low, xx - x_low
            hy, hx = 1.0 - ly, 1.0 - lx
            corners = [(y_low, x_low, hy * hx), (y_low, x_high, hy * lx), (y_high, x_low, ly * hx), (y_high, x_high, ly * lx)]
            value = torch.zeros_like(out)
            for cy, cx, w in corners:
                value = value + w[:, None] * flat[:, (cy * width + cx).long()].t()
            out = out + torch.where(active[:, None], value, torch.zeros_like(value))
    return out / count[:, None]


def _encode_one(model: HybridGNet, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
    params = dict(model.named_parameters())

    def bn(x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.batch_norm(x, None, None, params[prefix + ".weight"], params[prefix + ".bias"], training=True)

    def block(x: torch.Tensor, i: int) -> torch.Tensor:
        p = f"encoder.dconv_down{i}"
        y = F.conv2d(F.relu(bn(x, f"{p}.block.0")), params[f"{p}.block.2.weight"], params[f"{p}.block.2.bias"], padding=1)
        y = F.conv2d(F.relu(bn(y, f"{p}.block.3")), params[f"{p}.block.5.weight"], params[f"{p}.block.5.bias"], padding=1)
        shortcut = x
        if f"{p}.skip.0.weight" in params:
            shortcut = bn(F.conv2d(x, params[f"{p}.skip.0.weight"]), f"{p}.skip.1")
        return F.relu(y + shortcut)

    x = image
    for i in range(1, 5):
        x = F.max_pool2d(block(x, i), 2)
    conv5 = block(x, 5)
    conv6 = block(F.max_pool2d(conv5, 2), 6)
    flat = conv6.reshape(-1)
    mu = params["encoder.fc_mu.weight"] @ flat + params["encoder.fc_mu.bias"]
    logvar = params["encoder.fc_logvar.weight"] @ flat + params["encoder.fc_logvar.bias"]
    return mu, logvar, conv6[0], conv5[0]


def _decode_one(model: HybridGNet, z: torch.Tensor, conv6: torch.Tensor, conv5: torch.Tensor, rule: str) -> torch.Tensor:
    params = dict(model.named_parameters())
    device = z.device
    coarse_edges, fine_edges = _edge_lists(_COARSE, device), _edge_lists(_FINE, device)

    def cheb(name: str, x: torch.Tensor, edges: tuple) -> torch.Tensor:
        k = 0
        weights = []
        while f"{name}.lins.{k}.weight" in params:
            weights.append(params[f"{name}.lins.{k}.weight"])
            k += 1
        return _cheb_edges(x, edges, weights, params.get(f"{name}.bias"))

    def skip(name: str, x: torch.Tensor, fmap: torch.Tensor) -> torch.Tensor:
        pos = x @ params[f"{name}.graphConv_pre.lins.0.weight"].t()
        sampled = reference_roi(fmap, pos * fmap.shape[-1], rule)
        return torch.cat([x, sampled, pos], dim=1)

    n_features = params["dec_lin.weight"].shape[0] // sum(_COARSE)
    x = F.relu(params["dec_lin.weight"] @ z + params["dec_lin.bias"]).reshape(sum(_COARSE), n_features)
    x = F.relu(_norm_nodes(cheb("graphConv_up6", x, coarse_edges)))
    x = F.relu(_norm_nodes(cheb("graphConv_up5", x, coarse_edges)))
    if model.skip_connections:
        x = skip("SC_1", x, conv6)
    x = F.relu(_norm_nodes(cheb("graphConv_up4", x, coarse_edges)))
    x = _unpool(x)
    x = F.relu(_norm_nodes(cheb("graphConv_up3", x, fine_edges)))
    if model.skip_connections:
        x = skip("SC_2", x, conv5)
    x = F.relu(_norm_nodes(cheb("graphConv_up2", x, fine_edges)))
    return cheb("graphConv_up1", x, fine_edges)


@torch.no_grad()
def reference_sample_landmarks(
    model: HybridGNet, image: torch.Tensor, eps: torch.Tensor, rule: str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Straightforward per-image, per-sample version of :meth:`HybridGNet.sample_landmarks`.

    Parameters
    ----------
    model:
        Source of the parameters (its dtype/device are used).
    image:
        (1, 1, S, S) one image in [0, 1].
    eps:
        (n_samples, latents) standard normal draws.
    rule:
        ``roi_align`` rule; default ``model.roi_align``.

    Returns
    -------
    landmarks (n_samples, 120, 2) in [0, 1] units, mu (latents,), logvar (latents,).
    """
    rule = model.roi_align if rule is None else rule
    mu, logvar, conv6, conv5 = _encode_one(model, image)
    sigma = torch.exp(logvar / 2.0)
    samples = [_decode_one(model, mu + e.to(mu) * sigma, conv6, conv5, rule) for e in eps]
    return torch.stack(samples), mu, logvar

