"""Statistics of the paper's experiments, in NumPy: ranks, ROC analysis with ties, correlations.

* :func:`roc_auc` / :func:`roc_curve` - ROC analysis with ties, no scikit-learn.
* :func:`pearson` / :func:`spearman` / :func:`node_error_vs_sigma` - correlation between each
  node's error against ground-truth landmarks and its sigma.

Conventions: a score ranks rows from least to most suspicious (higher = more
likely out of distribution); the positive class of a label is ``True``.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.layout import N_NODES

__all__ = [
    "Correlation",
    "node_error_vs_sigma",
    "pearson",
    "rankdata",
    "roc_auc",
    "roc_curve",
    "spearman",
]

if TYPE_CHECKING:  # torch is an optional extra
    pass



# ----------------------------------------------------------------------------
# ranks, ROC


def rankdata(values: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, ties sharing their average rank (float64).

    Examples
    --------
    >>> rankdata(np.array([3.0, 1.0, 3.0, 7.0])).tolist()
    [2.5, 1.0, 2.5, 4.0]
    """
    values = np.asarray(values)
    if values.ndim != 1:
        raise InputError(f"rankdata expects a 1-D array, got shape {values.shape}")
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start of each run of equal values; every member of a run gets the run's mean position.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def _binary_problem(labels: object, scores: object) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores)
    if y.ndim != 1 or s.ndim != 1 or len(y) != len(s):
        raise InputError(f"labels and scores must be 1-D of equal length, got shapes {y.shape} and {s.shape}")
    if len(y) == 0:
        raise InputError("no samples: labels and scores are empty")
    if y.dtype != bool:
        if not (np.issubdtype(y.dtype, np.number) and np.isin(y, (0, 1)).all()):
            raise InputError("labels must be boolean or 0/1")
        y = y.astype(bool)
    if not np.issubdtype(s.dtype, np.number) or np.issubdtype(s.dtype, np.complexfloating):
        raise InputError(f"scores must be real numbers, got dtype {s.dtype}")
    s = s.astype(np.float64)
    bad = ~np.isfinite(s)
    if bad.any():
        raise InputError(f"{int(bad.sum())} of {len(s)} scores are NaN or infinite; drop those samples first")
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        kind = "positive" if positives else "negative"
        raise InputError(f"all {len(y)} samples are {kind}: ROC-AUC needs both classes")
    return y, s


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random positive outscores a random negative.

    Computed as the Mann-Whitney U statistic with average ranks, so a tie between a
    positive and a negative counts one half:
    ``AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``.

    Parameters
    ----------
    labels:
        (N,) bool or 0/1; True = positive (e.g. out of distribution).
    scores:
        (N,) finite real numbers; higher = more positive.

    Raises
    ------
    InputError
        Empty input, mismatched shapes, NaN/infinite scores, or a single class.

    Warns
    -----
    UserWarning
        All scores are equal (the AUC is then 0.5: the score carries no information).

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> cxu.roc_auc([False, False, True, True], [0.1, 0.4, 0.35, 0.8])  # 3 of 4 pairs ranked right
    0.75
    >>> cxu.roc_auc([0, 1, 0, 1], [2.0, 2.0, 1.0, 3.0])  # a tied pair counts one half
    0.875
    """
    y, s = _binary_problem(labels, scores)
    if s.min() == s.max():
        warnings.warn("all scores are equal: ROC-AUC is 0.5 (the score does not separate the classes)", stacklevel=2)
        return 0.5
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    rank_sum = rankdata(s)[y].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates (float64, from (0, 0) to (1, 1)) at every distinct score threshold.

    Tied scores form one step (a diagonal segment when it mixes classes), so the
    trapezoidal area under ``(fpr, tpr)`` equals :func:`roc_auc`.

    Examples
    --------
    >>> fpr, tpr = roc_curve([False, False, True, True], [0.1, 0.4, 0.35, 0.8])
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    y, s = _binary_problem(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_value = np.r_[s[1:] != s[:-1], True]
    tps = np.cumsum(y)[last_of_value]
    fps = np.cumsum(~y)[last_of_value]
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


# ----------------------------------------------------------------------------
# correlations


class Correlation(NamedTuple):
    """Correlation between two paired samples.

    Examples
    --------
    >>> result = Correlation(pearson=0.5, spearman=0.4, n=10)
    >>> result.spearman, result.n
    (0.4, 10)
    """

    pearson: float
    """Pearson's r."""
    spearman: float
    """Spearman's rho (Pearson's r of the average ranks)."""
    n: int
    """Number of pairs used (finite in both)."""


def _paired(x: object, y: object) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise InputError(f"x and y must have the same number of values, got {a.size} and {b.size}")
    if a.size < 2:
        raise InputError(f"a correlation needs at least 2 pairs, got {a.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InputError("x and y must be finite; drop NaN pairs first")
    return a, b


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two equal-length samples; NaN (with a warning) if one is constant.

    Examples
    --------
    >>> round(pearson([1, 2, 3, 4], [2, 4, 6, 9]), 4)
    0.9944
    """
    a, b = _paired(x, y)
    a = a - a.mean()
    b = b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    if denominator == 0:
        warnings.warn("a sample is constant: the correlation is undefined (NaN)", stacklevel=2)
        return float("nan")
    return float(np.clip((a * b).sum() / denominator, -1.0, 1.0))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (ties by average rank); NaN (with a warning) if one is constant.

    Examples
    --------
    >>> spearman([1, 2, 3, 4], [1, 4, 9, 100])  # any increasing relation gives 1
    1.0
    """
    a, b = _paired(x, y)
    return pearson(rankdata(a), rankdata(b))


def node_error_vs_sigma(
    pred_landmarks: np.ndarray, pred_std: np.ndarray, gt_landmarks: np.ndarray
) -> Correlation:
    """Correlate each node's error with its predicted sigma, pooled over all nodes and images.

    Parameters
    ----------
    pred_landmarks, gt_landmarks:
        (..., 120, 2) x, y in pixels of the same frame (e.g. predictions and
        physician landmarks in the 1024 frame).
    pred_std:
        (..., 120, 2) per-node std of x and y in the same pixels.

    Returns
    -------
    :class:`Correlation` of the node error ``||pred - gt||`` (Euclidean, px) with
    the node sigma ``(std_x + std_y) / 2`` (px).  Nodes with a NaN anywhere are
    left out (with a warning).

    Raises
    ------
    InputError
        Shapes differ or are not (..., 120, 2); fewer than 2 usable nodes.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> truth = np.zeros((120, 2))
    >>> sigma = np.linspace(1.0, 12.0, 120)  # px
    >>> std = np.stack([sigma, sigma], axis=1)
    >>> pred = truth.copy()
    >>> pred[:, 0] = sigma * (1.0 + 0.5 * np.sin(np.arange(120)))  # errors that grow with sigma, noisily
    >>> result = cxu.node_error_vs_sigma(pred, std, truth)
    >>> round(result.pearson, 3), round(result.spearman, 3), result.n
    (0.772, 0.807, 120)
    """
    pred = np.asarray(pred_landmarks, dtype=np.float64)
    std = np.asarray(pred_std, dtype=np.float64)
    truth = np.asarray(gt_landmarks, dtype=np.float64)
    if not (pred.shape == std.shape == truth.shape) or pred.ndim < 2 or pred.shape[-2:] != (N_NODES, 2):
        raise InputError(
            f"pred_landmarks, pred_std and gt_landmarks must share a (..., {N_NODES}, 2) shape, "
            f"got {pred.shape}, {std.shape}, {truth.shape}"
        )
    error = np.linalg.norm(pred - truth, axis=-1).ravel()
    sigma = std.mean(axis=-1).ravel()
    keep = np.isfinite(error) & np.isfinite(sigma)
    if not keep.all():
        warnings.warn(f"left out {int((~keep).sum())} of {keep.size} nodes with NaN values", stacklevel=2)
    error, sigma = error[keep], sigma[keep]
    return Correlation(pearson(error, sigma), spearman(error, sigma), int(error.size))


# ----------------------------------------------------------------------------
# out-of-distribution scoring
