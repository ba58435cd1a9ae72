"""HybridGNet in plain torch: layout of the published weights, graph operators, roi sampling, whole model."""

from __future__ import annotations

import platform

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from chexmask_u_tools.errors import InputError  # noqa: E402
from chexmask_u_tools.layout import ring_edges  # noqa: E402
from chexmask_u_tools.model import HybridGNet, chebyshev_basis, ring_upsample_matrix, roi_sample  # noqa: E402
from chexmask_u_tools.model.hybridgnet import COARSE_SIZES, FINE_SIZES, ChebConv  # noqa: E402
from chexmask_u_tools.testing.reference_model import reference_sample_landmarks  # noqa: E402

# ---------------------------------------------------------------- published layout


def test_state_dict_matches_published_layout():
    state = HybridGNet().state_dict()
    assert len(state) == 107
    assert sum(t.numel() for t in state.values()) == 17_511_090
    assert state["encoder.dconv_down1.block.0.weight"].shape == (1,)
    assert state["encoder.dconv_down1.block.2.weight"].shape == (8, 1, 3, 3)
    assert state["encoder.dconv_down5.skip.0.weight"].shape == (128, 64, 1, 1)
    assert "encoder.dconv_down6.skip.0.weight" not in state
    assert state["encoder.fc_mu.weight"].shape == (64, 128 * 32 * 32)
    assert state["dec_lin.weight"].shape == (60 * 16, 64)
    assert state["graphConv_up4.lins.5.weight"].shape == (32, 146)
    assert state["graphConv_up2.lins.0.weight"].shape == (32, 162)
    assert state["graphConv_up6.bias"].shape == (16,)
    assert "graphConv_up1.bias" not in state and state["graphConv_up1.lins.0.weight"].shape == (2, 32)
    assert state["SC_1.graphConv_pre.lins.0.weight"].shape == (2, 16)
    assert state["SC_2.graphConv_pre.lins.0.weight"].shape == (2, 32)
    assert not any("cheb" in k or "upsample" in k for k in state)


def test_no_skip_variant_layout():
    state = HybridGNet(skip_connections=False).state_dict()
    assert len(state) == 105
    assert not any(k.startswith("SC_") for k in state)
    assert state["graphConv_up4.lins.0.weight"].shape == (32, 16)
    assert state["graphConv_up2.lins.0.weight"].shape == (32, 32)


def test_buffers_follow_dtype():
    model = HybridGNet(input_size=64).double()
    assert model.cheb_fine.dtype == torch.float64 and model.upsample.dtype == torch.float64


def test_bad_arguments_raise_input_error():
    model = HybridGNet(input_size=64)
    with pytest.raises(InputError):
        model(torch.zeros(1, 1, 32, 32))
    with pytest.raises(InputError):
        model.sample_landmarks(torch.zeros(1, 1, 64, 64), torch.zeros(1, 3, 8))
    with pytest.raises(InputError):
        HybridGNet(input_size=100)
    with pytest.raises(InputError):
        HybridGNet(roi_align="bogus")


# ---------------------------------------------------------------- graph operators


def _edge_loop_cheb(x: np.ndarray, sizes, weights, bias) -> np.ndarray:
    """torch_geometric's ChebConv recurrence written as a loop over directed edges."""
    edges = ring_edges(sizes)
    directed = [(int(i), int(j)) for i, j in edges] + [(int(j), int(i)) for i, j in edges]
    degree = np.zeros(len(x))
    for _, dst in directed:
        degree[dst] += 1

    def propagate(t):
        out = np.zeros_like(t)
        for src, dst in directed:
            out[dst] += -1.0 / np.sqrt(degree[src] * degree[dst]) * t[src]
        return out

    t0, out = x, x @ weights[0].T
    if len(weights) > 1:
        t1 = propagate(x)
        out = out + t1 @ weights[1].T
        for w in weights[2:]:
            t2 = 2.0 * propagate(t1) - t0
            out = out + t2 @ w.T
            t0, t1 = t1, t2
    return out + bias


@pytest.mark.parametrize("sizes,K", [(COARSE_SIZES, 6), (FINE_SIZES, 6), (FINE_SIZES, 2), ((5, 3), 4)])
def test_dense_cheb_equals_edge_loop(sizes, K):
    rng = np.random.default_rng(K)
    n = sum(sizes)
    conv = ChebConv(7, 3, K).double()
    with torch.no_grad():
        conv.bias.copy_(torch.from_numpy(rng.normal(size=3)))
    x = rng.normal(size=(2, n, 7))
    basis = torch.from_numpy(chebyshev_basis(_ring_adj(sizes), K))
    got = conv(torch.from_numpy(x), basis).detach().numpy()
    weights = [lin.weight.detach().numpy() for lin in conv.lins]
    for b in range(2):
        np.testing.assert_allclose(got[b], _edge_loop_cheb(x[b], sizes, weights, conv.bias.detach().numpy()), atol=1e-12)


def _ring_adj(sizes):
    from chexmask_u_tools.layout import ring_adjacency

    return ring_adjacency(sizes)


def test_upsample_matrix_rule():
    matrix = ring_upsample_matrix((6, 4))
    coarse = np.arange(5.0) * 10  # rings of 3 and 2 coarse nodes
    fine = matrix @ coarse
    np.testing.assert_array_equal(fine[:6], [0, 5, 10, 15, 20, 10])
    np.testing.assert_array_equal(fine[6:], [30, 35, 40, 35])


# ---------------------------------------------------------------- roi sampling


def _direct_roi(fmap: np.ndarray, px: float, py: float, rule: str) -> np.ndarray:
    """torchvision roi_align (aligned, 1x1, adaptive) for box (P-1, P+2), one point, in the map's dtype."""
    dt = fmap.dtype.type
    channels, height, width = fmap.shape
    px, py = dt(px), dt(py)
    if rule == "nominal":
        gx = gy = 3
        xs = [px + dt(k) for k in (-1, 0, 1)]
        ys = [py + dt(k) for k in (-1, 0, 1)]
    else:
        sx, sy = (px - dt(1)) - dt(0.5), (py - dt(1)) - dt(0.5)
        wx, wy = ((px + dt(2)) - dt(0.5)) - sx, ((py + dt(2)) - dt(0.5)) - sy
        gx, gy = int(np.ceil(wx)), int(np.ceil(wy))
        xs = [sx + (dt(i + 0.5) * wx) / dt(gx) for i in range(gx)]
        ys = [sy + (dt(i + 0.5) * wy) / dt(gy) for i in range(gy)]
    total = np.zeros(channels, dtype=fmap.dtype)
    for y in ys:
        for x in xs:
            if y < -1.0 or y > height or x < -1.0 or x > width:
                continue
            y, x = max(y, dt(0)), max(x, dt(0))
            y_low, x_low = int(y), int(x)
            if y_low >= height - 1:
                y_high = y_low = height - 1
                y = dt(y_low)
            else:
                y_high = y_low + 1
            if x_low >= width - 1:
                x_high = x_low = width - 1
                x = dt(x_low)
            else:
                x_high = x_low + 1
            ly, lx = y - dt(y_low), x - dt(x_low)
            hy, hx = dt(1) - ly, dt(1) - lx
            total = total + (
                hy * hx * fmap[:, y_low, x_low]
                + hy * lx * fmap[:, y_low, x_high]
                + ly * hx * fmap[:, y_high, x_low]
                + ly * lx * fmap[:, y_high, x_high]
            )
    return total / dt(max(gx * gy, 1))


def _grid_is_four(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float32)
    width = ((p + np.float32(2)) - np.float32(0.5)) - ((p - np.float32(1)) - np.float32(0.5))
    return np.ceil(width) > 3


@pytest.mark.parametrize("rule", ["torchvision", "nominal"])
def test_roi_sample_equals_direct_kernel(rule):
    rng = np.random.default_rng(3)
    h, w = 8, 11
    fmap = rng.normal(size=(2, 4, h, w)).astype(np.float32)
    # Interior, near and beyond every border, exactly on -1 / size, and far away.
    pts = rng.uniform(-2.5, 13.5, size=(2, 300, 2)).astype(np.float32)
    pts[0, :6] = [[-1, -1], [-1.0001, 3], [w, h], [w + 0.5, 2], [3, h + 1.2], [1e7, 2]]
    if rule == "torchvision":
        assert _grid_is_four(pts).any(axis=-1).sum() > 10, "the 4-sample case must be exercised"
    got = roi_sample(torch.from_numpy(fmap), torch.from_numpy(pts), rule).numpy()
    for b in range(2):
        for n in range(pts.shape[1]):
            expected = _direct_roi(fmap[b], pts[b, n, 0], pts[b, n, 1], rule)
            np.testing.assert_allclose(got[b, n], expected, rtol=1e-5, atol=1e-5, err_msg=f"point {pts[b, n]}")


def test_roi_four_sample_case_by_construction():
    # P = 2 + 3 ulp: P + 2 rounds up (ties to even), so the float32 width is 3 + 1 ulp.
    p = np.float32(2.0) + np.float32(3 * 2.0**-22)
    assert _grid_is_four(np.array([p]))[0]
    fmap = np.zeros((1, 1, 8, 8), dtype=np.float32)
    fmap[0, 0, 2, :] = 1.0  # only row 2 is lit
    pts = np.array([[[4.0, p]]], dtype=np.float32)
    torchvision = roi_sample(torch.from_numpy(fmap), torch.from_numpy(pts), "torchvision").item()
    nominal = roi_sample(torch.from_numpy(fmap), torch.from_numpy(pts), "nominal").item()
    # Nominal: rows ~1, 2, 3 -> only the middle sample sees row 2: ~1/3.
    # Four samples at ~0.875, 1.625, 2.375, 3.125: weights 0, 0.625, 0.625, 0 -> 1.25 / 4.
    assert nominal == pytest.approx(1 / 3, abs=1e-5)
    assert torchvision == pytest.approx(1.25 / 4, abs=1e-5)
    assert torchvision == pytest.approx(float(_direct_roi(fmap[0], 4.0, p, "torchvision")[0]), abs=1e-7)


def test_roi_sample_propagates_nan_and_checks_shapes():
    fmap = torch.ones(1, 2, 4, 4)
    out = roi_sample(fmap, torch.tensor([[[float("nan"), 1.0], [1.0, 1.0]]]))
    assert torch.isnan(out[0, 0]).all() and torch.allclose(out[0, 1], torch.ones(2))
    with pytest.raises(InputError):
        roi_sample(fmap, torch.zeros(1, 3))
    with pytest.raises(InputError):
        roi_sample(fmap, torch.zeros(1, 3, 2), rule="cubic")


def test_roi_nominal_gradients():
    torch.manual_seed(0)
    fmap = torch.randn(1, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    pts = (torch.rand(1, 5, 2, dtype=torch.float64) * 3 + 1.2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f, p: roi_sample(f, p, "nominal"), (fmap, pts))


# ---------------------------------------------------------------- whole model


@pytest.mark.parametrize("skip", [True, False])
def test_float64_nominal_model_equals_straightforward_implementation(skip):
    torch.manual_seed(1)
    model = HybridGNet(input_size=64, skip_connections=skip, roi_align="nominal").double().eval()
    images = torch.rand(2, 1, 64, 64, dtype=torch.float64)
    eps = torch.randn(2, 4, 64, dtype=torch.float64)
    with torch.no_grad():
        batched, encoding = model.sample_landmarks(images, eps)
    for b in range(2):
        expected, mu, logvar = reference_sample_landmarks(model, images[b : b + 1], eps[b])
        assert (batched[b] - expected).abs().max().item() * 1024 < 1e-9
        torch.testing.assert_close(encoding.mu[b], mu, rtol=0, atol=1e-12)
        torch.testing.assert_close(encoding.logvar[b], logvar, rtol=0, atol=1e-12)


def test_batching_equals_one_image_at_a_time_and_forward_is_mean_decode():
    torch.manual_seed(2)
    model = HybridGNet(input_size=96, roi_align="nominal").double().eval()
    images = torch.rand(3, 1, 96, 96, dtype=torch.float64)
    images[1] *= 0.2  # different intensity statistics per image
    eps = torch.randn(3, 5, 64, dtype=torch.float64)
    with torch.no_grad():
        batched, _ = model.sample_landmarks(images, eps)
        for b in range(3):
            alone, _ = model.sample_landmarks(images[b : b + 1], eps[b : b + 1])
            assert (alone[0] - batched[b]).abs().max().item() < 1e-12
        at_mean = model(images)
        zero_eps, _ = model.sample_landmarks(images, torch.zeros(3, 1, 64, dtype=torch.float64))
    torch.testing.assert_close(at_mean, zero_eps[:, 0], rtol=0, atol=1e-14)


def test_full_size_float32_matches_straightforward_implementation():
    # The published geometry end to end in float32 at z = mu.  Under the torchvision rule a
    # last-bit difference upstream can flip a node's sampling grid (SPEC 6), so compare the
    # encoder exactly-ish and the nominal-rule decode tightly.
    torch.manual_seed(3)
    model = HybridGNet(roi_align="nominal").eval()
    image = torch.rand(1, 1, 1024, 1024)
    with torch.no_grad():
        landmarks, encoding = model.sample_landmarks(image, torch.zeros(1, 1, 64))
    expected, mu, _ = reference_sample_landmarks(model, image, torch.zeros(1, 64))
    torch.testing.assert_close(encoding.mu[0], mu, rtol=1e-4, atol=1e-4)
    assert (landmarks[0] - expected).abs().max().item() * 1024 < 0.05


# ---------------------------------------------------------------- CPU speed paths: same numbers


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (2, 4, 7, 9), (1, 1, 2, 3)])
def test_max_pool2x2_equals_max_pool2d(shape):
    from chexmask_u_tools.model.hybridgnet import max_pool2x2

    x = torch.randn(shape, dtype=torch.float64)
    x[0, 0, 0, 0] = float("nan")
    expected = F.max_pool2d(x, 2)
    got = max_pool2x2(x)
    assert got.shape == expected.shape
    assert torch.equal(torch.isnan(got), torch.isnan(expected))
    assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(expected))


def test_keep_freed_memory_applies_on_linux_glibc():
    # Process-wide setting: checked in a child process.
    code = "from chexmask_u_tools.model.predict import keep_freed_memory; print(keep_freed_memory())"
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    expected = "True" if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc" else "False"
    assert result.stdout.strip() == expected


@pytest.mark.slow
def test_compiled_encoder_changes_nothing_in_float64():
    from chexmask_u_tools.model.predict import draw_eps, predict_batch

    torch.manual_seed(0)
    model = HybridGNet(input_size=64, roi_align="nominal").double().eval()
    images = torch.rand(2, 1, 64, 64, dtype=torch.float64)
    eps = draw_eps(0, ["a", "b"], 4)
    plain = predict_batch(model, images, eps)
    try:
        compiled = predict_batch(model, images, eps, compile=True)
    except Exception as error:  # noqa: BLE001 - no C++ compiler or an unsupported platform
        pytest.skip(f"torch.compile unavailable here: {type(error).__name__}: {str(error)[:200]}")
    for key in ("mean", "std", "latent_sigma"):
        # Fused kernels may sum in another order: float64 rounding, nothing more.
        torch.testing.assert_close(compiled[key], plain[key], rtol=1e-10, atol=1e-9)
    assert compiled["mean"].dtype == torch.float64
