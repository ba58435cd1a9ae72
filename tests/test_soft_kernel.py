"""The compiled soft-mask band kernel against the numpy reference: accuracy, output types, dispatch, bad input."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.masks.raster import rasterize
from chexmask_u_tools.masks.soft import (
    BAND_Z,
    band_mask,
    band_z,
    pixel_weight_map,
    soft_mask,
    soft_mask_organs,
    soft_method,
)
from conftest import run_python


def _star(rng: np.random.Generator, h: int, w: int, zero_share: float = 0.2):
    """A random star-shaped contour (it may cross the border) and per-axis std 0..10 px, some nodes exactly 0."""
    n = int(rng.integers(3, 40))
    angle = np.sort(rng.uniform(0, 2 * np.pi, n))
    radius = rng.uniform(3, 0.6 * max(h, w), n)
    centre = rng.uniform(0.2, 0.8, 2) * (w, h)
    pts = centre + np.c_[radius * np.cos(angle), radius * np.sin(angle)] + rng.normal(0, 1, (n, 2))
    std = rng.uniform(0, 10, (n, 2)) * (rng.uniform(size=(n, 1)) >= zero_share)
    return pts, std


contours = st.builds(
    lambda seed, h, w: (*_star(np.random.default_rng(seed), h, w), h, w),
    st.integers(0, 2**32 - 1),
    st.integers(8, 72),
    st.integers(8, 72),
)


@settings(max_examples=60, deadline=None)
@given(contours)
def test_kernel_within_1e6_of_the_whole_grid(case):
    pts, std, h, w = case
    reference = soft_mask(pts, std, h, w, band=False)
    kernel = soft_mask(pts, std, h, w, method="kernel")
    assert kernel.dtype == np.float32
    np.testing.assert_allclose(kernel, reference, rtol=0, atol=1e-6)
    # and the numpy band within the float32 arithmetic of the kernel
    np.testing.assert_allclose(kernel, soft_mask(pts, std, h, w, method="numpy"), rtol=0, atol=2e-7)


@settings(max_examples=40, deadline=None)
@given(contours, st.sampled_from([1e-5, 1e-4, 1e-3, 1e-2, 0.1]))
def test_looser_tol_stays_within_tol_of_the_whole_grid(case, tol):
    pts, std, h, w = case
    reference = soft_mask(pts, std, h, w, band=False)
    for method in ("kernel", "numpy"):
        got = soft_mask(pts, std, h, w, tol=tol, method=method)
        assert np.abs(got - reference).max() <= tol


def test_band_z_and_a_narrower_band():
    assert band_z(1e-6) == BAND_Z
    assert band_z(1e-3) == pytest.approx(3.09, abs=0.01)
    assert band_z(0.4) < band_z(1e-2) < band_z(1e-3) < band_z(1e-5) < BAND_Z
    # at tol=1e-3 the band (pixels strictly between 0 and 1) is about a third narrower on a smooth contour
    a = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    circle = np.c_[128 + 80 * np.cos(a), 128 + 80 * np.sin(a)]
    std = np.full(60, 6.0)

    def width(p):
        return int(((p > 0) & (p < 1)).sum())

    assert width(soft_mask(circle, std, 256, 256, tol=1e-3)) < 0.75 * width(soft_mask(circle, std, 256, 256))


def test_real_contours_kernel_matches_whole_grid(real_subset_dir):
    import pandas as pd

    from chexmask_u_tools.io.parsing import parse_points
    from chexmask_u_tools.layout import ORGAN_SLICES, ORGANS

    df = pd.read_csv(sorted(real_subset_dir.glob("*.csv"))[0])
    lm = parse_points(df["Landmarks"][0]) / 4
    rng = np.random.default_rng(9)
    for organ in ORGANS:
        pts = lm[ORGAN_SLICES[organ]]
        std = rng.uniform(0.5, 4, (len(pts), 2))
        reference = soft_mask(pts, std, 256, 256, band=False)
        np.testing.assert_allclose(soft_mask(pts, std, 256, 256), reference, rtol=0, atol=1e-6)
        assert np.abs(soft_mask(pts, std, 256, 256, tol=1e-3) - reference).max() <= 1e-3


def test_zero_std_is_the_hard_mask_in_every_dtype():
    rng = np.random.default_rng(1)
    for _ in range(5):
        pts, std = _star(rng, 50, 60)
        hard = rasterize(pts, 50, 60)
        for method in ("kernel", "numpy"):
            np.testing.assert_array_equal(soft_mask(pts, 0 * std, 50, 60, method=method), hard.astype(np.float32))
            np.testing.assert_array_equal(soft_mask(pts, 0 * std, 50, 60, dtype=np.float16, method=method), hard)
            u8 = soft_mask(pts, 0 * std, 50, 60, dtype="uint8", method=method)
            assert u8.dtype == np.uint8
            np.testing.assert_array_equal(u8, hard.astype(np.uint8) * 255)


@settings(max_examples=40, deadline=None)
@given(contours)
def test_float16_and_uint8_are_the_float32_mask_rounded(case):
    pts, std, h, w = case
    for method in ("kernel", "numpy"):
        p = soft_mask(pts, std, h, w, method=method)
        half = soft_mask(pts, std, h, w, dtype=np.float16, method=method)
        assert half.dtype == np.float16
        np.testing.assert_array_equal(half.view(np.uint16), p.astype(np.float16).view(np.uint16))
        u8 = soft_mask(pts, std, h, w, dtype=np.uint8, method=method)
        np.testing.assert_array_equal(u8, np.rint(p * np.float32(255)).astype(np.uint8))


def test_float16_rounding_on_every_scale():
    # probabilities from 1e-9 to 1 - 1e-7: subnormal and normal halves, round-half-even ties
    a = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    circle = np.c_[40 + 25 * np.cos(a), 40 + 25 * np.sin(a)]
    p = soft_mask(circle, np.full(40, 4.0), 80, 80)
    half = soft_mask(circle, np.full(40, 4.0), 80, 80, dtype=np.float16)
    assert ((p > 0) & (p < 6e-5)).any() and ((p > 0.999) & (p < 1)).any()
    np.testing.assert_array_equal(half.view(np.uint16), p.astype(np.float16).view(np.uint16))


@settings(max_examples=30, deadline=None)
@given(contours, st.sampled_from([0.5, 1.0, 2.5, BAND_Z + 1.0]))
def test_band_mask_kernel_equals_numpy_and_whole_grid(case, k):
    pts, std, h, w = case
    kernel = band_mask(pts, std, h, w, k=k, method="kernel")
    np.testing.assert_array_equal(kernel, band_mask(pts, std, h, w, k=k, method="numpy"))
    np.testing.assert_array_equal(kernel, band_mask(pts, std, h, w, k=k, band=False))


@settings(max_examples=30, deadline=None)
@given(contours, st.floats(0, 1), st.sampled_from([0.5, 1.0, 2.0]))
def test_pixel_weight_map_kernel_equals_numpy(case, floor, power):
    pts, std, h, w = case
    kernel = pixel_weight_map(pts, std, h, w, floor=floor, power=power, method="kernel")
    assert kernel.dtype == np.float32
    # the formula on the kernel's own probabilities (the kernel writes the weights directly)
    p = soft_mask(pts, std, h, w, method="kernel")
    np.testing.assert_allclose(kernel, floor + (1 - floor) * np.abs(2 * p - 1) ** power, rtol=1e-6, atol=1e-6)
    if power >= 1:  # |2p - 1| ** power is then power-Lipschitz: the 1e-6 of p carries over
        reference = pixel_weight_map(pts, std, h, w, floor=floor, power=power, band=False)
        np.testing.assert_allclose(kernel, reference, rtol=0, atol=2e-6 * power + 1e-7)


def test_strongly_varying_std_along_the_contour():
    # neighbours with very different reach: the kernel's spans must still let every pixel see its nearest segment
    rng = np.random.default_rng(4)
    a = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    for _ in range(4):
        pts = np.c_[60 + 40 * np.cos(a), 55 + 30 * np.sin(a)] + rng.normal(0, 2, (48, 2))
        std = np.where(rng.uniform(size=(48, 1)) < 0.5, 0.2, 12.0) * np.ones((48, 2))
        reference = soft_mask(pts, std, 110, 120, band=False)
        np.testing.assert_allclose(soft_mask(pts, std, 110, 120), reference, rtol=0, atol=1e-6)
        np.testing.assert_allclose(soft_mask(pts, std, 110, 120, tol=1e-3), reference, rtol=0, atol=1e-3)


def test_batch_forms_equal_the_single_calls():
    rng = np.random.default_rng(2)
    pentagon = np.c_[20 + 12 * np.cos(np.arange(5) * 1.2566), 20 + 12 * np.sin(np.arange(5) * 1.2566)]
    pts = pentagon + rng.normal(0, 1, (3, 5, 2))
    std = rng.uniform(0.5, 3, (3, 5))
    batch = soft_mask(pts, std, 40, 40, dtype=np.uint8)
    assert batch.shape == (3, 40, 40) and batch.dtype == np.uint8
    for b in range(3):
        np.testing.assert_array_equal(batch[b], soft_mask(pts[b], std[b], 40, 40, dtype=np.uint8))
    organs = []
    for n, cx in ((44, 22), (50, 58), (26, 40)):
        a = np.linspace(0, 2 * np.pi, n, endpoint=False)
        organs.append(np.c_[cx + 14 * np.cos(a), 40 + 20 * np.sin(a)])
    lm = np.concatenate(organs)
    lms = np.stack([lm, lm + 3.3])
    sds = rng.uniform(0.5, 4, (2, 120, 2))
    out = soft_mask_organs(lms, sds, 80, 80, tol=1e-3)
    assert out.shape == (2, 3, 80, 80)
    for b in range(2):
        np.testing.assert_array_equal(out[b], soft_mask_organs(lms[b], sds[b], 80, 80, tol=1e-3))
    with pytest.raises(InputError, match="std must have shape"):
        soft_mask(pts, std[:2], 40, 40)


def test_dispatch_is_pinned():
    # the kernel was faster than numpy at every size measured (scripts/bench_soft.py prints both)
    for size in (1, 16, 256, 1024, 4096):
        assert soft_method(size, size) == "kernel"
        assert soft_method(size, size, band=False) == "numpy"
    a = np.linspace(0, 2 * np.pi, 30, endpoint=False)
    circle = np.c_[20 + 12 * np.cos(a), 20 + 12 * np.sin(a)]
    auto = soft_mask(circle, np.full(30, 2.0), 40, 40)
    np.testing.assert_array_equal(auto, soft_mask(circle, np.full(30, 2.0), 40, 40, method="kernel"))


def test_dispatch_without_jit_uses_numpy():
    code = (
        "from chexmask_u_tools.masks.soft import soft_method\n"
        "from chexmask_u_tools.select.weights import band_pixel_weights, pixel_weights_method, soft_pixel_weights\n"
        "import numpy as np\n"
        "assert soft_pixel_weights(np.zeros((2, 3, 3), np.float32), reduce='min').shape == (3, 3)\n"
        "assert band_pixel_weights(np.ones(4, bool)).tolist() == [float(np.float32(0.2))] * 4\n"
        "print(soft_method(512, 512), pixel_weights_method())"
    )
    assert run_python(code, NUMBA_DISABLE_JIT="1").strip() == "numpy numpy"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: soft_mask(np.zeros((5, 2)), np.ones(5), 10, 10, tol=1e-7), "tol must lie"),
        (lambda: soft_mask(np.zeros((5, 2)), np.ones(5), 10, 10, tol=0.5), "tol must lie"),
        (lambda: soft_mask(np.zeros((5, 2)), np.ones(5), 10, 10, tol="x"), "tol must be a number"),
        (lambda: soft_mask(np.zeros((5, 2)), np.ones(5), 10, 10, dtype=np.float64), "dtype must be one of"),
        (lambda: soft_mask(np.zeros((5, 2)), np.ones(5), 10, 10, dtype="nonsense"), "dtype must be one of"),
        (lambda: soft_mask(np.zeros((5, 2)), np.ones(5), 10, 10, method="cuda"), "method must be one of"),
        (lambda: soft_mask(np.zeros((5, 2)), np.ones(5), 10, 10, band=False, method="kernel"), "band=False"),
        (lambda: soft_mask(np.zeros((5, 2)), np.full(5, 2.0**21), 10, 10), "beyond"),
        (lambda: soft_mask(np.zeros((5, 2)), np.full(5, 2.0**19), 10, 10, from_size=(1, 1)), "once scaled"),
        (lambda: band_mask(np.zeros((5, 2)), np.ones(5), 10, 10, method="gpu"), "method must be one of"),
        (lambda: pixel_weight_map(np.zeros((5, 2)), np.ones(5), 10, 10, tol=2.0), "tol must lie"),
        (lambda: soft_mask_organs(np.zeros((2, 120, 2)), np.ones((3, 120)), 10, 10, allow_empty=True), "std"),
    ],
)
def test_bad_options_are_refused(call, message):
    with pytest.raises(InputError, match=message):
        call()


_HOSTILE = textwrap.dedent(
    """
    import json
    import numpy as np
    from chexmask_u_tools.errors import InputError
    from chexmask_u_tools.masks.soft import band_mask, pixel_weight_map, soft_mask, soft_mask_organs

    square = np.array([[5.0, 5.0], [14.0, 5.0], [14.0, 14.0], [5.0, 14.0]])
    refused = {}
    cases = {
        "nan point": lambda: soft_mask(np.array([[np.nan, 1.0], [3.0, 4.0], [5.0, 1.0]]), np.ones(3), 20, 20),
        "inf point": lambda: soft_mask(np.array([[np.inf, 1.0], [3.0, 4.0], [5.0, 1.0]]), np.ones(3), 20, 20),
        "huge point": lambda: soft_mask(square * 1e9, np.ones(4), 20, 20),
        "nan std": lambda: soft_mask(square, np.full(4, np.nan), 20, 20, dtype=np.uint8),
        "inf std": lambda: band_mask(square, np.full(4, np.inf), 20, 20),
        "negative std": lambda: pixel_weight_map(square, -np.ones(4), 20, 20),
        "huge std": lambda: soft_mask(square, np.full(4, 1e30), 20, 20, dtype=np.float16),
        "bad size": lambda: soft_mask(square, np.ones(4), 0, 20),
        "off grid organs": lambda: soft_mask_organs(np.full((120, 2), 5000.0), np.ones(120), 20, 20),
    }
    for name, call in cases.items():
        try:
            call()
            refused[name] = "accepted"
        except InputError as exc:
            refused[name] = type(exc).__name__
    # extreme but valid input goes through the kernel and must agree with numpy
    agree = {}
    rng = np.random.default_rng(0)
    extreme = {
        "far off grid": (square + 1e6, np.full(4, 3.0), 16, 16),
        "around the grid": (np.array([[-3e5, -3e5], [3e5, -3e5], [3e5, 3e5], [-3e5, 3e5]]), np.full(4, 5.0), 24, 24),
        "std bigger than the grid": (square, np.full(4, 1e5), 20, 20),
        "one point": (np.array([[7.2, 7.9]]), np.array([2.0]), 16, 16),
        "collinear": (np.array([[1.0, 1.0], [5.0, 5.0], [9.0, 9.0]]), np.ones(3), 12, 12),
        "repeated points": (np.repeat(square, 3, axis=0), np.full(12, 1.5), 20, 20),
        "one pixel grid": (square / 3, np.ones(4), 1, 1),
        "one row grid": (square, np.ones(4), 1, 30),
        "self crossing": (np.array([[2.0, 2.0], [18.0, 18.0], [18.0, 2.0], [2.0, 18.0]]), np.full(4, 2.0), 20, 20),
        "random": (rng.uniform(-40, 80, (30, 2)), rng.uniform(0, 9, (30, 2)), 40, 50),
    }
    for name, (pts, std, h, w) in extreme.items():
        kernel = soft_mask(pts, std, h, w, method="kernel")
        numpy = soft_mask(pts, std, h, w, method="numpy")
        whole = soft_mask(pts, std, h, w, band=False)
        same_band = bool((band_mask(pts, std, h, w, method="kernel") == band_mask(pts, std, h, w, method="numpy")).all())
        agree[name] = [float(np.abs(kernel - numpy).max()), float(np.abs(kernel - whole).max()), same_band]
    # and every output mode on random and real contours, sizes and tolerances (bounds are checked here)
    from chexmask_u_tools.io.sample import load_sample
    from chexmask_u_tools.select.weights import band_pixel_weights, soft_pixel_weights

    sample = load_sample().head(3)
    for k, (lm, sd) in enumerate(zip(sample["landmarks"].to_numpy(), sample["landmarks_std"].to_numpy())):
        for size, tol, dtype in ((64, 1e-6, np.float16), (300, 1e-3, np.uint8), (512, 0.01, np.float32)):
            soft = soft_mask_organs(np.asarray(lm), np.asarray(sd), size, size, from_size=(1024, 1024), tol=tol,
                                    dtype=dtype)
            soft_pixel_weights(soft.astype(np.float32), reduce="mean")
    for seed in range(40):
        pts, std = rng.uniform(-30, 90, (int(rng.integers(1, 30)), 2)), rng.uniform(0, 12, (1, 2))
        std = np.repeat(std, len(pts), axis=0) * (rng.uniform(size=(len(pts), 1)) < 0.7)
        h, w = int(rng.integers(1, 70)), int(rng.integers(1, 70))
        soft_mask(pts, std, h, w, dtype=np.float16)
        band_pixel_weights(band_mask(pts, std, h, w, k=float(rng.uniform(0, 6))))
        pixel_weight_map(pts, std, h, w, tol=1e-4)
    print(json.dumps({"refused": refused, "agree": agree}))
    """
)


@pytest.mark.slow
def test_hostile_input_is_refused_or_harmless_in_a_subprocess(tmp_path):
    # numba does not check bounds by default: the kernels run here compiled with bounds checks (their own
    # cache), in a subprocess, so that a write outside a buffer fails this test instead of corrupting the run
    output = run_python(_HOSTILE, stderr_tail=2000, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path))
    report = json.loads(output.strip().splitlines()[-1])
    assert report["refused"] == {name: "InputError" for name in report["refused"]}
    for name, (to_numpy, to_whole, same_band) in report["agree"].items():
        assert to_numpy <= 2e-7 and to_whole <= 1e-6 and same_band, (name, to_numpy, to_whole, same_band)


@settings(max_examples=40, deadline=None)
@given(contours, st.sampled_from([BAND_Z, 3.09, 1.0]))
def test_compiled_contour_tables_equal_the_numpy_model(case, z_cut):
    from chexmask_u_tools.kernels import soft as kernels
    from chexmask_u_tools.masks.soft import contour_model, kernel_tables

    pts, std, h, w = case
    model = contour_model(pts, std, h, w, z_cut)
    seg, seg32 = kernel_tables(model, h, w)
    n = len(pts)
    a, convex, nxt = np.empty((n, 2)), np.empty(n, dtype=bool), np.empty(n, dtype=np.int64)
    got, got32 = np.empty((kernels.SEG_ROWS, n)), np.empty((kernels.SEG32_ROWS, n), dtype=np.float32)
    kernels.contour_tables(pts, std, z_cut, h, w, a, convex, nxt, got, got32)
    np.testing.assert_allclose(a, model.a, rtol=1e-14, atol=1e-12)
    np.testing.assert_array_equal(convex, model.convex)
    np.testing.assert_array_equal(nxt, model.nxt)
    np.testing.assert_allclose(got, seg, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got32, seg32, rtol=1e-6, atol=1e-12)


def test_vanishing_and_empty_inputs_agree_on_every_path():
    """A subnormal or tiny std (below MIN_STD) is drawn at MIN_STD by numpy, the kernel and torch alike; B = 0 is empty."""
    import chexmask_u_tools as cxu
    from chexmask_u_tools.masks.soft import MIN_STD

    lm = np.asarray(cxu.load_sample()["landmarks"][0]) * 64 / 1024
    at_floor = cxu.soft_mask_organs(lm, np.full((120, 2), MIN_STD), 64, 64, method="numpy")
    for value in (1e-310, 1e-30, 1e-20):
        sd = np.full((120, 2), value)
        for method in ("numpy", "kernel"):
            np.testing.assert_allclose(cxu.soft_mask_organs(lm, sd, 64, 64, method=method), at_floor, rtol=0, atol=1e-6)
    assert cxu.soft_mask_organs(np.zeros((0, 120, 2)), np.zeros((0, 120, 2)), 64, 64).shape == (0, 3, 64, 64)
