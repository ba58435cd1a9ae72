from __future__ import annotations

import numpy as np
import polars as pl
import pytest

torch = pytest.importorskip("torch")

from chexmask_u_tools.errors import InputError  # noqa: E402
from chexmask_u_tools.masks.raster import rasterize, rasterize_organs  # noqa: E402
from chexmask_u_tools.masks.raster_torch import rasterize_organs_torch, rasterize_torch  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_torch_equals_numpy_on_random_polygons(device, backend):
    rng = np.random.default_rng(11)
    for trial in range(40):
        h, w = int(rng.integers(1, 50)), int(rng.integers(1, 50))
        b, n = int(rng.integers(1, 6)), int(rng.integers(1, 9))
        scale = (max(h, w) + 6, 300, 5e4)[trial % 3]
        pts = rng.uniform(-scale / 3, scale, (b, n, 2))
        expected = rasterize(pts, h, w)
        got = rasterize_torch(torch.from_numpy(pts).to(device), h, w, backend=backend)
        assert got.dtype == torch.bool and got.device.type == device
        np.testing.assert_array_equal(got.cpu().numpy(), expected, err_msg=f"trial {trial}")


def test_ragged_list_and_single_polygon():
    rng = np.random.default_rng(5)
    polys = [rng.uniform(-10, 70, (int(rng.integers(1, 12)), 2)) for _ in range(9)]
    expected = rasterize(polys, 50, 60)
    got = rasterize_torch([torch.from_numpy(p) for p in polys], 50, 60, backend="torch")
    np.testing.assert_array_equal(got.numpy(), expected)
    np.testing.assert_array_equal(rasterize_torch(polys, 50, 60).numpy(), expected)
    single = rasterize_torch(torch.from_numpy(polys[0]), 50, 60, backend="torch")
    assert single.shape == (50, 60)
    np.testing.assert_array_equal(single.numpy(), expected[0])


def test_small_chunks_give_the_same_masks(monkeypatch):
    import chexmask_u_tools.masks.raster_torch as rt

    rng = np.random.default_rng(8)
    pts = rng.uniform(-5, 40, (7, 6, 2))
    monkeypatch.setattr(rt, "_CHUNK_CELLS", 2 * 30 * 41)
    got = rasterize_torch(torch.from_numpy(pts), 30, 40, backend="torch")
    np.testing.assert_array_equal(got.numpy(), rasterize(pts, 30, 40))


def test_organs_torch(real_tables):
    rows = real_tables[0][1]
    size = (rows["height"][0], rows["width"][0])
    rows = rows.filter((pl.col("height") == size[0]) & (pl.col("width") == size[1])).head(3)  # one frame size
    lm = np.stack(rows["landmarks"].to_numpy()).astype(np.float64)
    expected = rasterize_organs(lm, 256, 256, from_size=size)
    for backend in ("torch", "numpy"):
        got = rasterize_organs_torch(torch.from_numpy(lm), 256, 256, from_size=size, backend=backend)
        assert got.shape == (len(lm), 3, 256, 256)
        np.testing.assert_array_equal(got.numpy(), expected)
    one = rasterize_organs_torch(lm[0], *size, backend="torch")
    np.testing.assert_array_equal(one.numpy(), rasterize_organs(lm[0], *size))


@pytest.mark.parametrize(
    "call",
    [
        lambda: rasterize_torch(torch.zeros(2, 3, 3), 10, 10),
        lambda: rasterize_torch(torch.tensor([[1.0, float("nan")], [2.0, 2.0]]), 10, 10),
        lambda: rasterize_torch(torch.zeros(2, 3, 2), 0, 10),
        lambda: rasterize_torch(torch.zeros(2, 3, 2, dtype=torch.bool), 10, 10),
        lambda: rasterize_torch(torch.zeros(2, 3, 2), 10, 10, backend="opencv"),
        lambda: rasterize_organs_torch(torch.zeros(2, 100, 2), 10, 10),
    ],
)
def test_bad_input(call):
    with pytest.raises(InputError):
        call()
