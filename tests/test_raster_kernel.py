"""The compiled fill kernel against the numpy rasterizer: bit for bit, label maps, dispatch, hostile input.

The numpy rasterizer is itself pinned to OpenCV (tests/test_raster.py runs the
OpenCV digests and the released masks through both methods).
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chexmask_u_tools as cxu
from chexmask_u_tools.masks.raster import MAX_COORDINATE, RASTER_METHODS, label_map, raster_method, rasterize, rasterize_organs
from conftest import run_python


@st.composite
def polygons(draw):
    """A polygon of 1-30 vertices on a small grid, float or integer, often crossing the border, sometimes far out."""
    height, width = draw(st.integers(1, 50)), draw(st.integers(1, 50))
    n = draw(st.integers(1, 30))
    spread = draw(st.sampled_from([0.6, 1.5, 4.0, 1e3, MAX_COORDINATE / 60]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    centre = np.array([width, height]) / 2
    points = centre + rng.uniform(-1, 1, (n, 2)) * spread * max(height, width)
    if draw(st.booleans()):
        points = np.round(points).astype(np.int64)
    if draw(st.booleans()) and n > 2:  # repeated vertices and axis-parallel edges
        points[rng.integers(0, n)] = points[rng.integers(0, n)]
        points[rng.integers(0, n), 0] = points[rng.integers(0, n), 0]
    return np.clip(points, -MAX_COORDINATE, MAX_COORDINATE), height, width


@settings(max_examples=300, deadline=None)
@given(polygons())
def test_kernel_equals_numpy_on_generated_polygons(case):
    points, height, width = case
    kernel = rasterize(points, height, width, method="kernel")
    np.testing.assert_array_equal(kernel, rasterize(points, height, width, method="numpy"))
    assert kernel.dtype == bool and kernel.shape == (height, width)


@settings(max_examples=60, deadline=None)
@given(st.lists(polygons(), min_size=1, max_size=6))
def test_kernel_equals_numpy_on_batches(cases):
    height, width = cases[0][1:]
    ragged = [points for points, _, _ in cases]
    np.testing.assert_array_equal(
        rasterize(ragged, height, width, method="kernel"), rasterize(ragged, height, width, method="numpy")
    )


def test_sample_organs_and_label_maps_equal_numpy():
    sample = cxu.load_sample()
    landmarks = sample["landmarks"].to_numpy().astype(np.float64)
    for size in ((1024, 1024), (512, 512), (300, 700), (37, 23)):
        kernel = rasterize_organs(landmarks, *size, from_size=(1024, 1024), method="kernel")
        np.testing.assert_array_equal(kernel, rasterize_organs(landmarks, *size, from_size=(1024, 1024), method="numpy"))
        labels = label_map(landmarks, *size, from_size=(1024, 1024), method="kernel")
        np.testing.assert_array_equal(labels, label_map(landmarks, *size, from_size=(1024, 1024), method="numpy"))
        one = label_map(landmarks[7], *size, from_size=(1024, 1024), method="kernel")
        np.testing.assert_array_equal(one, labels[7])


def test_label_map_paints_organs_in_order():
    square = lambda x0, y0, x1, y1, n: np.array(  # noqa: E731 - a square ring with n nodes
        [(x0, y0), (x1, y0), (x1, y1), (x0, y1)] + [(x0, y0 + (y1 - y0) * (i + 1) / (n - 3)) for i in range(n - 4)]
    )
    lm = np.concatenate([square(0, 0, 10, 10, 44), square(8, 0, 18, 10, 50), square(5, 5, 15, 15, 26)])
    for method in RASTER_METHODS:
        labels = label_map(lm, 20, 20, method=method)
        assert labels[7, 7] == 3 and labels[2, 9] == 2 and labels[2, 2] == 1 and labels[19, 19] == 0


@pytest.mark.parametrize("dtype", [bool, np.uint8])
def test_kernel_writes_out_buffers(dtype):
    rng = np.random.default_rng(3)
    polys = [rng.uniform(-5, 45, (int(rng.integers(1, 12)), 2)) for _ in range(4)]
    out = np.full((4, 40, 30), 1, dtype=dtype)
    assert rasterize(polys, 40, 30, out=out, method="kernel") is out
    np.testing.assert_array_equal(out.astype(bool), rasterize(polys, 40, 30, method="numpy"))
    assert set(np.unique(out).tolist()) <= {0, 1}


def test_dispatch_is_pinned():
    # the kernel was faster at every size measured (scripts/bench_raster.py prints both)
    for size in ((1, 1), (16, 16), (256, 256), (1024, 1024), (2048, 2048), (1, 2**16)):
        assert raster_method(*size) == "kernel"
    assert RASTER_METHODS == ("auto", "kernel", "numpy")
    square = np.array([[1.0, 1.0], [5.0, 1.0], [5.0, 5.0]])
    np.testing.assert_array_equal(rasterize(square, 8, 8), rasterize(square, 8, 8, method="kernel"))
    for call in (
        lambda: rasterize(square, 8, 8, method="opencv"),
        lambda: rasterize_organs(np.zeros((120, 2)), 8, 8, method="cuda"),
        lambda: label_map(np.zeros((120, 2)), 8, 8, method=1),
    ):
        with pytest.raises(cxu.InputError, match="method must be one of"):
            call()


_HOSTILE = textwrap.dedent(
    """
    import hashlib, json
    import numpy as np
    from chexmask_u_tools.errors import InputError
    from chexmask_u_tools.masks.raster import MAX_COORDINATE as M, label_map, rasterize, rasterize_organs

    refused = {}
    cases = {
        "nan": lambda: rasterize(np.array([[np.nan, 1.0], [3.0, 4.0], [5.0, 1.0]]), 10, 10, method="kernel"),
        "inf": lambda: rasterize(np.array([[1.0, -np.inf], [3.0, 4.0]]), 10, 10, method="kernel"),
        "huge": lambda: rasterize(np.array([[1.0, 1.0], [3e9, 4.0], [5.0, 1.0]]), 10, 10, method="kernel"),
        "huge unsigned": lambda: rasterize(np.array([[1, 1], [2**63, 4]], dtype=np.uint64), 10, 10, method="kernel"),
        "huge grid": lambda: rasterize(np.zeros((3, 2)), 2**17, 2, method="kernel"),
        "empty grid": lambda: rasterize(np.zeros((3, 2)), 0, 5, method="kernel"),
        "nan organs": lambda: label_map(np.full((120, 2), np.nan), 10, 10, method="kernel"),
    }
    for name, call in cases.items():
        try:
            call()
            refused[name] = "accepted"
        except InputError as exc:
            refused[name] = type(exc).__name__
    differ = []
    rng = np.random.default_rng(0)
    extreme = [
        (np.array([[-M, -M], [M, -M], [M, M], [-M, M]]), 9, 7),
        (np.array([[-M, 3], [M, 4], [3, M], [2, -M]]), 16, 16),
        (np.array([[M, M], [M - 1, M], [M, M - 1]]), 5, 5),
        (np.array([[0, 0], [2**16 - 1, 0], [2**16 - 1, 2], [0, 2]]), 3, 2**16),
        (np.array([[0, 0], [0, 2**16 - 1], [1, 2**16 - 1]]), 2**16, 2),
        (np.array([[3.9, 2.2]]), 1, 1),
        (np.array([[-0.9, -0.9], [0.9, 0.9]]), 1, 1),
        (rng.uniform(-M, M, (5000, 2)), 40, 40),
        (rng.uniform(-3, 12, (3000, 2)), 10, 10),
    ]
    for k in range(300):
        n = int(rng.integers(1, 40))
        scale = float(rng.choice([2.0, 50.0, 1e4, M]))
        h, w = int(rng.integers(1, 70)), int(rng.integers(1, 70))
        extreme.append((np.clip(rng.uniform(-scale, scale, (n, 2)) + [w / 2, h / 2], -M, M), h, w))
    for k, (points, h, w) in enumerate(extreme):
        kernel = rasterize(points, h, w, method="kernel")
        if not np.array_equal(kernel, rasterize(points, h, w, method="numpy")):
            differ.append(k)
    batch = np.stack([np.clip(rng.uniform(-600, 1700, (120, 2)), -M, M) for _ in range(4)])
    for size in ((1024, 1024), (7, 300)):
        a = rasterize_organs(batch, *size, allow_empty=True, method="kernel")
        b = rasterize_organs(batch, *size, allow_empty=True, method="numpy")
        c = label_map(batch, *size, allow_empty=True, method="kernel")
        d = label_map(batch, *size, allow_empty=True, method="numpy")
        if not (np.array_equal(a, b) and np.array_equal(c, d)):
            differ.append(str(size))
    print(json.dumps({"refused": refused, "differ": differ, "cases": len(extreme)}))
    """
)


@pytest.mark.slow
def test_hostile_polygons_are_refused_or_harmless_in_a_subprocess(tmp_path):
    # the kernel compiled with bounds checks (its own cache), in a subprocess: a write outside the
    # output fails this test instead of corrupting the run
    output = run_python(_HOSTILE, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path))
    report = json.loads(output.strip().splitlines()[-1])
    assert report["refused"] == {name: "InputError" for name in report["refused"]}
    assert report["differ"] == [] and report["cases"] > 300
