"""The paper's uncertainty experiments as functions (SPEC section 5), in NumPy and polars.

* :func:`roc_auc` / :func:`roc_curve` - ROC analysis with ties, no scikit-learn.
* :func:`ood_scores` - how well image-level uncertainties flag out-of-distribution
  rows (default label: ``Dice RCA (Max) < 0.7``, as in the paper).
* :func:`node_error_vs_sigma` - Pearson and Spearman correlation between each
  node's error against ground-truth landmarks and its sigma.
* :func:`uncertainty_vs_corruption` - both uncertainty measures of a model on
  images corrupted at increasing severities (needs torch).

Conventions: a score ranks rows from least to most suspicious (higher = more
likely out of distribution); the positive class of a label is ``True``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import polars as pl

from .errors import InputError
from .layout import N_NODES
from .schema import PREPROCESSED_SIZE
from .uncertainty import latent_sigma_mean, node_sigma_max, node_sigma_mean

if TYPE_CHECKING:  # torch is an optional extra
    from .model import HybridGNet

__all__ = [
    "Correlation",
    "DEFAULT_OOD_SCORES",
    "node_error_vs_sigma",
    "ood_scores",
    "pearson",
    "rankdata",
    "roc_auc",
    "roc_curve",
    "spearman",
    "synthetic_xray",
    "uncertainty_vs_corruption",
]


# ----------------------------------------------------------------------------
# ranks, ROC


def rankdata(values: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, ties sharing their average rank (float64)."""
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
    """Correlation between two paired samples."""

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
    """Pearson correlation of two equal-length samples; NaN (with a warning) if one is constant."""
    a, b = _paired(x, y)
    a = a - a.mean()
    b = b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    if denominator == 0:
        warnings.warn("a sample is constant: the correlation is undefined (NaN)", stacklevel=2)
        return float("nan")
    return float(np.clip((a * b).sum() / denominator, -1.0, 1.0))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (ties by average rank); NaN (with a warning) if one is constant."""
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


DEFAULT_OOD_SCORES: dict[str, pl.Expr] = {
    "node_sigma_mean": node_sigma_mean(),
    "node_sigma_max": node_sigma_max(),
    "latent_sigma_mean": latent_sigma_mean(),
}
"""Score name -> expression: the paper's three image-level uncertainties, recomputed from the arrays."""


def _as_expr(value: str | pl.Expr) -> pl.Expr:
    return pl.col(value) if isinstance(value, str) else value


def ood_scores(
    table: pl.DataFrame,
    label: str | pl.Expr | None = None,
    scores: Mapping[str, str | pl.Expr] | Sequence[str] | None = None,
    *,
    dice_column: str = "dice_rca_max",
    threshold: float = 0.7,
) -> pl.DataFrame:
    """ROC-AUC of uncertainty scores as detectors of out-of-distribution (OOD) rows.

    Parameters
    ----------
    table:
        Canonical table (or any frame with the columns the expressions use).
    label:
        Boolean column name or expression, True = OOD.  Default:
        ``dice_column < threshold`` (the paper: ``Dice RCA (Max) < 0.7``).
    scores:
        Name -> column or expression, or a list of column names; higher = more
        OOD.  Default :data:`DEFAULT_OOD_SCORES` (mean node sigma, max node sigma,
        mean latent sigma).

    Returns
    -------
    One row per score: ``score`` (str), ``auc`` (Float64; null when the score has
    no finite value, with a warning), ``n`` (rows used), ``n_ood`` (positives among
    them), ``n_dropped`` (rows with a null label or a null/NaN score).

    Raises
    ------
    InputError
        Empty table, a missing column, or a label with a single class among the
        rows that have a score.
    """
    if table.height == 0:
        raise InputError("the table is empty: nothing to score")
    if label is None:
        if dice_column not in table.columns:
            raise InputError(f"the table has no {dice_column!r} column for the default OOD label; pass label=")
        label_expr = pl.col(dice_column) < threshold
    else:
        label_expr = _as_expr(label)
    if scores is None:
        score_exprs = dict(DEFAULT_OOD_SCORES)
    elif isinstance(scores, Mapping):
        score_exprs = {name: _as_expr(value) for name, value in scores.items()}
    else:
        score_exprs = {name: pl.col(name) for name in scores}
    if not score_exprs:
        raise InputError("no scores given")
    try:
        values = table.select(
            label_expr.cast(pl.Boolean).alias("__label"),
            *(expr.cast(pl.Float64).alias(name) for name, expr in score_exprs.items()),
        )
    except pl.exceptions.ColumnNotFoundError as error:
        raise InputError(f"the table lacks a column needed for OOD scoring: {error}") from None
    except pl.exceptions.PolarsError as error:
        raise InputError(f"cannot evaluate the OOD label or scores: {error}") from None
    rows = []
    for name in score_exprs:
        usable = values.filter(pl.col("__label").is_not_null() & pl.col(name).is_not_null() & pl.col(name).is_finite())
        dropped = values.height - usable.height
        y = usable["__label"].to_numpy()
        if usable.height == 0:
            warnings.warn(f"score {name!r} has no finite value: its AUC is left null", stacklevel=2)
            rows.append({"score": name, "auc": None, "n": 0, "n_ood": 0, "n_dropped": dropped})
            continue
        if y.all() or not y.any():
            raise InputError(
                f"score {name!r}: all {usable.height} usable rows are {'OOD' if y.all() else 'in distribution'}; "
                "the AUC needs both classes"
            )
        auc = roc_auc(y, usable[name].to_numpy())
        rows.append({"score": name, "auc": auc, "n": usable.height, "n_ood": int(y.sum()), "n_dropped": dropped})
    return pl.DataFrame(
        rows, schema={"score": pl.String, "auc": pl.Float64, "n": pl.Int64, "n_ood": pl.Int64, "n_dropped": pl.Int64}
    )


# ----------------------------------------------------------------------------
# synthetic images and uncertainty versus corruption (needs torch)


def synthetic_xray(
    landmarks: np.ndarray, height: int = 1024, width: int = 1024, seed: int | np.random.Generator | None = 0
) -> np.ndarray:
    """A chest-X-ray-like (H, W) uint8 picture drawn from (120, 2) landmarks, for offline demos.

    Dark lungs and a bright heart inside a bright elliptical body on a dark
    background, blurred (sigma 1% of the width) with mild noise (std 4).  Not a
    radiograph: it only gives models and plots something shaped like one.
    Landmarks are pixels of the (height, width) frame.
    """
    from .corruptions import gaussian_blur
    from .raster import label_map

    labels = label_map(np.asarray(landmarks, dtype=np.float64), height, width)
    rows, cols = np.mgrid[0:height, 0:width]
    body = ((cols - width / 2) / (0.47 * width)) ** 2 + ((rows - 0.55 * height) / (0.6 * height)) ** 2 <= 1.0
    picture = np.where(body, 165.0, 25.0)
    # Lungs get darker towards their centre line, like the air-filled fields of a real film.
    lung_shade = 75.0 + 25.0 * np.abs(rows / height - 0.5)
    picture = np.where((labels == 1) | (labels == 2), lung_shade, picture)
    picture = np.where(labels == 3, 190.0, picture)
    picture = gaussian_blur(picture, 0.01 * width)
    picture += np.random.default_rng(seed).normal(0.0, 4.0, size=picture.shape)
    return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------
# uncertainty versus corruption (needs torch)


def uncertainty_vs_corruption(
    model: "HybridGNet",
    images: Sequence[np.ndarray],
    severities: Sequence[float],
    kind: str = "noise",
    *,
    n_samples: int = 50,
    seed: int = 0,
    occluded_nodes: int | str | Sequence[int] | None = 10,
    landmarks: Sequence[np.ndarray] | None = None,
    image_ids: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Both uncertainty measures of ``model`` on each image at each corruption severity.

    Each image is zero-padded to a centred square and resized to the model's input
    (8-bit, as :func:`chexmask_u_tools.model.predict.to_model_input` does), then
    corrupted there, so with the published model (input 1024) severities are in
    pixels / grey levels of the 1024 frame, as in the paper.  For occlusion the
    squares are centred on ``occluded_nodes`` nodes (default: 10 drawn at random
    per image) of the given ``landmarks``, or of the model's mean landmarks on
    the clean image when none are given.
    The latent draws, noise pattern and occluded nodes of an image are the same
    at every severity (common random numbers), so differences come from the
    severity only.

    Parameters
    ----------
    model:
        A :class:`~chexmask_u_tools.model.HybridGNet` (published or random weights).
    images:
        (H, W) uint8 arrays, or paths read with :func:`chexmask_u_tools.images.read_image`.
    severities:
        Noise std (0..255 scale), square side (px) or blur sigma (px), per ``kind``.
    kind:
        ``"noise"``, ``"occlusion"`` or ``"blur"``.
    n_samples, seed:
        Latent samples per image and seed of draws and corruptions.
    landmarks:
        Optional (120, 2) landmarks per image, x, y in pixels of that image
        (e.g. ground truth), used to place the occlusion squares.
    image_ids:
        Names for the images (default ``"0"``, ``"1"``, ...).

    Returns
    -------
    polars table, one row per image and severity: ``image_id``, ``kind``,
    ``severity`` (Float64), ``node_sigma_mean`` (px of the 1024 frame) and
    ``latent_sigma_mean`` (Float64).
    """
    import torch

    from .corruptions import CORRUPTIONS, corrupt
    from .images import pad_to_square, read_image
    from .model.predict import draw_eps, predict_batch, to_model_input

    if kind not in CORRUPTIONS:
        raise InputError(f"unknown corruption {kind!r}; expected one of {CORRUPTIONS}")
    if len(images) == 0:
        raise InputError("no images given")
    if len(severities) == 0:
        raise InputError("no severities given")
    if n_samples < 2:
        raise InputError(f"n_samples must be at least 2 to measure a spread, got {n_samples}")
    ids = [str(i) for i in range(len(images))] if image_ids is None else [str(i) for i in image_ids]
    if len(ids) != len(images):
        raise InputError(f"{len(ids)} image ids for {len(images)} images")
    if landmarks is not None and len(landmarks) != len(images):
        raise InputError(f"{len(landmarks)} landmark arrays for {len(images)} images")
    device = next(model.parameters()).device
    size = int(model.input_size)
    model = model.eval()
    rows: list[dict[str, Any]] = []
    for index, (image_id, image) in enumerate(zip(ids, images)):
        pixels = read_image(image) if not isinstance(image, np.ndarray) else image
        if pixels.ndim != 2 or pixels.dtype != np.uint8:
            raise InputError(f"image {image_id!r} must be a 2-D uint8 array, got {pixels.dtype} {pixels.shape}")
        square, (top, left) = pad_to_square(pixels)
        clean = (to_model_input([square], size, "cpu")[0, 0] * 255.0).round().to(torch.uint8).numpy()
        eps = draw_eps(seed, [image_id], n_samples, model.latents)
        centres = None
        if kind == "occlusion" and landmarks is not None:
            given = np.asarray(landmarks[index], dtype=np.float64)
            if given.shape != (N_NODES, 2):
                raise InputError(f"landmarks of image {image_id!r} must have shape ({N_NODES}, 2), got {given.shape}")
            centres = (given + [left, top]) * (size / square.shape[0])
        elif kind == "occlusion":
            stats = predict_batch(model, to_model_input([clean], size, device), eps)
            centres = stats["mean"][0].numpy() * (size / PREPROCESSED_SIZE)
        # The same stream at every severity: the same occluded nodes and noise pattern, only scaled.
        corrupted = [
            corrupt(clean, kind, float(v), landmarks=centres, nodes=occluded_nodes, seed=np.random.default_rng([seed, index]))
            for v in severities
        ]
        if kind == "occlusion" and any(v > 0 and np.array_equal(c, clean) for v, c in zip(severities, corrupted)):
            warnings.warn(f"image {image_id!r}: no occlusion square falls on the image (landmarks off the image?)", stacklevel=2)
        # One forward pass per image: every severity shares the image's latent draws.
        stats = predict_batch(model, to_model_input(corrupted, size, device), eps.expand(len(corrupted), -1, -1))
        node_sigma = stats["std"].numpy().mean(axis=-1).mean(axis=-1)
        latent_sigma = stats["latent_sigma"].numpy().mean(axis=-1)
        for j, severity in enumerate(severities):
            rows.append(
                {
                    "image_id": image_id,
                    "kind": kind,
                    "severity": float(severity),
                    "node_sigma_mean": float(node_sigma[j]),
                    "latent_sigma_mean": float(latent_sigma[j]),
                }
            )
    return pl.DataFrame(
        rows,
        schema={
            "image_id": pl.String,
            "kind": pl.String,
            "severity": pl.Float64,
            "node_sigma_mean": pl.Float64,
            "latent_sigma_mean": pl.Float64,
        },
    )
