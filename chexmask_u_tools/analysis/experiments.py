"""The paper's uncertainty experiments (SPEC section 5) as functions over tables and models.

* :func:`ood_scores` - how well image-level uncertainties flag out-of-distribution
  rows (default label: ``Dice RCA (Max) < 0.7``, as in the paper), as ROC-AUC
  (:func:`~chexmask_u_tools.analysis.stats.roc_auc`).
* :func:`uncertainty_vs_corruption` - both uncertainty measures of a model on
  images corrupted at increasing severities (needs torch).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from chexmask_u_tools.analysis.stats import roc_auc
from chexmask_u_tools.errors import InputError
from chexmask_u_tools.layout import N_NODES
from chexmask_u_tools.schema import PREPROCESSED_SIZE
from chexmask_u_tools.select.uncertainty import latent_sigma_mean, node_sigma_max, node_sigma_mean

__all__ = [
    "DEFAULT_OOD_SCORES",
    "ood_scores",
    "uncertainty_vs_corruption",
]

if TYPE_CHECKING:  # torch is an optional extra
    from chexmask_u_tools.model import HybridGNet

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

    Examples
    --------
    >>> import polars as pl
    >>> import chexmask_u_tools as cxu
    >>> table = cxu.load_sample()
    >>> result = cxu.ood_scores(table)  # OOD: Dice RCA (Max) < 0.7
    >>> result.select("score", pl.col("auc").round(3), "n", "n_ood").rows()
    [('node_sigma_mean', 0.998, 200, 11), ('node_sigma_max', 0.994, 200, 11), ('latent_sigma_mean', 1.0, 200, 11)]
    >>> cxu.ood_scores(table, label=pl.col("dice_rca_mean") < 0.8, scores=["sigma_heart"]).select("score", pl.col("auc").round(3), "n_ood").row(0)
    ('sigma_heart', 0.966, 47)
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
        (H, W) uint8 arrays, or paths read with :func:`chexmask_u_tools.images.read.read_image`.
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

    Examples
    --------
    A small model with random weights (use :func:`~chexmask_u_tools.model.load_pretrained`
    for the published one) on one 80 x 64 image, at three noise levels:

    >>> import numpy as np
    >>> import chexmask_u_tools as cxu
    >>> model = cxu.HybridGNet(input_size=64)
    >>> image = np.random.default_rng(0).integers(0, 256, (80, 64), dtype=np.uint8)
    >>> result = cxu.uncertainty_vs_corruption(model, [image], [0.0, 20.0, 60.0], "noise", n_samples=2)
    >>> result.columns
    ['image_id', 'kind', 'severity', 'node_sigma_mean', 'latent_sigma_mean']
    >>> result.select("image_id", "kind", "severity").rows()
    [('0', 'noise', 0.0), ('0', 'noise', 20.0), ('0', 'noise', 60.0)]
    >>> bool((result["node_sigma_mean"] > 0).all() and (result["latent_sigma_mean"] > 0).all())
    True
    """
    import torch

    from chexmask_u_tools.analysis.corruptions import CORRUPTIONS, corrupt
    from chexmask_u_tools.images.preprocess import pad_to_square
    from chexmask_u_tools.images.read import read_image
    from chexmask_u_tools.model.predict import draw_eps, predict_batch, to_model_input

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
