"""The viewer's Predict tab: ``cxu.predict`` on uploaded images with the weights of ``--weights``.

The weights load in a background thread once the server runs (so the page
opens at once) and the tab's banner says what they are: the published model,
a local copy, **random** weights (a loud warning), or **none** (the loader's
message, which names ``--weights DIR``, ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT``).
A prediction never runs silently on weights the banner does not name.

Uploads get the bounds of ``chexmask-u predict``: the image readers refuse a
size outside ``MIN_SIDE``..``MAX_SIDE`` or above ``MAX_PIXELS`` from the file
header, before decoding; the viewer also caps the files per request
(:data:`MAX_UPLOAD_FILES`) and refuses what is not an image file by its name,
since ``predict`` reads any other file as a list of paths.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from chexmask_u_tools.errors import CheXmaskUError, InputError

__all__ = ["MAX_UPLOAD_FILES", "RANDOM_WEIGHTS", "Prediction", "Predictor"]

MAX_UPLOAD_FILES = 16
"""Images one prediction request may carry."""

RANDOM_WEIGHTS = "random"
"""The ``--weights`` spec of untrained weights: ``chexmask_u_tools.model.pretrained.RANDOM_WEIGHTS``, not
imported from there because that module loads torch (a second of the app's start, for the banner alone)."""


@dataclass
class Prediction:
    """What one Predict request gave.

    Attributes
    ----------
    rows:
        Canonical rows (both frames per image, source ``"private"``), in upload order.
    overlays:
        ``(image id, PNG bytes)`` per predicted image: the original-frame contours over the image.
    failed:
        ``(image id, reason)`` of the images that could not be read (skipped, as ``predict`` does).
    provenance:
        What produced the rows (weights, seed, samples, dtype, versions).
    """

    rows: pl.DataFrame
    overlays: list[tuple[str, bytes]]
    failed: list[tuple[str, str]] = field(default_factory=list)
    provenance: dict[str, str] = field(default_factory=dict)

    def write(self, folder: str | os.PathLike) -> tuple[Path, Path]:
        """``predictions.parquet`` (canonical rows, provenance in the file's metadata) and
        ``predictions.csv`` (the 1024-frame rows in the released layout, provenance in a last column)
        under ``folder``, as ``chexmask-u predict`` writes them (:mod:`chexmask_u_tools.io.provenance`)."""
        from chexmask_u_tools.io.released import write_released
        from chexmask_u_tools.model.predict import write_predictions

        folder = Path(folder)
        parquet, csv = folder / "predictions.parquet", folder / "predictions.csv"
        write_predictions(self.rows, parquet, self.provenance)
        # 'private' is no registry source: ids go to 'Image ID' with a Dataset column, so read_table reads them back.
        write_released(
            self.rows.filter(pl.col("frame") == "preprocessed"), csv, id_column="Image ID", dataset_column=True,
            provenance=self.provenance,
        )
        return parquet, csv


class Predictor:
    """The model behind the Predict tab (see the module docstring).

    Parameters
    ----------
    weights:
        A ``--weights`` spec, resolved as ``chexmask-u predict`` resolves it
        (None: the published weights; ``"random"``: untrained, seeded by ``seed``).
    dtype, samples, seed, device, crop_border:
        As ``chexmask-u predict`` ``--dtype``, ``--samples``, ``--seed``, ``--device``, ``--crop-border``.
    """

    def __init__(
        self,
        weights: str | None = None,
        *,
        dtype: str = "fp32",
        samples: int = 50,
        seed: int = 0,
        device: str | None = None,
        crop_border: bool = False,
    ) -> None:
        if samples < 1:
            raise InputError(f"--samples must be at least 1, got {samples}")
        self.weights, self.dtype, self.samples, self.seed = weights, dtype, int(samples), int(seed)
        self.device, self.crop_border = device, crop_border
        self.state = "waiting"
        self.message = ""
        self._model = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def random(self) -> bool:
        """Whether ``weights`` asks for untrained weights."""
        return self.weights == RANDOM_WEIGHTS

    def described(self) -> str:
        """The weights in words."""
        if self.weights is None:
            return "the published weights (mcosarinsky/CheXmask-U, folder v1_skip)"
        return f"random untrained weights (seed {self.seed})" if self.random else f"--weights {self.weights}"

    def start(self) -> None:
        """Load the weights in a background thread (once)."""
        with self._lock:
            if self._thread is None:
                self.state = "loading"
                self._thread = threading.Thread(target=self._load, name="chexmask-u-view-weights", daemon=True)
                self._thread.start()

    def _load(self) -> None:
        try:
            if not _has_torch():
                raise CheXmaskUError("the Predict tab needs the [torch] extra: pip install 'chexmask-u-tools[torch]'")
            import torch

            from chexmask_u_tools.model.pretrained import load_weights

            device = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
            model = load_weights(self.weights, map_location=device, random_seed=self.seed)
            if self.dtype == "fp64":
                model = model.double()
            self._model, self.device = model.eval(), str(device)
            self.state = "ready"
        except CheXmaskUError as error:
            self.state, self.message = "failed", str(error)
        except Exception as error:  # noqa: BLE001 - the banner says what happened instead of a dead thread
            self.state, self.message = "failed", f"{type(error).__name__}: {error}"

    def banner(self) -> str:
        """Markdown for the top of the Predict tab: which weights, or why there are none."""
        from chexmask_u_tools.cli.predict import RANDOM_WARNING

        if self.state == "failed":
            return f"⛔ **No weights: Predict is off.** {self.message}"
        if self.random:
            return "⚠️ **RANDOM WEIGHTS.** " + RANDOM_WARNING.format(seed=self.seed).removeprefix("WARNING: ")
        if self.state in ("waiting", "loading"):
            return f"Loading {self.described()} ..."
        return f"Weights: {self.described()}, on {self.device}; {self.samples} latent samples per image, seed {self.seed}, {self.dtype}."

    def model(self):
        """The loaded model; waits for the loading thread. Raises the loader's error when there are no weights."""
        self.start()
        assert self._thread is not None
        self._thread.join()
        if self.state != "ready":
            raise CheXmaskUError(self.message)
        return self._model

    def provenance(self) -> dict[str, str]:
        """What produced a prediction: :func:`~chexmask_u_tools.model.predict.prediction_provenance`, as the CLI records it."""
        from chexmask_u_tools.model.predict import prediction_provenance

        return prediction_provenance(
            self._model, n_samples=self.samples, seed=self.seed, dtype=self.dtype, crop_border=self.crop_border,
            tool="chexmask-u view",
        )

    def predict(self, paths: Sequence[str | os.PathLike]) -> Prediction:
        """Predict uploaded image files (ids: their file names).

        Raises
        ------
        InputError
            No file, more than :data:`MAX_UPLOAD_FILES`, a file that is not an
            image by its name, or two files of the same name.
        CheXmaskUError
            No weights (the loader's message), or no image could be read (each reason).
        """
        from chexmask_u_tools.analysis.plots import row_arrays
        from chexmask_u_tools.cli.viewer.render import overlay_png
        from chexmask_u_tools.images.read import IMAGE_SUFFIXES, read_image
        from chexmask_u_tools.model.predict import PredictReport
        from chexmask_u_tools.model.predict import predict as run_model

        files = [Path(p) for p in paths or ()]
        if not files:
            raise InputError("upload at least one image")
        if len(files) > MAX_UPLOAD_FILES:
            raise InputError(f"{len(files)} files uploaded; at most {MAX_UPLOAD_FILES} per prediction")
        names = [f.name for f in files]
        for file in files:
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                raise InputError(f"{file.name!r} is not an image file; accepted: {', '.join(IMAGE_SUFFIXES)}")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise InputError(f"two uploads have the same name (the image id): {twice}; rename one")
        model = self.model()
        report = PredictReport()
        parts = [
            run_model(
                str(file), model, n_samples=self.samples, seed=self.seed, dtype=self.dtype,
                crop_border=self.crop_border, workers=1, report=report, keep_memory=False,
            )
            for file in files
        ]
        rows = pl.concat(parts)
        # Reasons name the upload by its name: the server's folders are nobody's business.
        failed = [(image_id, _named(reason, files)) for image_id, reason in report.failed]
        if rows.height == 0:
            reasons = "; ".join(f"{image_id}: {reason}" for image_id, reason in failed)
            raise CheXmaskUError(f"no image could be predicted: {reasons}")
        overlays = []
        for file in files:
            original = rows.filter((pl.col("image_id") == file.name) & (pl.col("frame") == "original"))
            if original.height:
                row = original.row(0, named=True)
                landmarks, std, _ = row_arrays(row)
                overlays.append((file.name, overlay_png({**row, "landmarks": landmarks, "landmarks_std": std}, image=read_image(file))))
        return Prediction(rows, overlays, failed, self.provenance())


def _named(reason: str, files: Sequence[Path]) -> str:
    for file in files:
        reason = reason.replace(str(file), file.name)
    return reason


def _has_torch() -> bool:
    import importlib.util

    return "torch" in sys.modules or importlib.util.find_spec("torch") is not None
