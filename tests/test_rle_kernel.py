"""The compiled RLE kernels against the numpy reference: bit for bit, the same errors, the dispatch, hostile input."""

from __future__ import annotations

import contextlib
import json
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import chexmask_u_tools as cxu
from chexmask_u_tools.io.rle import RLE_METHODS, rle_method
from chexmask_u_tools.schema import nearest_indices
from conftest import run_python

METHODS = ("kernel", "numpy")


def decode_both(*args, **keywords):
    """``rle_decode`` by each method: (kernel result, numpy result), or the two errors' (type, message)."""
    results = []
    for method in METHODS:
        try:
            results.append(cxu.rle_decode(*args, method=method, **keywords))
        except cxu.CheXmaskUError as error:
            results.append((type(error).__name__, str(error)))
    return results


def assert_same(kernel, numpy):
    if isinstance(numpy, tuple):
        assert kernel == numpy
    else:
        assert kernel.dtype == numpy.dtype and kernel.shape == numpy.shape
        np.testing.assert_array_equal(kernel, numpy)


masks = st.builds(
    lambda values, dtype: values.astype(dtype),
    st.tuples(st.integers(1, 40), st.integers(1, 40)).flatmap(
        lambda shape: arrays(np.uint8, shape, elements=st.sampled_from([0, 0, 1, 1, 2, 255]))
    ),
    st.sampled_from([np.bool_, np.uint8, np.int16, np.float32]),
)


@settings(max_examples=150, deadline=None)
@given(masks, st.tuples(st.integers(1, 50), st.integers(1, 50)))
def test_kernels_equal_numpy_on_generated_masks(mask, target):
    rle = cxu.rle_encode(mask, method="kernel")
    assert rle == cxu.rle_encode(mask, method="numpy")
    height, width = mask.shape
    assert_same(*decode_both(rle, height, width))
    np.testing.assert_array_equal(cxu.rle_decode(rle, height, width), mask != 0)
    assert_same(*decode_both(rle, height, width, shape=target))
    # tokens separated by any of the whitespace the reference reads
    spaced = "\t" + rle.replace(" ", " \r\n  ") + "\n"
    assert_same(*decode_both(spaced, height, width))


def test_kernels_equal_numpy_on_the_released_masks():
    sample = cxu.load_sample()
    checked = 0
    for column in ("rle_right_lung", "rle_left_lung", "rle_heart"):
        for rle, height, width in zip(sample[column], sample["height"], sample["width"]):
            height, width = cxu.mask_shape("preprocessed", height, width)
            kernel = cxu.rle_decode(rle, height, width, method="kernel")
            np.testing.assert_array_equal(kernel, cxu.rle_decode(rle, height, width, method="numpy"))
            for target in ((512, 512), (300, 700), (2048, 96)):
                assert_same(*decode_both(rle, height, width, shape=target))
            encoded = cxu.rle_encode(kernel, method="kernel")
            assert encoded == cxu.rle_encode(kernel, method="numpy") == " ".join(rle.split())
            checked += 1
    assert checked == 3 * len(sample) == 600


def test_batch_forms_equal_numpy():
    sample = cxu.load_sample()
    rles = sample["rle_heart"].to_list()[:5] + [None, "", sample["rle_left_lung"][0]]
    for method in METHODS:
        batch = cxu.rle_decode_many(rles, 1024, 1024, method=method)
        assert batch.shape == (8, 1024, 1024) and batch.dtype == bool
        for k, rle in enumerate(rles):
            np.testing.assert_array_equal(batch[k], cxu.rle_decode(rle, 1024, 1024, method="numpy"))
        assert cxu.rle_encode_many(batch, method=method) == [" ".join((r or "").split()) for r in rles]
        ragged = cxu.rle_decode_many(["1 3", "2 2 5 1"], [2, 3], [2, 2], method=method)
        assert [m.tolist() for m in ragged] == [[[1, 1], [1, 0]], [[0, 1], [1, 0], [1, 0]]]


@pytest.mark.parametrize("method", METHODS)
def test_out_buffers_of_every_kind(method):
    torch = pytest.importorskip("torch")
    rle = cxu.load_sample()["rle_left_lung"][3]
    fresh = cxu.rle_decode(rle, 1024, 1024, method="numpy")
    for out in (
        np.full((1024, 1024), 7, dtype=np.uint8),
        np.ones((1024, 1024), dtype=bool),
        np.ones((1024, 2048), dtype=bool)[:, ::2],  # not contiguous: written through a copy
        torch.full((1024, 1024), 3, dtype=torch.uint8),
        torch.ones((2048, 1024), dtype=torch.bool)[::2],
    ):
        assert cxu.rle_decode(rle, 1024, 1024, out=out, method=method) is out
        np.testing.assert_array_equal(np.asarray(out).astype(bool), fresh)
        assert set(np.unique(np.asarray(out)).tolist()) <= {0, 1}
    batch = np.full((2, 1024, 1024), 9, dtype=np.uint8)
    assert cxu.rle_decode_many([None, rle], 1024, 1024, out=batch, method=method) is batch
    assert not batch[0].any()
    np.testing.assert_array_equal(batch[1], fresh)
    small = np.full((512, 512), 1, dtype=bool)
    cxu.rle_decode(rle, 1024, 1024, shape=(512, 512), out=small, method=method)
    np.testing.assert_array_equal(small, fresh[::2, ::2])


@pytest.mark.parametrize(
    "rle",
    ["1 2 x", "1 2.5", "1 2 3", "0 5", "1 -2", "3 0", "5 3 6 1", "8 2 1 1", "11 3", "+3 2", "1 +2", "0001 2",
     "1 99999999999999999999", "1\x0b2", "1 ２", "１ 2", 17, b"1 2"],
)
def test_bad_strings_raise_the_references_errors_and_leave_out_untouched(rle):
    kernel, numpy = decode_both(rle, 3, 4)
    assert_same(kernel, numpy)
    assert_same(*decode_both(rle, 3, 4, shape=(2, 5)))
    out = np.full((3, 4), 5, dtype=np.uint8)
    try:
        cxu.rle_decode(rle, 3, 4, out=out, method="kernel")
    except cxu.RLEError:
        assert (out == 5).all()  # the string is refused before anything is written
    with pytest.raises(cxu.RLEError) if isinstance(numpy, tuple) else contextlib.nullcontext():
        cxu.rle_decode_many(["1 1", rle], 3, 4, method="kernel")


def test_errors_name_the_row_in_batches():
    for method in METHODS:
        with pytest.raises(cxu.RLEError, match="overlap") as info:
            cxu.rle_decode_many(["1 1", None, "5 3 6 1"], 3, 4, method=method)
        assert info.value.row == 2


def test_dispatch_is_pinned():
    # the kernels were faster at every size measured (scripts/bench_io.py prints both)
    for size in ((1, 1), (8, 8), (256, 256), (1024, 1024), (2048, 2048), (1, 2**20)):
        assert rle_method(*size) == "kernel"
    assert RLE_METHODS == ("auto", "kernel", "numpy")
    with pytest.raises(cxu.InputError, match="method must be one of"):
        cxu.rle_decode("1 2", 2, 2, method="gpu")
    with pytest.raises(cxu.InputError, match="method must be one of"):
        cxu.rle_encode(np.ones((2, 2)), method="fast")
    with pytest.raises(cxu.InputError, match="method must be one of"):
        cxu.rle_decode_many([], 2, 2, method=None)


def test_dispatch_without_jit_uses_numpy():
    code = (
        "import numpy as np, chexmask_u_tools as cxu\n"
        "from chexmask_u_tools.io.rle import rle_method\n"
        "from chexmask_u_tools.masks.raster import raster_method\n"
        "assert cxu.rle_decode('2 2', 2, 2).tolist() == [[False, True], [True, False]]\n"
        "assert cxu.rle_encode(np.eye(2)) == '1 1 4 1'\n"
        "assert cxu.rasterize([[0, 0], [2, 0], [0, 2]], 3, 3).sum() == 6\n"
        "print(rle_method(4, 4), raster_method(4, 4))"
    )
    assert run_python(code, NUMBA_DISABLE_JIT="1").strip() == "numpy numpy"


_HOSTILE = textwrap.dedent(
    """
    import json
    import numpy as np
    from hypothesis import HealthCheck, given, settings, strategies as st
    import chexmask_u_tools as cxu

    def outcome(call):
        try:
            return np.asarray(call()).astype(bool).tobytes()
        except cxu.CheXmaskUError as error:
            return type(error).__name__ + ": " + str(error)

    number = st.one_of(st.integers(-3, 40), st.sampled_from([0, 2**28, 2**31, 2**62, 2**63 - 1, 2**63, 10**30]),
                       st.integers(-(2**70), 2**70))
    token = st.one_of(number.map(str), st.sampled_from(["", "a", "1.5", "+3", "-0", "0x1", "1e3", "\\x00", "٣"]))
    separator = st.sampled_from([" ", " ", "  ", "\\t", "\\n", "\\r\\n", "\\x0b", "\\x0c", ",", ""])
    strings = st.lists(st.tuples(token, separator), max_size=10).map(lambda pairs: "".join(t + s for t, s in pairs))
    differ = []
    count = [0]

    @settings(max_examples=800, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(strings, st.integers(1, 7), st.integers(1, 7), st.integers(1, 9), st.integers(1, 9))
    def same(rle, height, width, h2, w2):
        count[0] += 1
        buffer = np.full((height, width), 3, dtype=np.uint8)
        for call in (
            lambda m: cxu.rle_decode(rle, height, width, method=m),
            lambda m: cxu.rle_decode(rle, height, width, shape=(h2, w2), method=m),
            lambda m: cxu.rle_decode(rle, height, width, out=buffer, method=m),
            lambda m: cxu.rle_decode_many([rle, "1 1"], height, width, method=m),
            lambda m: cxu.rle_decode_many([rle, "1 1"], [height, 1], [width, 1], method=m)[0],
        ):
            kernel, numpy = outcome(lambda: call("kernel")), outcome(lambda: call("numpy"))
            if kernel != numpy:
                differ.append(repr((rle, height, width, kernel[:80], numpy[:80])))

    same()
    # the known crashers of the integrity work, and the extremes of the size and run ranges
    for rle in ["1761 9223372036854775804 7 7", "2 9223372036854775807", "9223372036854775807 2",
                "1 99999999999999999999", "-9223372036854775808 5", "1 4611686018427387904 3 1",
                "1 268435456", "268435456 1", "1 268435457", "268435457 1"]:
        for height, width in ((16384, 16384), (1, 7), (2**20, 7)):
            for shape in ((3, 5),) if height > 7 else (None, (3, 5)):  # no 256 MB masks
                kernel = outcome(lambda: cxu.rle_decode(rle, height, width, shape=shape, method="kernel"))
                numpy = outcome(lambda: cxu.rle_decode(rle, height, width, shape=shape, method="numpy"))
                if kernel != numpy:
                    differ.append(repr((rle, height, width, shape)))
    # encoding: every dtype and byte pattern, odd sizes (the eight-byte scan's tails)
    rng = np.random.default_rng(0)
    for _ in range(300):
        shape = tuple(int(v) for v in rng.integers(1, 40, 2))
        mask = (rng.uniform(size=shape) < rng.uniform()) * rng.integers(1, 256, shape)
        for dtype in (np.uint8, np.int8, bool, np.float64):
            m = mask.astype(dtype)
            if cxu.rle_encode(m, method="kernel") != cxu.rle_encode(m, method="numpy"):
                differ.append(repr(("encode", m.tolist())))
    print(json.dumps({"cases": count[0], "differ": differ[:10]}))
    """
)


@pytest.mark.slow
def test_hostile_strings_are_refused_or_harmless_in_a_subprocess(tmp_path):
    # numba does not check bounds by default: the kernels run here compiled with bounds checks (their own
    # cache), in a subprocess, so that a write outside a buffer fails this test instead of corrupting the run
    output = run_python(_HOSTILE, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path))
    report = json.loads(output.strip().splitlines()[-1])
    assert report["cases"] >= 700
    assert report["differ"] == []


def test_decode_to_shape_samples_the_full_mask():
    rng = np.random.default_rng(5)
    for _ in range(20):
        height, width = (int(v) for v in rng.integers(1, 60, 2))
        mask = rng.uniform(size=(height, width)) < 0.4
        rle = cxu.rle_encode(mask)
        for target in ((1, 1), (height, width), (2 * height + 1, 3), (max(1, height // 3), 2 * width)):
            rows, cols = nearest_indices(height, target[0]), nearest_indices(width, target[1])
            got = cxu.rle_decode(rle, height, width, shape=target, method="kernel")
            np.testing.assert_array_equal(got, mask[np.ix_(rows, cols)])
