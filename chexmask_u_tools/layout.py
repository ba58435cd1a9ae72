"""The landmark graph of CheXmask(-U): 120 nodes in three closed rings.

Node order (SPEC section 3): right lung 0..43 (44 nodes; the patient's right,
which is the image's left, small x), left lung 44..93 (50 nodes), heart
94..119 (26 nodes).  Each organ is a closed ring: node ``i`` is adjacent to
``i - 1`` and ``i + 1`` within its organ, the last to the first.
"""

from __future__ import annotations

import numpy as np

ORGANS: tuple[str, ...] = ("right_lung", "left_lung", "heart")
"""Organ names, in node order."""

ORGAN_SIZES: dict[str, int] = {"right_lung": 44, "left_lung": 50, "heart": 26}
"""Number of landmark nodes per organ."""

N_NODES: int = 120
"""Total number of landmark nodes."""

N_LATENT: int = 64
"""Dimension of the HybridGNet latent space (number of latent sigmas)."""


def _organ_slices() -> dict[str, slice]:
    slices, start = {}, 0
    for organ in ORGANS:
        slices[organ] = slice(start, start + ORGAN_SIZES[organ])
        start += ORGAN_SIZES[organ]
    return slices


ORGAN_SLICES: dict[str, slice] = _organ_slices()
"""Node index range of each organ: ``landmarks[ORGAN_SLICES["heart"]]``."""

NODE_ORGAN: np.ndarray = np.repeat(np.arange(len(ORGANS)), [ORGAN_SIZES[o] for o in ORGANS])
"""(120,) int: organ index (0 right lung, 1 left lung, 2 heart) of each node."""


def ring_edges(sizes: tuple[int, ...] = tuple(ORGAN_SIZES[o] for o in ORGANS)) -> np.ndarray:
    """Directed-free edge list of consecutive closed rings.

    Parameters
    ----------
    sizes:
        Ring sizes in node order; the default is the 120-node CheXmask graph.
        ``(22, 25, 13)`` gives the 60-node graph the reference model decodes first.

    Returns
    -------
    (E, 2) int64 array with one row ``(i, j)``, ``i`` before ``j`` in ring order,
    per undirected edge, ``E = sum(sizes)``.

    Examples
    --------
    >>> ring_edges((3, 4)).tolist()
    [[0, 1], [1, 2], [2, 0], [3, 4], [4, 5], [5, 6], [6, 3]]
    >>> ring_edges().shape
    (120, 2)
    """
    edges, start = [], 0
    for n in sizes:
        idx = np.arange(start, start + n)
        edges.append(np.stack([idx, np.roll(idx, -1)], axis=1))
        start += n
    return np.concatenate(edges).astype(np.int64)


def ring_adjacency(sizes: tuple[int, ...] = tuple(ORGAN_SIZES[o] for o in ORGANS)) -> np.ndarray:
    """Symmetric 0/1 adjacency matrix (float64, (N, N)) of consecutive closed rings.

    Parameters
    ----------
    sizes:
        Ring sizes in node order, as for :func:`ring_edges`.

    Returns
    -------
    (N, N) float64 array, ``N = sum(sizes)``: 1 where two nodes are ring neighbours.

    Examples
    --------
    >>> ring_adjacency((4,))
    array([[0., 1., 0., 1.],
           [1., 0., 1., 0.],
           [0., 1., 0., 1.],
           [1., 0., 1., 0.]])
    >>> adjacency = ring_adjacency()
    >>> adjacency.shape, adjacency.sum(axis=1).tolist() == [2.0] * 120
    ((120, 120), True)
    """
    n = int(sum(sizes))
    adjacency = np.zeros((n, n))
    edges = ring_edges(sizes)
    adjacency[edges[:, 0], edges[:, 1]] = 1.0
    adjacency[edges[:, 1], edges[:, 0]] = 1.0
    return adjacency


def split_organs(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Split ``(..., 120, k)`` node arrays into a dict of per-organ views.

    Raises
    ------
    InputError
        The array is not shaped ``(..., 120, k)``.

    Examples
    --------
    >>> landmarks = np.zeros((5, 120, 2), dtype=np.float32)  # 5 rows of x, y
    >>> {organ: part.shape for organ, part in split_organs(landmarks).items()}
    {'right_lung': (5, 44, 2), 'left_lung': (5, 50, 2), 'heart': (5, 26, 2)}
    """
    landmarks = np.asarray(landmarks)
    if landmarks.ndim < 2 or landmarks.shape[-2] != N_NODES:
        from chexmask_u_tools.errors import InputError

        raise InputError(f"expected an array of shape (..., {N_NODES}, k), got {landmarks.shape}")
    return {organ: landmarks[..., ORGAN_SLICES[organ], :] for organ in ORGANS}
