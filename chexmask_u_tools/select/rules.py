"""Uncertainty, quality and metadata rules: which rows (and organs) to train on, and how much.

A :class:`Rule` compares one statistic of a row with a threshold and says what
to do when the row fails:

==========  =====================================================  ==============
level       statistic (pixels of the row's frame, SPEC section 5)  passes when
==========  =====================================================  ==============
``node``    the sigma ``(std_x + std_y) / 2`` of every node of      ``<= t`` (or at
            each selected organ; with ``fraction=f`` at most a      most ``f`` of
            fraction ``f`` of an organ's nodes may exceed ``t``     the nodes above)
``organ``   mean (``stat="mean"``) or max (``"max"``) node sigma   ``<= t``
            of each selected organ
``image``   mean / max / quantile ``q`` (``stat="q0.9"``) of the   ``<= t``
            120 node sigmas
``latent``  mean (or max) of the 64 latent posterior sigmas        ``<= t``
``dice``    ``Dice RCA (Mean)`` (``stat="mean"``) or ``(Max)``     ``>= t``
==========  =====================================================  ==============

(``<`` / ``>`` give strict comparisons.)  A rule's statistic is read once, when
the rule is made, into a typed object (:class:`NodeStat`, :class:`OrganStat`,
:class:`ImageStat`, :class:`LatentStat`, :class:`DiceStat`: ``rule.statistic``)
that knows the data it needs, the stored summary column it can read instead,
and its polars expression.

A :class:`ColumnRule` is a criterion on a plain column of the table: the row's
``source``, ``frame`` or ``image_id``, or the metadata that
``cxu.attach_metadata`` joins from the source database (``view``, ``sex``,
``age``, ``split``, ``patient_id``, ``study_id`` and one column per finding
label, named ``label.<Finding>`` in a rule)::

    view in PA,AP     age>=18     split==train     label.Cardiomegaly==1
    source in CheXpert,Padchest   label.Pleural Effusion!=1;missing=keep

Actions on failure:

* ``"drop_image"``: the row is removed;
* ``"drop_organ"``: the row stays, the failing organ's mask is marked missing
  (column ``mask_valid_<organ>`` becomes False; the datasets return it as the
  per-organ ``mask_valid`` flag so that a loss can ignore that channel).  Only
  for ``node`` and ``organ`` rules, which are evaluated organ by organ;
* ``"weight"``: the row stays and its ``rule_weight`` is multiplied by the
  rule's ``weight`` factor (once per rule, however many organs fail).

Rules compose: :func:`apply_rules` applies any list of them (uncertainty,
Dice RCA and metadata alike) to a ``DataFrame`` or ``LazyFrame``.  Every rule
is a polars expression, so on a lazy scan the row filter runs in the scan
(polars pushes the Dice, metadata and stored-summary comparisons into parquet
scans; list statistics such as quantiles filter right after the scan, before
anything else).  Where the table has the canonical summary column of a
statistic (``node_sigma_mean``, ``node_sigma_max``, ``sigma_<organ>``,
``latent_sigma_mean``) the rule reads it instead of recomputing it from
``landmarks_std`` (one float per row instead of 240); the other statistics are
computed from ``landmarks_std``.

Rows without the data a rule needs (``landmarks_std`` for node / organ / image
rules, ``latent_sigma`` for latent rules, the Dice column for dice rules, the
column itself for column rules): ``missing="raise"`` (default) raises
:class:`~chexmask_u_tools.errors.RecordError` naming the rule, how many rows
lack the data and the first such image id (rows that another ``drop_image``
rule removes anyway are not counted); ``missing="keep"`` lets them pass,
``missing="drop"`` makes them fail.  A rule on a column the table does not
have raises :class:`~chexmask_u_tools.errors.InputError` naming the column and
what adds it, whatever the policy.

Rules also have a text form, used by the command line and by ``str(rule)``
(:func:`parse_rule` reads it back)::

    image.mean<=8                 image.q0.9<12:weight=0.3
    organ.heart.mean<=10:drop_organ   node.left_lung.frac0.05<=25:drop_organ
    latent.mean<=1.1              dice.mean>=0.7;missing=keep
    view in PA,AP                 age>=18;missing=drop
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Literal, TypeVar

import polars as pl

from chexmask_u_tools.errors import InputError, RecordError
from chexmask_u_tools.layout import ORGAN_SIZES, ORGAN_SLICES, ORGANS
from chexmask_u_tools.schema import FRAMES, ORGAN_SIGMA_COLUMNS, as_polars
from chexmask_u_tools.select.uncertainty import (
    latent_sigma_mean,
    node_sigma,
    node_sigma_max,
    node_sigma_mean,
    node_sigma_quantile,
)
from chexmask_u_tools.sources import require_source

__all__ = [
    "ACTIONS",
    "COLUMN_CRITERIA",
    "LEVELS",
    "VIEWS",
    "AnyRule",
    "ColumnRule",
    "DiceStat",
    "ImageStat",
    "LatentStat",
    "NodeStat",
    "OrganStat",
    "Rule",
    "apply_rules",
    "check_rules",
    "dice_rule",
    "image_rule",
    "latent_rule",
    "mask_valid_columns",
    "node_rule",
    "organ_rule",
    "parse_rule",
    "parse_rules",
    "parse_statistic",
    "require_organ",
    "rule_report",
]

Level = Literal["node", "organ", "image", "latent", "dice"]
Action = Literal["drop_image", "drop_organ", "weight"]
Missing = Literal["raise", "keep", "drop"]
Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)
Compare = Callable[[pl.Expr], pl.Expr]

LEVELS: tuple[str, ...] = ("node", "organ", "image", "latent", "dice")
ACTIONS: tuple[str, ...] = ("drop_image", "drop_organ", "weight")
MISSING_POLICIES: tuple[str, ...] = ("raise", "keep", "drop")
#: The view codes of the metadata tables (``cxu.read_metadata``).
VIEWS: tuple[str, ...] = ("PA", "AP", "LATERAL", "LL")
#: Column criteria: name in a rule -> (kind, where the column comes from).  Kinds:
#: ``"text"`` (``==``, ``!=``, ``in``, ``not in``), ``"id"`` (text, compared as
#: strings whatever the column's dtype) and ``"number"`` (also ``<``, ``<=``,
#: ``>``, ``>=``).  Finding labels are ``label.<name>`` (kind number, metadata).
COLUMN_CRITERIA: dict[str, tuple[str, str]] = {
    "source": ("text", "table"),
    "frame": ("text", "table"),
    "image_id": ("id", "table"),
    "patient_id": ("id", "metadata"),
    "study_id": ("id", "metadata"),
    "view": ("text", "metadata"),
    "sex": ("text", "metadata"),
    "age": ("number", "metadata"),
    "split": ("text", "metadata"),
}
LABEL_PREFIX = "label."
RULE_WEIGHT_COLUMN = "rule_weight"
_METADATA_FIX = (
    "it comes from the source database's metadata: join it first with "
    "cxu.attach_metadata(table, cxu.read_metadata(source, files)) (command line: --metadata DIR)"
)


def mask_valid_columns() -> dict[str, str]:
    """Organ -> name of the boolean column :func:`apply_rules` writes (``mask_valid_<organ>``).

    Examples
    --------
    >>> from chexmask_u_tools.select.rules import mask_valid_columns
    >>> mask_valid_columns()["heart"]
    'mask_valid_heart'
    """
    return {organ: f"mask_valid_{organ}" for organ in ORGANS}


def _did_you_mean(name: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def require_organ(organ: str, *, argument: str = "organ") -> str:
    """``organ`` if it is one of :data:`~chexmask_u_tools.layout.ORGANS`, else :class:`InputError`
    naming ``argument`` and the closest organ.

    Examples
    --------
    >>> from chexmask_u_tools.select.rules import require_organ
    >>> require_organ("hart")
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.InputError: unknown organ 'hart' (did you mean 'heart'?); expected one of ('right_lung', 'left_lung', 'heart')
    """
    if organ not in ORGANS:
        where = "" if argument == "organ" else f" in {argument}"
        raise InputError(f"unknown organ {organ!r}{where}{_did_you_mean(str(organ), ORGANS)}; expected one of {ORGANS}")
    return organ


def _check_organ(organ: str | None) -> None:
    if organ is not None:
        require_organ(organ)


def _unit_fraction(text: str) -> float | None:
    """``text`` as a number in [0, 1], else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0.0 <= value <= 1.0 else None


def _organ_node_sigmas(organ: str) -> pl.Expr:
    """The organ's node sigmas as a list expression (null without std)."""
    part = ORGAN_SLICES[organ]
    return node_sigma().arr.to_list().list.slice(part.start, ORGAN_SIZES[organ])


def _require_organ(level: str, organ: str | None) -> str:
    if organ not in ORGANS:
        raise InputError(f"{level} rules are evaluated per organ; pass one of {ORGANS}")
    return organ


# --------------------------------------------------------------------------- statistics
# One small frozen class per level.  Each knows the raw column it needs, the
# stored summary column that may replace it, and its value expression.


@dataclass(frozen=True)
class NodeStat:
    """Node sigmas of one organ (or each organ): their largest value, or the fraction above the threshold.

    ``fraction=None`` (text ``"all"``): the value is the organ's largest node
    sigma, compared with the threshold.  ``fraction=f`` (text ``"frac<f>"``):
    the value is the fraction of the organ's nodes failing the threshold, and
    the organ passes when it is ``<= f``.

    Examples
    --------
    >>> from chexmask_u_tools.select.rules import NodeStat, Rule
    >>> Rule("node", 7, "frac0.1", organ="heart").statistic
    NodeStat(organ='heart', fraction=0.1)
    >>> NodeStat().organs, NodeStat().needs
    (('right_lung', 'left_lung', 'heart'), 'landmarks_std')
    """

    organ: str | None = None
    fraction: float | None = None
    level: ClassVar[str] = "node"
    needs: ClassVar[str] = "landmarks_std"

    @property
    def organs(self) -> tuple[str, ...]:
        return (self.organ,) if self.organ is not None else ORGANS

    def stored_column(self, organ: str | None = None) -> str | None:
        return None

    def value(self, organ: str | None, columns: Container[str], compare: Compare) -> pl.Expr:
        sigmas = _organ_node_sigmas(_require_organ(self.level, organ))
        if self.fraction is None:
            return sigmas.list.max().cast(pl.Float32)
        return sigmas.list.eval(~compare(pl.element())).list.mean().cast(pl.Float32)

    def passes(self, value: pl.Expr, compare: Compare) -> pl.Expr:
        return compare(value) if self.fraction is None else value <= self.fraction


@dataclass(frozen=True)
class OrganStat:
    """Mean or max node sigma of one organ (or of each organ, judged on its own).

    Examples
    --------
    >>> from chexmask_u_tools.select.rules import OrganStat
    >>> OrganStat().stored_column("heart"), OrganStat(stat="max").stored_column("heart")  # max is recomputed
    ('sigma_heart', None)
    """

    organ: str | None = None
    stat: Literal["mean", "max"] = "mean"
    level: ClassVar[str] = "organ"
    needs: ClassVar[str] = "landmarks_std"

    @property
    def organs(self) -> tuple[str, ...]:
        return (self.organ,) if self.organ is not None else ORGANS

    def stored_column(self, organ: str | None = None) -> str | None:
        return ORGAN_SIGMA_COLUMNS[organ] if self.stat == "mean" and organ is not None else None

    def value(self, organ: str | None, columns: Container[str], compare: Compare) -> pl.Expr:
        stored = self.stored_column(organ)
        if stored is not None and stored in columns:
            return pl.col(stored).cast(pl.Float32)
        sigmas = _organ_node_sigmas(_require_organ(self.level, organ))
        return (sigmas.list.mean() if self.stat == "mean" else sigmas.list.max()).cast(pl.Float32)

    def passes(self, value: pl.Expr, compare: Compare) -> pl.Expr:
        return compare(value)


@dataclass(frozen=True)
class ImageStat:
    """Mean, max or quantile ``q`` of the image's 120 node sigmas (``"median"`` is ``q=0.5``).

    Examples
    --------
    >>> from chexmask_u_tools.select.rules import ImageStat, parse_statistic
    >>> parse_statistic("image", "median")
    ImageStat(stat='quantile', q=0.5)
    >>> ImageStat("mean").stored_column(), ImageStat("quantile", 0.9).stored_column()
    ('node_sigma_mean', None)
    """

    stat: Literal["mean", "max", "quantile"] = "mean"
    q: float | None = None
    level: ClassVar[str] = "image"
    needs: ClassVar[str] = "landmarks_std"
    organs: ClassVar[tuple[str, ...]] = ()

    def stored_column(self, organ: str | None = None) -> str | None:
        return f"node_sigma_{self.stat}" if self.stat in ("mean", "max") else None

    def value(self, organ: str | None, columns: Container[str], compare: Compare) -> pl.Expr:
        stored = self.stored_column()
        if stored is not None and stored in columns:
            return pl.col(stored).cast(pl.Float32)
        if self.stat == "mean":
            return node_sigma_mean()
        if self.stat == "max":
            return node_sigma_max()
        return node_sigma_quantile(self.q)

    def passes(self, value: pl.Expr, compare: Compare) -> pl.Expr:
        return compare(value)


@dataclass(frozen=True)
class LatentStat:
    """Mean or max of the 64 latent posterior sigmas.

    Examples
    --------
    >>> from chexmask_u_tools.select.rules import LatentStat
    >>> LatentStat().needs, LatentStat().stored_column()
    ('latent_sigma', 'latent_sigma_mean')
    """

    stat: Literal["mean", "max"] = "mean"
    level: ClassVar[str] = "latent"
    needs: ClassVar[str] = "latent_sigma"
    organs: ClassVar[tuple[str, ...]] = ()

    def stored_column(self, organ: str | None = None) -> str | None:
        return "latent_sigma_mean" if self.stat == "mean" else None

    def value(self, organ: str | None, columns: Container[str], compare: Compare) -> pl.Expr:
        stored = self.stored_column()
        if stored is not None and stored in columns:
            return pl.col(stored).cast(pl.Float32)
        return latent_sigma_mean() if self.stat == "mean" else pl.col(self.needs).arr.max().cast(pl.Float32)

    def passes(self, value: pl.Expr, compare: Compare) -> pl.Expr:
        return compare(value)


@dataclass(frozen=True)
class DiceStat:
    """The released ``Dice RCA (Mean)`` or ``(Max)`` of the row.

    Examples
    --------
    >>> from chexmask_u_tools.select.rules import DiceStat
    >>> DiceStat("max").needs
    'dice_rca_max'
    """

    stat: Literal["mean", "max"] = "mean"
    level: ClassVar[str] = "dice"
    organs: ClassVar[tuple[str, ...]] = ()

    @property
    def needs(self) -> str:
        return f"dice_rca_{self.stat}"

    def stored_column(self, organ: str | None = None) -> str | None:
        return None

    def value(self, organ: str | None, columns: Container[str], compare: Compare) -> pl.Expr:
        return pl.col(self.needs).cast(pl.Float64)

    def passes(self, value: pl.Expr, compare: Compare) -> pl.Expr:
        return compare(value)


Statistic = NodeStat | OrganStat | ImageStat | LatentStat | DiceStat
_STAT_CHOICES: dict[str, str] = {
    "node": "'all' or 'frac<f>' (f in [0, 1])",
    "organ": "'mean' or 'max'",
    "image": "'mean', 'max', 'median' or 'q<q>' (q in [0, 1])",
    "latent": "'mean' or 'max'",
    "dice": "'mean' or 'max'",
}


def _read_statistic(level: str, stat: str, organ: str | None) -> Statistic | None:
    if level == "node":
        if stat == "all":
            return NodeStat(organ)
        fraction = _unit_fraction(stat[4:]) if stat.startswith("frac") else None
        return None if fraction is None else NodeStat(organ, fraction)
    if level == "organ":
        return OrganStat(organ, stat) if stat in ("mean", "max") else None
    if level == "image":
        if stat in ("mean", "max"):
            return ImageStat(stat)
        if stat == "median":
            return ImageStat("quantile", 0.5)
        q = _unit_fraction(stat[1:]) if stat.startswith("q") else None
        return None if q is None else ImageStat("quantile", q)
    if level == "latent":
        return LatentStat(stat) if stat in ("mean", "max") else None
    if level == "dice":
        return DiceStat(stat) if stat in ("mean", "max") else None
    return None


def parse_statistic(level: str, stat: str, organ: str | None = None) -> Statistic:
    """The typed statistic of a rule level from its text (``"mean"``, ``"q0.9"``, ``"frac0.05"`` ...).

    Examples
    --------
    >>> from chexmask_u_tools.select.rules import parse_statistic
    >>> parse_statistic("image", "q0.9")
    ImageStat(stat='quantile', q=0.9)
    >>> parse_statistic("node", "frac0.05", "heart")
    NodeStat(organ='heart', fraction=0.05)
    """
    if level not in LEVELS:
        raise InputError(f"rule level must be one of {LEVELS}, got {level!r}{_did_you_mean(level, LEVELS)}")
    _check_organ(organ)
    if organ is not None and level not in ("node", "organ"):
        raise InputError(f"{level} rules cover the whole image; organ={organ!r} is only for node/organ rules")
    statistic = _read_statistic(level, stat, organ)
    if statistic is None:
        raise InputError(f"{level} rules take stat {_STAT_CHOICES[level]}, got {stat!r}")
    return statistic


def _check_policy(action: str, missing: str, weight: float) -> float:
    """Validate action and missing policy; return the stored weight factor."""
    if action not in ACTIONS:
        raise InputError(f"rule action must be one of {ACTIONS}, got {action!r}{_did_you_mean(action, ACTIONS)}")
    if missing not in MISSING_POLICIES:
        raise InputError(f"rule missing policy must be one of {MISSING_POLICIES}, got {missing!r}")
    try:
        factor = float(weight)
    except (TypeError, ValueError):
        raise InputError(f"rule weight factor must be a number, got {weight!r}") from None
    if not 0.0 <= factor <= 1.0:
        raise InputError(f"rule weight factor must lie in [0, 1], got {weight}")
    # The factor means nothing for the drop actions; a fixed value keeps equality meaningful.
    return factor if action == "weight" else 0.5


def _action_text(action: str, weight: float, missing: str) -> str:
    text = ""
    if action != "drop_image":
        text += f":{action}" + (f"={weight!r}" if action == "weight" else "")
    if missing != "raise":
        text += f";missing={missing}"
    return text


@dataclass(frozen=True)
class Rule:
    """One threshold rule on an uncertainty or quality statistic (see the module docstring).

    Parameters
    ----------
    level:
        ``"node"``, ``"organ"``, ``"image"``, ``"latent"`` or ``"dice"``.
    threshold:
        Finite number; pixels for node / organ / image rules, latent sigma units
        for latent rules, Dice (0..1) for dice rules.
    stat:
        ``node``: ``"all"`` or ``"frac<f>"`` (at most a fraction f of the organ's
        nodes above the threshold); ``organ``: ``"mean"``/``"max"``; ``image``:
        ``"mean"``/``"max"``/``"median"``/``"q<q>"``; ``latent``: ``"mean"``/``"max"``;
        ``dice``: ``"mean"``/``"max"``.  Read once into :attr:`statistic`.
    op:
        ``"<="`` or ``"<"`` for sigma rules, ``">="`` or ``">"`` for dice rules.
    organ:
        ``node``/``organ`` rules only: restrict to one organ (None: each organ).
    action:
        ``"drop_image"``, ``"drop_organ"`` or ``"weight"``.
    weight:
        Factor in [0, 1] applied to ``rule_weight`` on failure (action ``"weight"``;
        ignored, and stored as 0.5, for the other actions).
    missing:
        ``"raise"``, ``"keep"`` or ``"drop"``: rows without the needed data.

    Examples
    --------
    >>> from chexmask_u_tools.select.rules import Rule
    >>> rule = Rule("organ", 10, "mean", organ="heart", action="drop_organ")
    >>> str(rule), rule.statistic
    ('organ.heart.mean<=10.0:drop_organ', OrganStat(organ='heart', stat='mean'))
    """

    level: str
    threshold: float
    stat: str = ""
    op: str = ""
    organ: str | None = None
    action: str = "drop_image"
    weight: float = 0.5
    missing: str = "raise"
    statistic: Statistic = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise InputError(f"rule level must be one of {LEVELS}, got {self.level!r}{_did_you_mean(self.level, LEVELS)}")
        object.__setattr__(self, "stat", self.stat or ("all" if self.level == "node" else "mean"))
        object.__setattr__(self, "op", self.op or (">=" if self.level == "dice" else "<="))
        try:
            threshold = float(self.threshold)
        except (TypeError, ValueError):
            raise InputError(f"rule threshold must be a number, got {self.threshold!r}") from None
        if not math.isfinite(threshold):
            raise InputError(f"rule threshold must be finite, got {threshold}")
        object.__setattr__(self, "threshold", threshold)
        object.__setattr__(self, "statistic", parse_statistic(self.level, self.stat, self.organ))
        allowed_ops = (">=", ">") if self.level == "dice" else ("<=", "<")
        if self.op not in allowed_ops:
            raise InputError(f"{self.level} rules pass when the value is {' or '.join(allowed_ops)} the threshold, got op {self.op!r}")
        if self.action == "drop_organ" and self.level not in ("node", "organ"):
            raise InputError(f"action 'drop_organ' needs an organ-wise (node or organ) rule, not a {self.level} rule")
        object.__setattr__(self, "weight", _check_policy(self.action, self.missing, self.weight))

    # ------------------------------------------------------------------ text form
    def __str__(self) -> str:
        target = ".".join([self.level, *([self.organ] if self.organ is not None else []), self.stat])
        return f"{target}{self.op}{self.threshold!r}" + _action_text(self.action, self.weight, self.missing)

    @property
    def name(self) -> str:
        """The rule's text form, used in reports and error messages."""
        return str(self)

    @property
    def needs(self) -> str:
        """The column whose data this rule needs (null there = missing data)."""
        return self.statistic.needs

    def stored_column(self, organ: str | None = None) -> str | None:
        """The canonical summary column holding this rule's statistic, if there is one."""
        return self.statistic.stored_column(organ)

    def reads(self, columns: Container[str] = ()) -> str:
        """The column the rule's expression reads from a table with ``columns``.

        A canonical summary column (``node_sigma_mean``, ``sigma_heart``...)
        when the table has it (cheap, and pushed into parquet scans), else the
        raw data (``landmarks_std`` / ``latent_sigma``).  For organ-wise rules
        over several organs, the first organ's.
        """
        stored = self.stored_column(self.organs[0] if self.organs else None)
        return stored if stored is not None and stored in columns else self.needs

    @property
    def organs(self) -> tuple[str, ...]:
        """Organs the rule is evaluated on (empty for whole-image rules)."""
        return self.statistic.organs

    def missing_column_error(self, columns: Container[str]) -> InputError:
        """The error for a table without the column this rule reads."""
        return InputError(f"rule {self.name!r} needs column {self.needs!r}, which the table does not have")

    # ------------------------------------------------------------ expressions
    def _compare(self, value: pl.Expr) -> pl.Expr:
        t = self.threshold
        return {"<=": value <= t, "<": value < t, ">=": value >= t, ">": value > t}[self.op]

    def value_expr(self, organ: str | None = None, columns: Container[str] = ()) -> pl.Expr:
        """The statistic the rule thresholds (Float32; null where the data is missing).

        ``organ`` selects the organ for node / organ rules (required there).  For
        node rules with ``stat="frac<f>"`` the value is the fraction of the organ's
        nodes whose sigma fails the threshold; with ``"all"`` it is the organ's
        largest node sigma.  ``columns``: the table's column names; a stored
        summary column among them is read instead of recomputing it from the
        raw data (see :meth:`reads`).
        """
        return self.statistic.value(organ, columns, self._compare)

    def passes(self, organ: str | None = None, columns: Container[str] = ()) -> pl.Expr:
        """Boolean expression: True where the row (organ) passes, null where its data is missing."""
        if self.organs and organ is None:
            return pl.all_horizontal([self.passes(o, columns) for o in self.organs])
        return self.statistic.passes(self.value_expr(organ, columns), self._compare)

    def pass_expr(self, organ: str | None = None, columns: Container[str] = ()) -> pl.Expr:
        """Boolean expression: True where the row (organ) passes; missing data per ``missing``.

        Organ-wise rules without ``organ`` pass only when every selected organ passes.
        """
        if self.organs and organ is None:
            return pl.all_horizontal([self.pass_expr(o, columns) for o in self.organs])
        return self.passes(organ, columns).fill_null(self.missing == "keep")


_COLUMN_OPS: tuple[str, ...] = ("==", "!=", "in", "not in", "<=", ">=", "<", ">")
_ORDER_OPS: tuple[str, ...] = ("<=", ">=", "<", ">")


def _column_kind(column: str) -> tuple[str, str]:
    if column.startswith(LABEL_PREFIX) and len(column) > len(LABEL_PREFIX):
        return "number", "metadata"
    if column in COLUMN_CRITERIA:
        return COLUMN_CRITERIA[column]
    choices = [*COLUMN_CRITERIA, *(f"{level}.mean" for level in LEVELS if level != "node"), "node", "label.<finding>"]
    raise InputError(
        f"unknown rule target {column!r}{_did_you_mean(column, choices)}; expected one of {LEVELS} "
        f"(uncertainty and Dice rules), a column {tuple(COLUMN_CRITERIA)} or label.<finding>"
    )


def _column_value(column: str, kind: str, value: object) -> str | float:
    if kind == "number":
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InputError(f"rule on {column!r} compares numbers; {value!r} is not one") from None
        if not math.isfinite(number):
            raise InputError(f"rule on {column!r}: value must be finite, got {number}")
        return number
    text = str(value).strip()
    if not text:
        raise InputError(f"rule on {column!r}: empty value")
    if column == "source":
        return require_source(text, argument="source in the rule")
    if column == "frame" and text not in FRAMES:
        raise InputError(f"unknown frame {text!r}{_did_you_mean(text, FRAMES)}; expected one of {FRAMES}")
    if column == "view":
        if text.upper() not in VIEWS:
            raise InputError(f"unknown view {text!r}{_did_you_mean(text.upper(), VIEWS)}; expected one of {VIEWS}")
        return text.upper()
    return text


@dataclass(frozen=True)
class ColumnRule:
    """A criterion on a plain column: ``source``/``frame``/``image_id`` or joined metadata.

    Parameters
    ----------
    column:
        ``"source"``, ``"frame"``, ``"image_id"``, ``"patient_id"``,
        ``"study_id"``, ``"view"``, ``"sex"``, ``"age"`` (years), ``"split"``,
        or ``"label.<finding>"`` for the finding column ``label.<finding>`` (Float32:
        1 positive, 0 negative, -1 uncertain, null not mentioned).
    op:
        ``"=="``, ``"!="``, ``"in"`` or ``"not in"``; numbers (``age``,
        labels) also ``"<="``, ``"<"``, ``">="``, ``">"``.
    values:
        The value (or, for ``in`` / ``not in``, the values) compared with.
        Sources are stored under their canonical name (any accepted spelling
        is read), views upper-cased and checked against :data:`VIEWS`.  In the
        text form values are separated by commas, so a value holding ``,``,
        ``:`` or ``;`` can only be given to the object, not written as text.
    action, weight, missing:
        As for :class:`Rule` (``drop_organ`` is not available: the criterion
        is about the whole image).  ``missing`` is about null values in the
        column; a column absent from the table is always an error.

    Examples
    --------
    >>> from chexmask_u_tools.select.rules import ColumnRule
    >>> str(ColumnRule("view", "in", ("pa", "AP")))
    'view in PA,AP'
    >>> str(ColumnRule("label.Cardiomegaly", "==", 1, missing="drop"))
    'label.Cardiomegaly==1.0;missing=drop'
    """

    column: str
    op: str
    values: tuple[str | float, ...] | str | float
    action: str = "drop_image"
    weight: float = 0.5
    missing: str = "raise"
    organs: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        kind, _ = _column_kind(self.column)
        if self.op not in _COLUMN_OPS:
            raise InputError(f"column rules compare with one of {_COLUMN_OPS}, got {self.op!r}")
        if self.op in _ORDER_OPS and kind != "number":
            raise InputError(f"{self.column!r} is not a number; compare it with ==, !=, in or not in, not {self.op!r}")
        raw = (self.values,) if isinstance(self.values, (str, int, float)) else tuple(self.values)
        if not raw:
            raise InputError(f"rule on {self.column!r} needs at least one value")
        if len(raw) > 1 and self.op not in ("in", "not in"):
            raise InputError(f"rule on {self.column!r}: op {self.op!r} takes one value; use 'in' for several")
        values = tuple(dict.fromkeys(_column_value(self.column, kind, value) for value in raw))
        object.__setattr__(self, "values", values)
        if self.action == "drop_organ":
            raise InputError(f"action 'drop_organ' needs an organ-wise (node or organ) rule, not a rule on {self.column!r}")
        object.__setattr__(self, "weight", _check_policy(self.action, self.missing, self.weight))

    def __str__(self) -> str:
        shown = ",".join(repr(v) if isinstance(v, float) else v for v in self.values)
        separator = f" {self.op} " if self.op in ("in", "not in") else self.op
        return f"{self.column}{separator}{shown}" + _action_text(self.action, self.weight, self.missing)

    @property
    def name(self) -> str:
        """The rule's text form, used in reports and error messages."""
        return str(self)

    @property
    def kind(self) -> str:
        """``"text"``, ``"id"`` or ``"number"``."""
        return _column_kind(self.column)[0]

    @property
    def needs(self) -> str:
        """The table column the rule reads: the column itself (a finding's column is ``label.<finding>``,
        as :func:`~chexmask_u_tools.cohorts.read_metadata` names it)."""
        return self.column

    def reads(self, columns: Container[str] = ()) -> str:
        """The column the rule's expression reads (always :attr:`needs`)."""
        return self.needs

    def missing_column_error(self, columns: Iterable[str]) -> InputError:
        """The error for a table without :attr:`needs`, naming what adds it and close column names."""
        present = [str(c) for c in columns]
        hint = _did_you_mean(self.needs, present)
        origin = _column_kind(self.column)[1]
        fix = _METADATA_FIX if origin == "metadata" else "every canonical table has it (cxu.read_table)"
        what = f"finding column {self.needs!r}" if self.column.startswith(LABEL_PREFIX) else f"column {self.needs!r}"
        return InputError(f"rule {self.name!r} needs {what}, which the table does not have{hint}; {fix}")

    def value_expr(self, organ: str | None = None, columns: Container[str] = ()) -> pl.Expr:
        """The column as compared (Float64 for numbers, String for ids)."""
        column = pl.col(self.needs)
        if self.kind == "number":
            return column.cast(pl.Float64)
        return column.cast(pl.String) if self.kind == "id" else column

    def passes(self, organ: str | None = None, columns: Container[str] = ()) -> pl.Expr:
        """Boolean expression: True where the row passes, null where the column is null."""
        value = self.value_expr()
        if self.op in ("in", "not in"):
            inside = value.is_in(list(self.values))  # null for a null value
            return inside if self.op == "in" else ~inside
        v = self.values[0]
        return {"==": value == v, "!=": value != v, "<=": value <= v, "<": value < v, ">=": value >= v, ">": value > v}[self.op]

    def pass_expr(self, organ: str | None = None, columns: Container[str] = ()) -> pl.Expr:
        """Boolean expression: True where the row passes; null values per ``missing``."""
        return self.passes(organ, columns).fill_null(self.missing == "keep")


AnyRule = Rule | ColumnRule


# --------------------------------------------------------------------------- constructors


def node_rule(
    threshold: float,
    *,
    organ: str | None = None,
    fraction: float = 0.0,
    action: Action = "drop_image",
    weight: float = 0.5,
    missing: Missing = "raise",
) -> Rule:
    """Every node sigma of the organ(s) ``<= threshold`` px (or at most ``fraction`` of them above).

    Examples
    --------
    >>> import numpy as np, polars as pl
    >>> import chexmask_u_tools as cxu
    >>> std = np.full((3, 120, 2), 4.0, dtype=np.float32)  # node stds of 3 rows, in px
    >>> std[1, 94:] = (10.0, 6.0)  # row "b" is unsure of its heart (nodes 94..119): sigma 8
    >>> std[2] = 9.0  # row "c" is unsure everywhere
    >>> table = pl.DataFrame({"image_id": ["a", "b", "c"], "landmarks_std": std})
    >>> rule = cxu.node_rule(7, organ="heart", action="drop_organ")
    >>> str(rule), str(cxu.node_rule(12, fraction=0.1))
    ('node.heart.all<=7.0:drop_organ', 'node.frac0.1<=12.0')
    >>> cxu.apply_rules(table, [rule])["mask_valid_heart"].to_list()
    [True, False, False]
    """
    stat = "all" if fraction == 0 else f"frac{float(fraction):g}"
    return Rule("node", threshold, stat, organ=organ, action=action, weight=weight, missing=missing)


def organ_rule(
    threshold: float,
    *,
    organ: str | None = None,
    stat: Literal["mean", "max"] = "mean",
    action: Action = "drop_organ",
    weight: float = 0.5,
    missing: Missing = "raise",
) -> Rule:
    """Mean (or max) node sigma of each selected organ ``<= threshold`` px.

    Examples
    --------
    >>> import numpy as np, polars as pl
    >>> import chexmask_u_tools as cxu
    >>> std = np.full((3, 120, 2), 4.0, dtype=np.float32)  # node stds of 3 rows, in px
    >>> std[1, 94:] = (10.0, 6.0)  # row "b" is unsure of its heart (nodes 94..119): sigma 8
    >>> std[2] = 9.0  # row "c" is unsure everywhere
    >>> table = pl.DataFrame({"image_id": ["a", "b", "c"], "landmarks_std": std})
    >>> rule = cxu.organ_rule(6, action="weight", weight=0.5)  # every organ, judged on its own
    >>> str(rule)
    'organ.mean<=6.0:weight=0.5'
    >>> cxu.apply_rules(table, [rule])["rule_weight"].to_list()
    [1.0, 0.5, 0.5]
    """
    return Rule("organ", threshold, stat, organ=organ, action=action, weight=weight, missing=missing)


def image_rule(
    threshold: float,
    *,
    stat: str = "mean",
    action: Action = "drop_image",
    weight: float = 0.5,
    missing: Missing = "raise",
) -> Rule:
    """Image-level node sigma (``"mean"``, ``"max"``, ``"median"``, ``"q0.9"``...) ``<= threshold`` px.

    Examples
    --------
    >>> import numpy as np, polars as pl
    >>> import chexmask_u_tools as cxu
    >>> std = np.full((3, 120, 2), 4.0, dtype=np.float32)  # node stds of 3 rows, in px
    >>> std[1, 94:] = (10.0, 6.0)  # row "b" is unsure of its heart (nodes 94..119): sigma 8
    >>> std[2] = 9.0  # row "c" is unsure everywhere
    >>> table = pl.DataFrame({"image_id": ["a", "b", "c"], "landmarks_std": std})
    >>> str(cxu.image_rule(8, stat="q0.9"))
    'image.q0.9<=8.0'
    >>> cxu.apply_rules(table, [cxu.image_rule(8)])["image_id"].to_list()
    ['a', 'b']
    """
    return Rule("image", threshold, stat, action=action, weight=weight, missing=missing)


def latent_rule(
    threshold: float,
    *,
    stat: Literal["mean", "max"] = "mean",
    action: Action = "drop_image",
    weight: float = 0.5,
    missing: Missing = "raise",
) -> Rule:
    """Mean (or max) of the 64 latent sigmas ``<= threshold``.

    Examples
    --------
    >>> import numpy as np, polars as pl
    >>> import chexmask_u_tools as cxu
    >>> latent = np.array([[0.8] * 64, [1.5] * 64], dtype=np.float32)
    >>> table = pl.DataFrame({"image_id": ["a", "b"], "latent_sigma": latent})
    >>> rule = cxu.latent_rule(1.2)
    >>> str(rule), cxu.apply_rules(table, [rule])["image_id"].to_list()
    ('latent.mean<=1.2', ['a'])
    """
    return Rule("latent", threshold, stat, action=action, weight=weight, missing=missing)


def dice_rule(
    threshold: float = 0.7,
    *,
    stat: Literal["mean", "max"] = "mean",
    action: Action = "drop_image",
    weight: float = 0.5,
    missing: Missing = "raise",
) -> Rule:
    """``Dice RCA (Mean)`` (or ``(Max)``) ``>= threshold``; 0.7 is the parent dataset's advice.

    Examples
    --------
    >>> import polars as pl
    >>> import chexmask_u_tools as cxu
    >>> table = pl.DataFrame({"image_id": ["a", "b", "c"], "dice_rca_mean": [0.91, 0.64, None]})
    >>> str(cxu.dice_rule())
    'dice.mean>=0.7'
    >>> cxu.apply_rules(table, [cxu.dice_rule(missing="drop")])["image_id"].to_list()
    ['a']
    """
    return Rule("dice", threshold, stat, action=action, weight=weight, missing=missing)


# --------------------------------------------------------------------------- parsing

_RULE_RE = re.compile(
    r"""^\s*(?P<target>[^<>=!:;]+?)\s*
        (?P<op><=|>=|==|!=|<|>|\s(?:not\s+)?in\s)\s*
        (?P<value>[^:;]*?)\s*
        (?::\s*(?P<action>[a-z_]+)\s*(?:=\s*(?P<weight>[^;]*?))?)?\s*
        (?:;\s*missing\s*=\s*(?P<missing>[a-z]+))?\s*$""",
    re.VERBOSE,
)
_RULE_FORM = (
    "expected level[.organ][.stat]OP threshold[:action[=w]][;missing=m] or COLUMN OP value, "
    "e.g. 'image.mean<=8', 'organ.heart.mean<=10:drop_organ', 'view in PA,AP' or 'age>=18'"
)


def _split_target(level: str, rest: str, text: str) -> tuple[str | None, str]:
    """``rest`` of ``level.rest`` -> (organ, stat); an organ-like word that is no organ is reported as one."""
    head, dot, tail = rest.partition(".")
    if head in ORGANS:
        return head, tail
    if (
        level in ("node", "organ")
        and _read_statistic(level, rest, None) is None
        and re.fullmatch(r"[a-z_]+", head)
        and (dot or _did_you_mean(head, ORGANS))
    ):
        raise InputError(f"rule {text!r}: unknown organ {head!r}{_did_you_mean(head, ORGANS)}; expected one of {ORGANS}")
    return None, rest


def parse_rule(text: str) -> AnyRule:
    """Read a rule from its text form.

    Uncertainty and Dice rules: ``level[.organ][.stat]OP threshold[:action[=w]][;missing=m]``;
    column and metadata rules: ``COLUMN OP value[:weight=w][;missing=m]`` with OP one of
    ``==``, ``!=``, ``in``, ``not in`` (values separated by commas) and, for numbers,
    ``<=``, ``<``, ``>=``, ``>``.  ``parse_rule(str(rule)) == rule`` for every valid rule.

    Examples
    --------
    >>> from chexmask_u_tools.select.rules import parse_rule
    >>> parse_rule("organ.heart.mean<=10:drop_organ")
    Rule(level='organ', threshold=10.0, stat='mean', op='<=', organ='heart', action='drop_organ', weight=0.5, missing='raise')
    >>> str(parse_rule("image.q0.9<12:weight=0.3")), str(parse_rule("dice.mean>=0.7;missing=keep"))
    ('image.q0.9<12.0:weight=0.3', 'dice.mean>=0.7;missing=keep')
    >>> parse_rule("view in pa, AP")
    ColumnRule(column='view', op='in', values=('PA', 'AP'), action='drop_image', weight=0.5, missing='raise')
    >>> parse_rule("organ.hart.mean<=9")
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.InputError: rule 'organ.hart.mean<=9': unknown organ 'hart' (did you mean 'heart'?); expected one of ('right_lung', 'left_lung', 'heart')
    """
    match = _RULE_RE.match(text or "")
    if match is None:
        raise InputError(f"cannot read rule {text!r}; {_RULE_FORM}")
    target, op, value = match["target"].strip(), " ".join(match["op"].split()), match["value"]
    action = match["action"] or "drop_image"
    weight = 0.5
    if match["weight"] is not None:
        if action != "weight":
            raise InputError(f"rule {text!r}: only the 'weight' action takes a factor")
        try:
            weight = float(match["weight"])
        except ValueError:
            raise InputError(f"rule {text!r}: weight factor {match['weight']!r} is not a number") from None
    missing = match["missing"] or "raise"
    level, _, rest = target.partition(".")
    if level not in LEVELS:
        values = [part.strip() for part in value.split(",")] if op in ("in", "not in") else [value]
        return ColumnRule(target, op, tuple(values), action=action, weight=weight, missing=missing)
    organ, stat = _split_target(level, rest, text)
    try:
        threshold = float(value)
    except ValueError:
        raise InputError(f"rule {text!r}: threshold {value!r} is not a number") from None
    return Rule(level, threshold, stat, op=op, organ=organ, action=action, weight=weight, missing=missing)


def parse_rules(texts: Iterable[str | AnyRule]) -> list[AnyRule]:
    """:func:`parse_rule` over a list (rule objects pass through).

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> rules = cxu.parse_rules(["image.mean<=8", cxu.dice_rule(0.8), "view in PA,AP"])
    >>> [str(rule) for rule in rules]
    ['image.mean<=8.0', 'dice.mean>=0.8', 'view in PA,AP']
    """
    return [text if isinstance(text, (Rule, ColumnRule)) else parse_rule(text) for text in texts]


# --------------------------------------------------------------------------- applying

_DEFAULT_FIX = "add ';missing=keep' or ';missing=drop' to the rule, or filter those rows out first"


def check_rules(frame: pl.DataFrame | pl.LazyFrame, rules: Iterable[AnyRule | str], *, fix: str | None = None) -> None:
    """Raise unless every rule can be judged on every row that matters.

    * A rule on a column the table lacks raises :class:`InputError` naming the
      column (and, for metadata, ``attach_metadata`` / ``--metadata``), whatever
      its ``missing`` policy.
    * A ``missing="raise"`` rule raises :class:`RecordError` when rows lack its
      data: "rule 'image.mean<=8.0' needs landmarks_std, but 56 of 56 rows have
      none; ...", with the first such image id.  Rows that another
      ``drop_image`` rule removes anyway are not counted.

    ``fix``: the advice ending the message (default: add ``;missing=keep`` or
    ``;missing=drop`` to the rule); callers with other knobs (a keyword, a flag)
    name theirs.  On a ``LazyFrame`` this collects one small aggregate.

    Examples
    --------
    >>> import polars as pl
    >>> import chexmask_u_tools as cxu
    >>> table = pl.DataFrame({"image_id": ["a", "b", "c"], "dice_rca_mean": [0.91, 0.64, None]})
    >>> cxu.check_rules(table, ["dice.mean>=0.7;missing=drop"])  # fine: returns None
    >>> cxu.check_rules(table, ["dice.mean>=0.7"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.RecordError: rule 'dice.mean>=0.7' needs dice_rca_mean, but 1 of 3 rows have none; ...
    >>> cxu.check_rules(table, ["view in PA"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.InputError: rule 'view in PA' needs column 'view', which the table does not have; ...
    """
    rules = parse_rules(rules)
    columns = frame.collect_schema().names()
    present = set(columns)
    for rule in rules:
        if rule.reads(present) not in present:
            raise rule.missing_column_error(columns)
    strict = [rule for rule in rules if rule.missing == "raise"]
    if not strict:
        return
    drops = [rule for rule in rules if rule.action == "drop_image"]
    id_column = "image_id" if "image_id" in present else None
    exprs: list[pl.Expr] = []
    for i, rule in enumerate(strict):
        others = [other.passes(columns=present).fill_null(True) for other in drops if other is not rule]
        null = pl.col(rule.reads(present)).is_null()
        judged = pl.all_horizontal(others) if others else None
        lacking = null if judged is None else judged & null
        exprs.append((pl.len() if judged is None else judged.sum()).alias(f"rows{i}"))
        exprs.append(lacking.sum().alias(f"lacking{i}"))
        if id_column:
            exprs.append(pl.col(id_column).filter(lacking).first().alias(f"id{i}"))
    stats = frame.lazy().select(exprs).collect().row(0, named=True)
    for i, rule in enumerate(strict):
        count = stats[f"lacking{i}"]
        if count:
            raise RecordError(
                f"rule {rule.name!r} needs {rule.needs}, but {count} of {stats[f'rows{i}']} rows have none; "
                f"{fix or _DEFAULT_FIX}",
                image_id=stats.get(f"id{i}"),
                column=rule.reads(present),
            )


def apply_rules(frame: Frame, rules: Iterable[AnyRule | str], *, check_missing: bool = True) -> Frame:
    """Apply rules to a canonical table (eager or lazy); the result has the same kind.

    Parameters
    ----------
    frame:
        Canonical table or scan (needs the columns the rules read; see ``Rule.needs``).
    rules:
        :class:`Rule` / :class:`ColumnRule` objects or their text forms, in any
        order (they commute).
    check_missing:
        Run :func:`check_rules` first: raise for ``missing="raise"`` rules when
        needed data is null, and for rules on absent columns.  On a
        ``LazyFrame`` this collects one small aggregate over the needed
        columns (a projection of the scan) before returning.

    Returns
    -------
    The rows passing every ``drop_image`` rule, plus columns
    ``mask_valid_<organ>`` (Boolean, False where a ``drop_organ`` rule fails;
    an existing column is AND-ed so that successive calls compose) and
    ``rule_weight`` (Float32, product of the failing ``weight`` rules' factors,
    multiplied into an existing column).

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> table = cxu.load_sample()
    >>> kept = cxu.apply_rules(table, ["dice.mean>=0.7", "image.q0.9<=14", "organ.heart.mean<=9:drop_organ"])
    >>> kept.height, table.height, int(kept["mask_valid_heart"].sum())
    (157, 200, 133)
    >>> rows_without_std = table.head(3).with_columns(landmarks_std=None, node_sigma_mean=None)
    >>> cxu.apply_rules(rows_without_std, ["image.mean<=8"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.RecordError: rule 'image.mean<=8.0' needs landmarks_std, but 3 of 3 rows have none; ...
    """
    frame = as_polars(frame, argument="frame")
    rules = parse_rules(rules)
    if check_missing:
        check_rules(frame, rules)
    names = set(frame.collect_schema().names())
    drop = [rule.pass_expr(columns=names) for rule in rules if rule.action == "drop_image"]
    if drop:
        frame = frame.filter(pl.all_horizontal(drop))
    valid_exprs = []
    for organ, column in mask_valid_columns().items():
        conditions = [
            rule.pass_expr(organ, names) for rule in rules if rule.action == "drop_organ" and organ in rule.organs
        ]
        if column in names:
            conditions.append(pl.col(column).fill_null(True))
        valid = pl.all_horizontal(conditions) if conditions else pl.lit(True)
        valid_exprs.append(valid.alias(column))
    weight = pl.col(RULE_WEIGHT_COLUMN).cast(pl.Float32) if RULE_WEIGHT_COLUMN in names else pl.lit(1.0, pl.Float32)
    for rule in rules:
        if rule.action == "weight":
            weight = weight * pl.when(rule.pass_expr(columns=names)).then(1.0).otherwise(rule.weight).cast(pl.Float32)
    return frame.with_columns(*valid_exprs, weight.cast(pl.Float32).alias(RULE_WEIGHT_COLUMN))


def rule_report(frame: pl.DataFrame | pl.LazyFrame, rules: Iterable[AnyRule | str]) -> pl.DataFrame:
    """How many rows each rule fails, without applying anything (one pass over the needed columns).

    Returns a DataFrame with one row per rule, in the given order:

    ``rule``, ``action``
        text form and action;
    ``rows``
        rows in ``frame``;
    ``missing``
        rows lacking the needed data;
    ``failed``
        rows failing the rule on its own (for organ-wise rules, rows where any
        selected organ fails; missing rows count as failed only under
        ``missing="drop"``);
    ``removed``
        ``drop_image`` rules: rows removed by this rule after the
        ``drop_image`` rules above it (these add up to ``rows`` minus the
        rows kept); null for the other actions, which remove nothing;
    ``remaining``
        rows left after the ``drop_image`` rules down to this one.

    Rules on columns the table lacks raise :class:`InputError` (see :func:`check_rules`).

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> report = cxu.rule_report(cxu.load_sample(), ["dice.mean>=0.7", "image.mean<=8"])
    >>> report.select("rule", "failed", "removed", "remaining").rows()
    [('dice.mean>=0.7', 21, 21, 179), ('image.mean<=8.0', 96, 75, 104)]
    """
    frame = as_polars(frame, argument="frame")
    rules = parse_rules(rules)
    columns = frame.collect_schema().names()
    names = set(columns)
    for rule in rules:
        if rule.reads(names) not in names:
            raise rule.missing_column_error(columns)
    exprs: list[pl.Expr] = [pl.len().alias("rows")]
    kept_so_far: pl.Expr | None = None  # None: nothing removed yet
    for i, rule in enumerate(rules):
        passed = rule.pass_expr(columns=names)
        exprs.append((~passed).sum().alias(f"failed{i}"))
        exprs.append(pl.col(rule.reads(names)).is_null().sum().alias(f"missing{i}"))
        if rule.action == "drop_image":
            exprs.append((~passed if kept_so_far is None else kept_so_far & ~passed).sum().alias(f"removed{i}"))
            kept_so_far = passed if kept_so_far is None else kept_so_far & passed
        exprs.append((pl.len() if kept_so_far is None else kept_so_far.sum()).alias(f"remaining{i}"))
    stats = frame.lazy().select(exprs).collect().row(0, named=True)
    return pl.DataFrame(
        {
            "rule": [rule.name for rule in rules],
            "action": [rule.action for rule in rules],
            "rows": [stats["rows"]] * len(rules),
            "missing": [stats[f"missing{i}"] for i in range(len(rules))],
            "failed": [stats[f"failed{i}"] for i in range(len(rules))],
            "removed": [stats.get(f"removed{i}") for i in range(len(rules))],
            "remaining": [stats[f"remaining{i}"] for i in range(len(rules))],
        },
        schema={
            "rule": pl.String,
            "action": pl.String,
            "rows": pl.Int64,
            "missing": pl.Int64,
            "failed": pl.Int64,
            "removed": pl.Int64,
            "remaining": pl.Int64,
        },
    )
