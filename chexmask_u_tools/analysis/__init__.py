"""The paper's uncertainty experiments, image corruptions and plots."""

from __future__ import annotations

from chexmask_u_tools.analysis.corruptions import gaussian_blur, gaussian_noise, occlude
from chexmask_u_tools.analysis.experiments import DEFAULT_OOD_SCORES, ood_scores, uncertainty_vs_corruption
from chexmask_u_tools.analysis.stats import (
    Correlation,
    node_error_vs_sigma,
    pearson,
    rankdata,
    roc_auc,
    roc_curve,
    spearman,
)

__all__ = [
    "Correlation",
    "DEFAULT_OOD_SCORES",
    "gaussian_blur",
    "gaussian_noise",
    "node_error_vs_sigma",
    "occlude",
    "ood_scores",
    "pearson",
    "rankdata",
    "roc_auc",
    "roc_curve",
    "spearman",
    "uncertainty_vs_corruption",
]
