from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import chexmask_u_tools as cxu
from chexmask_u_tools.io.parsing import parse_numbers_many


def test_flat_integers():
    points = cxu.parse_points("1,2,3,4,-5,6")
    assert points.dtype == np.float64
    np.testing.assert_array_equal(points, [[1, 2], [3, 4], [-5, 6]])


def test_flat_floats_with_trailing_dot_and_spaces():
    np.testing.assert_array_equal(cxu.parse_points(" 363.0, 12.5 ,7., 1e2 "), [[363, 12.5], [7, 100]])


def test_numpy_printed_array():
    text = "[[ 512  300]\n [ 498  310]\n [-3.5 1024.25]]"
    np.testing.assert_array_equal(cxu.parse_points(text), [[512, 300], [498, 310], [-3.5, 1024.25]])


def test_n_nodes_checks_count():
    text = ",".join(["1"] * 240)
    assert cxu.parse_points(text, n_nodes=120).shape == (120, 2)
    with pytest.raises(cxu.PointsParseError, match="238 numbers, expected 240"):
        cxu.parse_points(",".join(["1"] * 238), n_nodes=120)


@pytest.mark.parametrize(
    "text, message",
    [
        ("1,2,abc,4", "non-numeric"),
        ("1,2,3", "odd number"),
        ("1,nan,3,4", "non-finite"),
        ("1,inf,3,4", "non-finite"),
        ("1,1e300,3,4", "non-finite"),
        ("1,3.5e38,3,4", "float32 range"),
        ("", "empty"),
        ("[[]]", "empty"),
        ("__import__('os').system('true')", "non-numeric"),
    ],
)
def test_malformed_strings_raise(text, message):
    with pytest.raises(cxu.PointsParseError, match=message):
        cxu.parse_points(text)


def test_non_string_raises():
    with pytest.raises(cxu.PointsParseError):
        cxu.parse_points(None)  # type: ignore[arg-type]


def test_batch_reports_row_of_first_bad_string():
    with pytest.raises(cxu.PointsParseError) as info:
        parse_numbers_many(["1,2", None, "1,x"], expected_len=2)
    assert info.value.row == 2
    assert "row 2" in str(info.value)


def test_batch_negative_rejected_when_not_allowed():
    with pytest.raises(cxu.PointsParseError, match="negative"):
        parse_numbers_many(["1,2", "1,-2"], allow_negative=False)


finite = st.floats(min_value=-5000, max_value=5000, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 130), st.just(2)), elements=finite))
def test_round_trip_flat(points):
    np.testing.assert_array_equal(cxu.parse_points(cxu.format_points(points)), points)


@settings(max_examples=60, deadline=None)
@given(arrays(np.int64, st.tuples(st.integers(1, 130), st.just(2)), elements=st.integers(-50, 3000)))
def test_round_trip_numpy_printed(points):
    text = np.array2string(points, threshold=10**6)
    np.testing.assert_array_equal(cxu.parse_points(text), points)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 64), st.just(2)), elements=finite))
def test_round_trip_fixed_decimals(points):
    parsed = cxu.parse_points(cxu.format_points(points, decimals=2))
    np.testing.assert_allclose(parsed, np.round(points, 2), atol=1e-9)
