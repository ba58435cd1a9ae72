"""DeviceMasks: organ masks drawn on the batch's device equal the CPU masks (issue 21 item 3)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import chexmask_u_tools as cxu  # noqa: E402
from chexmask_u_tools.errors import InputError  # noqa: E402
from chexmask_u_tools.masks.device import DeviceMasks  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BACKENDS = [(device, backend) for device in DEVICES for backend in ("auto", "torch")]


def _batch(rows: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sample landmarks and std in a ``size`` frame, with sub-pixel shifts so truncation is exercised."""
    sample = cxu.load_sample()
    lm = np.stack(sample["landmarks"].to_numpy()[:rows]).astype(np.float64) * size / 1024
    lm += np.random.default_rng(seed).uniform(-0.5, 0.5, lm.shape)
    std = np.stack(sample["landmarks_std"].to_numpy()[:rows]).astype(np.float64) * size / 1024
    return lm, std


@pytest.mark.parametrize(("device", "backend"), BACKENDS)
@pytest.mark.parametrize("size", [(64, 64), (96, 80)])
def test_hard_masks_equal_rasterize_organs(device, backend, size):
    h, w = size
    lm, _ = _batch(5, min(h, w))
    got = DeviceMasks(size, backend=backend)(torch.as_tensor(lm, dtype=torch.float32, device=device))
    assert got.dtype == torch.bool and got.shape == (5, 3, h, w) and got.device.type == device
    expected = np.stack([cxu.rasterize_organs(p.astype(np.float32), h, w) for p in lm])
    np.testing.assert_array_equal(got.cpu().numpy(), expected)
    one = DeviceMasks(size, backend=backend)(torch.as_tensor(lm[0], device=device))  # one (120, 2) set
    np.testing.assert_array_equal(one.cpu().numpy(), cxu.rasterize_organs(lm[0], h, w))


@pytest.mark.parametrize(("device", "backend"), BACKENDS)
def test_soft_masks_within_1e5_and_rows_without_std_hard(device, backend):
    lm, std = _batch(5, 64, seed=1)
    std[2] = np.nan  # the datasets' row without std
    std[4, :, 0] *= 2.5  # per-axis std
    lm_t = torch.as_tensor(lm, dtype=torch.float32, device=device)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=device)
    has_std = torch.tensor([True, False, False, True, True], device=device)  # row 1 has std but is drawn hard
    got = DeviceMasks(64, "soft", backend=backend)(lm_t, std_t, has_std)
    assert got.dtype == torch.float32 and got.shape == (5, 3, 64, 64) and got.device.type == device
    lm32, std32 = lm_t.cpu().double().numpy(), std_t.cpu().double().numpy()
    for row in range(5):
        if has_std[row]:
            expected = cxu.soft_mask_organs(lm32[row], std32[row], 64, 64)
            assert ((expected > 0.01) & (expected < 0.99)).sum() > 100  # a real band is compared
            np.testing.assert_allclose(got[row].cpu().numpy(), expected, rtol=0, atol=1e-5)
        else:
            np.testing.assert_array_equal(got[row].cpu().numpy(), cxu.rasterize_organs(lm32[row], 64, 64).astype(np.float32))
    # without has_std, a NaN row is a row without std
    again = DeviceMasks(64, "soft", backend=backend)(lm_t, std_t)
    np.testing.assert_array_equal(again[2].cpu().numpy(), got[2].cpu().numpy())
    np.testing.assert_allclose(again[1].cpu().numpy(), cxu.soft_mask_organs(lm32[1], std32[1], 64, 64), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("device", "backend"), BACKENDS)
def test_soft_rows_with_zero_std_are_their_hard_masks(device, backend):
    """std 0 is a certain contour: the set's masks (or one organ's) are exactly its hard masks, as on the CPU."""
    lm, std = _batch(3, 64, seed=2)
    std[0] = 0.0
    std[2, 94:] = 0.0  # the heart
    got = DeviceMasks(64, "soft", backend=backend)(torch.as_tensor(lm, device=device), torch.as_tensor(std, device=device))
    hard = np.stack([cxu.rasterize_organs(p, 64, 64) for p in lm]).astype(np.float32)
    np.testing.assert_array_equal(got[0].cpu().numpy(), hard[0])
    np.testing.assert_array_equal(got[2, 2].cpu().numpy(), hard[2, 2])
    for row in (1, 2):
        np.testing.assert_allclose(got[row].cpu().numpy(), cxu.soft_mask_organs(lm[row], std[row], 64, 64), rtol=0, atol=1e-5)


@pytest.mark.parametrize("masks", ["hard", "soft"])
def test_equal_to_the_datasets_own_masks(masks):
    """The dataset's CPU masks and DeviceMasks on the landmarks and std the same batch carries."""
    import polars as pl

    table = cxu.load_sample().head(6)
    no_std = pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("landmarks_std"))
    table = table.with_columns(no_std.alias("landmarks_std"))  # one row without std
    options = {"masks": masks, "pixel_weights": {"floor": 0.2, "power": 2.0}} if masks == "soft" else {"masks": masks}
    dataset = cxu.CheXmaskUDataset(table, None, size=64, missing="masks_only", soft_missing="hard", **options)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=6)))
    assert not bool(batch["has_std"][3]) and bool(batch["has_std"][0])
    if masks == "hard":
        np.testing.assert_array_equal(DeviceMasks(64)(batch).numpy(), batch["masks"].numpy())
        return
    drawn, weight = DeviceMasks(64, "soft", pixel_weights={"floor": 0.2, "power": 2.0})(batch)
    np.testing.assert_allclose(drawn.numpy(), batch["masks"].numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(weight.numpy(), batch["pixel_weight"].numpy(), rtol=0, atol=1e-5)
    assert bool((weight[3] == 1).all())  # no std: not down-weighted anywhere, as in the dataset


def test_pixel_weights_reduce_and_module_behaviour():
    lm, std = _batch(2, 32)
    module = DeviceMasks(32, "soft", pixel_weights={"reduce": "min"})
    assert isinstance(module, torch.nn.Module) and "kind='soft'" in repr(module) and not list(module.parameters())
    soft, weight = module({"landmarks": torch.as_tensor(lm), "std": torch.as_tensor(std)})
    assert weight.shape == (2, 32, 32)
    np.testing.assert_allclose(weight.numpy(), cxu.soft_pixel_weights(soft.numpy(), reduce="min"), rtol=0, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(DeviceMasks((32, 32))(torch.as_tensor(lm)), DeviceMasks(32, backend="torch")(torch.as_tensor(lm)))
    assert cxu.DeviceMasks is DeviceMasks and cxu.masks.DeviceMasks is DeviceMasks


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_an_empty_batch_gives_empty_masks(backend):
    empty = torch.zeros(0, 120, 2)
    assert DeviceMasks(16, backend=backend)(empty).shape == (0, 3, 16, 16)
    assert DeviceMasks(16, "soft", backend=backend)(empty, empty).shape == (0, 3, 16, 16)


def test_off_grid_landmarks_and_allow_empty():
    lm, std = _batch(2, 1024)  # 1024-frame landmarks for a 64 grid, shifted off it
    off = torch.as_tensor(lm + 4000)
    for module in (DeviceMasks(64), DeviceMasks(64, "soft")):
        with pytest.raises(InputError, match="from_size"):
            module(off, torch.as_tensor(std))
    assert not DeviceMasks(64, allow_empty=True)(off).any()
    assert not DeviceMasks(64, "soft", allow_empty=True)(off, torch.as_tensor(std)).any()


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda lm, sd: DeviceMasks(32, "soft")(lm), "needs std"),
        (lambda lm, sd: DeviceMasks(32)(lm[:, :60]), r"\(B, 120, 2\)"),
        (lambda lm, sd: DeviceMasks(32)(lm.bool()), "real numeric"),
        (lambda lm, sd: DeviceMasks(32, "soft")(lm, sd[:1]), "std must have shape"),
        (lambda lm, sd: DeviceMasks(32, "soft")(lm, sd, torch.tensor([1, 0])), "bool tensor"),
        (lambda lm, sd: DeviceMasks(32, "soft")(lm, sd.index_fill(0, torch.tensor([1]), float("nan")), torch.tensor([True, True])), "batch row 1 is marked has_std"),
        (lambda lm, sd: DeviceMasks(32, "soft")(lm, sd.index_put((torch.tensor([1]), torch.tensor([5])), torch.tensor(float("nan"), dtype=sd.dtype))), "batch row 1 mixes NaN"),
        (lambda lm, sd: DeviceMasks(32, "soft")(lm, -sd), "negative"),
        (lambda lm, sd: DeviceMasks(32)({"std": sd}), "needs 'landmarks'"),
        (lambda lm, sd: DeviceMasks(32, "round"), "kind must be"),
        (lambda lm, sd: DeviceMasks(0), "size"),
        (lambda lm, sd: DeviceMasks(32, backend="cuda"), "backend must be"),
        (lambda lm, sd: DeviceMasks(32, pixel_weights=True), "kind='soft'"),
        (lambda lm, sd: DeviceMasks(32, "soft", pixel_weights={"flor": 0.1}), "unknown pixel_weights option"),
        (lambda lm, sd: DeviceMasks(32, "soft", pixel_weights={"floor": 2.0}), "floor"),
    ],
)
def test_errors_name_the_argument(call, says):
    lm, std = _batch(2, 32)
    with pytest.raises(InputError, match=says):
        call(torch.as_tensor(lm), torch.as_tensor(std))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_numpy_backend_refuses_cuda_tensors():
    lm, _ = _batch(1, 32)
    with pytest.raises(InputError, match="needs CPU tensors"):
        DeviceMasks(32, backend="numpy")(torch.as_tensor(lm, device="cuda"))


def test_soft_masks_in_small_chunks_are_the_same(monkeypatch):
    """The torch soft masks draw all organs of a batch at once, in bounded chunks: tiny ones give the same masks."""
    from chexmask_u_tools.masks import soft_torch

    lm, std = _batch(3, 96, seed=4)
    whole = DeviceMasks(96, "soft", backend="torch")(torch.as_tensor(lm), torch.as_tensor(std))
    monkeypatch.setattr(soft_torch, "_PAIR_BUDGET", 1)  # one organ per chunk
    monkeypatch.setattr(soft_torch, "_PASS_CELLS", 64 * 40)  # a few blocks per pass
    assert torch.equal(DeviceMasks(96, "soft", backend="torch")(torch.as_tensor(lm), torch.as_tensor(std)), whole)
