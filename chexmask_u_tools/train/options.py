"""What a training sample holds: :class:`SampleOptions`, validated once and shared by both datasets.

The options are a frozen dataclass, so one object can be built, checked and
reused for a map-style and an iterable dataset (or for train and validation
with :func:`dataclasses.replace`).  Every value is checked in ``__post_init__``;
a bad value raises :class:`~chexmask_u_tools.errors.InputError` naming the
option, before any table or image is read.

Labels (``labels=...``)
-----------------------
Each name is a column of the table holding one finding per row, coded as in the
source databases: 1 (positive), 0 (negative), -1 (uncertain) or null (not
mentioned); ``attach_metadata`` adds such columns.  The sample gets ``labels``,
float32 ``(L,)``, and ``label_mask``, bool ``(L,)``: True where the entry is to
be used by the loss.  ``label_policy`` says what becomes of -1 and null:

===============  ===========================================================
key              values
===============  ===========================================================
``"uncertain"``  ``"ignore"`` (default): 0.0 with ``label_mask`` False;
                 ``"keep"``: -1.0 with ``label_mask`` True;
                 ``0.0`` / ``1.0``: that value with ``label_mask`` True
                 (the "U-zeros" / "U-ones" of the CheXpert paper)
``"missing"``    ``"ignore"`` (default): 0.0 with ``label_mask`` False;
                 ``0.0`` / ``1.0``: that value with ``label_mask`` True
===============  ===========================================================

Ignored entries hold 0.0, not NaN, so ``loss * label_mask`` stays finite.
Any other label value raises :class:`~chexmask_u_tools.errors.RecordError`
naming the row and the column.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.layout import N_NODES
from chexmask_u_tools.schema import FRAMES, PREPROCESSED_SIZE
from chexmask_u_tools.select.rules import Rule, parse_rules
from chexmask_u_tools.select.weights import (
    SampleWeighting,
    node_weights,
    soft_pixel_weights,
)

__all__ = ["SAMPLE_KEYS", "LabelPolicy", "SampleOptions"]

MissingPolicy = Literal["raise", "skip", "masks_only"]
MaskKind = Literal["hard", "soft", "both", "device"]
LabelValue = float | Literal["ignore", "keep"]

_FILL_VALUES = (0.0, 1.0)

SAMPLE_KEYS: frozenset[str] = frozenset(
    ("image", "has_image", "masks", "soft_masks", "landmarks", "std", "has_std", "mask_valid", "sample_weight",
     "node_weight", "pixel_weight", "original_size", "source", "image_id", "row", "labels", "label_mask", "flipped")
)
"""Keys a sample already has; ``fields`` may not take these names."""


@dataclass(frozen=True)
class LabelPolicy:
    """What ``labels`` hold for uncertain (-1) and missing (null) findings (module docstring).

    Examples
    --------
    >>> LabelPolicy.of({"uncertain": 1.0})
    LabelPolicy(uncertain=1.0, missing='ignore')
    """

    uncertain: LabelValue = "ignore"
    missing: LabelValue = "ignore"

    def __post_init__(self) -> None:
        for key, allowed in (("uncertain", ("ignore", "keep")), ("missing", ("ignore",))):
            value = getattr(self, key)
            if isinstance(value, str):
                if value not in allowed:
                    raise InputError(f"label_policy[{key!r}] must be one of {allowed} or 0.0 / 1.0, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) not in _FILL_VALUES:
                raise InputError(f"label_policy[{key!r}] must be one of {allowed} or 0.0 / 1.0, got {value!r}")
            else:
                object.__setattr__(self, key, float(value))

    @classmethod
    def of(cls, policy: LabelPolicy | Mapping[str, LabelValue] | None) -> LabelPolicy:
        """A policy from a mapping ``{"uncertain": ..., "missing": ...}`` (unknown keys raise)."""
        if policy is None:
            return cls()
        if isinstance(policy, LabelPolicy):
            return policy
        if not isinstance(policy, Mapping):
            raise InputError(f"label_policy must be a mapping like {{'uncertain': 0.0, 'missing': 'ignore'}}, got {policy!r}")
        unknown = sorted(set(policy) - {"uncertain", "missing"})
        if unknown:
            raise InputError(f"label_policy has unknown keys {unknown}; the keys are 'uncertain' and 'missing'")
        return cls(**policy)

    def apply(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, label_mask)`` of float ``values`` (1, 0, -1, NaN for null), any shape.

        Examples
        --------
        >>> labels, mask = LabelPolicy(uncertain=0.0).apply(np.array([1.0, -1.0, np.nan, 0.0]))
        >>> labels.tolist(), mask.tolist()
        ([1.0, 0.0, 0.0, 0.0], [True, True, False, True])
        """
        values = np.asarray(values, dtype=np.float32)
        labels, mask = values.copy(), np.ones(values.shape, dtype=bool)
        for selected, rule in ((values == -1.0, self.uncertain), (np.isnan(values), self.missing)):
            if rule == "ignore":
                labels[selected], mask[selected] = 0.0, False
            elif rule != "keep":
                labels[selected] = rule
        return labels, mask


def _positive_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise InputError(f"{name} must be an integer in {low}..{high}, got {value!r}")
    return int(value)


def _one_of(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise InputError(f"{name} must be one of {allowed}, got {value!r}")


def _names(name: str, values: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(values, str):
        values = (values,)
    values = tuple(values)
    if not all(isinstance(v, str) and v for v in values):
        raise InputError(f"{name} must be column names (strings), got {values!r}")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise InputError(f"{name} names {repeated} more than once")
    return values


def _trial(name: str, function: Callable, sample: np.ndarray, options: Mapping[str, Any]) -> None:
    """Call ``function(sample, **options)`` once, so that a misspelt or bad option fails now, not mid-epoch."""
    try:
        function(sample, **options)
    except TypeError as error:
        raise InputError(f"{name}: {error}") from None


@dataclass(frozen=True)
class SampleOptions:
    """Everything that shapes a sample of :class:`~chexmask_u_tools.train.datasets.CheXmaskUDataset`
    and :class:`~chexmask_u_tools.train.datasets.CheXmaskUIterableDataset` (meanings: module
    docstring of :mod:`chexmask_u_tools.train.datasets`).

    Attributes
    ----------
    frame, size:
        Output frame (``"preprocessed"``/``"original"``) and side ``S``
        (None: 1024 in the preprocessed frame, the native size in the original one).
    masks:
        ``"hard"``, ``"soft"``, ``"both"``, or ``"device"``: no masks in the
        sample, for :class:`~chexmask_u_tools.masks.device.DeviceMasks` to draw
        them from the batch's landmarks and std on the training device.
    soft_missing:
        Soft masks for a row without std: ``"raise"`` (default) refuses the
        table when building the dataset, naming the row count; ``"hard"`` gives
        such rows their hard masks as 0/1 floats (``has_std`` tells them apart).
    rules:
        :class:`~chexmask_u_tools.select.rules.Rule` objects or their text forms (parsed here).
    sample_weighting, node_weighting, pixel_weights:
        :class:`~chexmask_u_tools.select.weights.SampleWeighting` (None: 1);
        keyword arguments of :func:`~chexmask_u_tools.select.weights.node_weights`;
        False, True or keyword arguments of :func:`~chexmask_u_tools.select.weights.soft_pixel_weights`.
    missing, size_mismatch, crop_border, antialias, fast_decode, transform, image_dtype, cache_dir:
        See the datasets.
    fields:
        Table columns copied into the sample as Python values (e.g.
        ``("view", "age", "patient_id")``; null becomes None).
    labels, label_policy:
        Finding columns returned as ``labels`` / ``label_mask`` (module docstring).

    Examples
    --------
    >>> options = SampleOptions(size=256, masks="both", rules=["dice.mean>=0.7"])
    >>> options.size, options.masks, [str(rule) for rule in options.rules]
    (256, 'both', ['dice.mean>=0.7'])
    >>> SampleOptions(frame="preprocessed", size=None).size
    1024
    >>> SampleOptions(masks="fuzzy")
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.InputError: masks must be one of ('hard', 'soft', 'both', 'device'), got 'fuzzy'
    """

    frame: Literal["preprocessed", "original"] = "preprocessed"
    size: int | None = 512
    masks: MaskKind = "hard"
    soft_missing: Literal["raise", "hard"] = "raise"
    rules: tuple[Rule, ...] = ()
    sample_weighting: SampleWeighting | None = None
    node_weighting: Mapping[str, Any] | None = None
    pixel_weights: Mapping[str, Any] | bool = False
    missing: MissingPolicy = "raise"
    size_mismatch: Literal["raise", "rescale"] = "raise"
    crop_border: bool | None = None
    antialias: bool = False
    transform: Callable[[dict], dict] | None = None
    fast_decode: bool = True
    image_dtype: Literal["float32", "uint8"] = "float32"
    cache_dir: str | os.PathLike | None = None
    fields: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    label_policy: LabelPolicy | Mapping[str, LabelValue] | None = field(default=None)

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        _one_of("frame", self.frame, FRAMES)
        if self.size is None:
            put("size", PREPROCESSED_SIZE if self.frame == "preprocessed" else None)
        else:
            put("size", _positive_int("size", self.size, 8, 8192))
        _one_of("masks", self.masks, ("hard", "soft", "both", "device"))
        _one_of("soft_missing", self.soft_missing, ("raise", "hard"))
        _one_of("missing", self.missing, ("raise", "skip", "masks_only"))
        _one_of("size_mismatch", self.size_mismatch, ("raise", "rescale"))
        _one_of("image_dtype", self.image_dtype, ("float32", "uint8"))
        if self.crop_border is not None and not isinstance(self.crop_border, bool):
            raise InputError(f"crop_border must be True, False or None (by source), got {self.crop_border!r}")
        for name in ("antialias", "fast_decode"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise InputError(f"{name} must be True or False, got {getattr(self, name)!r}")
            put(name, bool(getattr(self, name)))
        if self.transform is not None and not callable(self.transform):
            raise InputError(f"transform must be a callable taking and returning a sample dict, got {self.transform!r}")
        if self.sample_weighting is not None and not isinstance(self.sample_weighting, SampleWeighting):
            raise InputError(f"sample_weighting must be a SampleWeighting or None, got {self.sample_weighting!r}")
        if isinstance(self.rules, (str, Rule)):
            put("rules", (self.rules,))
        put("rules", tuple(parse_rules(self.rules)))
        if self.node_weighting is not None and not isinstance(self.node_weighting, Mapping):
            raise InputError(f"node_weighting must be keyword arguments of node_weights (a dict), got {self.node_weighting!r}")
        put("node_weighting", dict(self.node_weighting or {}))
        _trial("node_weighting", node_weights, np.ones((N_NODES, 2)), self.node_weighting)
        if not isinstance(self.pixel_weights, (bool, Mapping)):
            raise InputError(f"pixel_weights must be True, False or keyword arguments of soft_pixel_weights, got {self.pixel_weights!r}")
        if self.masks == "device" and self.pixel_weights is not False:
            raise InputError(
                "pixel_weights come from the soft masks, which masks='device' leaves to the training step: "
                "pass pixel_weights= to DeviceMasks instead"
            )
        if isinstance(self.pixel_weights, Mapping):
            put("pixel_weights", dict(self.pixel_weights))
            _trial("pixel_weights", soft_pixel_weights, np.zeros((3, 2, 2), dtype=np.float32), self.pixel_weights)
        if self.cache_dir is not None:
            put("cache_dir", Path(self.cache_dir))
        put("fields", _names("fields", self.fields))
        taken = sorted(set(self.fields) & SAMPLE_KEYS)
        if taken:
            raise InputError(f"fields {taken} would overwrite sample keys of the same name; these are always in the sample")
        put("labels", _names("labels", self.labels))
        put("label_policy", LabelPolicy.of(self.label_policy))

    # ------------------------------------------------------------ derived
    @property
    def pixel_weight_options(self) -> dict[str, Any] | None:
        """Keyword arguments of ``soft_pixel_weights``, or None when the sample has no pixel weights."""
        if isinstance(self.pixel_weights, Mapping):
            return dict(self.pixel_weights)
        return {} if self.pixel_weights else None

    @property
    def needs_soft(self) -> bool:
        """Whether samples need soft masks (as masks or for pixel weights)."""
        return self.masks in ("soft", "both") or self.pixel_weights is not False

    @property
    def reduced_decode(self) -> bool:
        """Whether images are decoded at a reduced resolution (``fast_decode`` applies)."""
        return self.fast_decode and not self.antialias and self.size is not None

    @classmethod
    def merge(cls, options: SampleOptions | None, keywords: Mapping[str, Any]) -> SampleOptions:
        """``options`` (default: all defaults) with ``keywords`` replacing single values.

        Unknown keywords raise :class:`~chexmask_u_tools.errors.InputError`
        naming the closest option.

        Examples
        --------
        >>> base = SampleOptions(size=128)
        >>> SampleOptions.merge(base, {"masks": "soft"}).size
        128
        >>> SampleOptions.merge(None, {"szie": 64})
        Traceback (most recent call last):
        ...
        chexmask_u_tools.errors.InputError: unknown sample option 'szie' (did you mean 'size'?)
        """
        if options is not None and not isinstance(options, SampleOptions):
            raise InputError(f"options must be a SampleOptions, got {type(options).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in keywords:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; the options are {names}"
                raise InputError(f"unknown sample option {key!r}{hint}")
        if options is None:
            return cls(**keywords)
        return dataclasses.replace(options, **keywords) if keywords else options
