"""The CheXmask-U reference model (HybridGNet) in plain PyTorch: architecture, weights, prediction.

Importing this subpackage requires torch (the ``[torch]`` extra).
"""

from __future__ import annotations

from chexmask_u_tools.model.hybridgnet import CONFIG_RANGES, DEFAULT_CONFIG, Encoding, HybridGNet, chebyshev_basis, ring_upsample_matrix
from chexmask_u_tools.model.predict import (
    DTYPES,
    PredictReport,
    draw_eps,
    image_seed,
    predict,
    predict_batch,
    predict_to_parquet,
    prediction_provenance,
    write_predictions,
)
from chexmask_u_tools.model.pretrained import (
    DEFAULT_REPO_ID,
    DEFAULT_SUBFOLDER,
    RANDOM_WEIGHTS,
    load_pretrained,
    load_weights,
    random_model,
    read_state_dict,
)
from chexmask_u_tools.model.roi import ROI_RULES, roi_sample

__all__ = [
    "CONFIG_RANGES",
    "DEFAULT_CONFIG",
    "DEFAULT_REPO_ID",
    "DEFAULT_SUBFOLDER",
    "DTYPES",
    "Encoding",
    "HybridGNet",
    "PredictReport",
    "RANDOM_WEIGHTS",
    "ROI_RULES",
    "chebyshev_basis",
    "draw_eps",
    "image_seed",
    "load_pretrained",
    "load_weights",
    "predict",
    "predict_batch",
    "predict_to_parquet",
    "prediction_provenance",
    "write_predictions",
    "random_model",
    "read_state_dict",
    "ring_upsample_matrix",
    "roi_sample",
]
