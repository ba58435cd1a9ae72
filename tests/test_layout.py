from __future__ import annotations

import numpy as np
import pytest

import chexmask_u_tools as cxu
from chexmask_u_tools.layout import NODE_ORGAN


def test_node_slices_cover_120_nodes_in_order():
    assert cxu.ORGANS == ("right_lung", "left_lung", "heart")
    assert [cxu.ORGAN_SIZES[o] for o in cxu.ORGANS] == [44, 50, 26]
    assert cxu.ORGAN_SLICES["right_lung"] == slice(0, 44)
    assert cxu.ORGAN_SLICES["left_lung"] == slice(44, 94)
    assert cxu.ORGAN_SLICES["heart"] == slice(94, 120)
    assert cxu.N_NODES == 120 and NODE_ORGAN.shape == (120,)
    np.testing.assert_array_equal(np.bincount(NODE_ORGAN), [44, 50, 26])


@pytest.mark.parametrize("sizes", [(44, 50, 26), (22, 25, 13), (3,)])
def test_rings_are_closed_and_degree_two(sizes):
    adjacency = cxu.ring_adjacency(sizes)
    n = sum(sizes)
    assert adjacency.shape == (n, n)
    np.testing.assert_array_equal(adjacency, adjacency.T)
    np.testing.assert_array_equal(adjacency.sum(axis=1), np.full(n, 2.0))
    edges = cxu.ring_edges(sizes)
    assert len(edges) == n
    start = 0
    for size in sizes:
        assert adjacency[start, start + size - 1] == 1  # last node closes the ring
        assert adjacency[start, start + 1] == 1
        start += size
    if len(sizes) > 1:
        assert adjacency[sizes[0] - 1, sizes[0]] == 0  # rings are not joined


def test_split_organs():
    landmarks = np.arange(240, dtype=float).reshape(120, 2)
    parts = cxu.split_organs(landmarks)
    assert {k: v.shape for k, v in parts.items()} == {"right_lung": (44, 2), "left_lung": (50, 2), "heart": (26, 2)}
    assert parts["heart"][0, 0] == 188
    batch = cxu.split_organs(np.zeros((3, 120, 2)))
    assert batch["left_lung"].shape == (3, 50, 2)
    with pytest.raises(cxu.InputError):
        cxu.split_organs(np.zeros((119, 2)))
