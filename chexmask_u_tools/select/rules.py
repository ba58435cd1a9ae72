"""Uncertainty and quality rules: which rows (and organs) to train on, and how much.

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

(``<`` / ``>`` give strict comparisons.)  Actions on failure:

* ``"drop_image"``: the row is removed;
* ``"drop_organ"``: the row stays, the failing organ's mask is marked missing
  (column ``mask_valid_<organ>`` becomes False; the datasets return it as the
  per-organ ``mask_valid`` flag so that a loss can ignore that channel).  Only
  for ``node`` and ``organ`` rules, which are evaluated organ by organ;
* ``"weight"``: the row stays and its ``rule_weight`` is multiplied by the
  rule's ``weight`` factor (once per rule, however many organs fail).

Rules compose: :func:`apply_rules` applies any list of them (uncertainty and
Dice RCA alike) to a ``DataFrame`` or ``LazyFrame``.  Every rule is a polars
expression, so on a lazy scan the row filter runs in the scan (polars pushes
the Dice and stored-summary comparisons into parquet scans; list statistics
such as quantiles filter right after the scan, before anything else).  Where
the table has the canonical summary column of a statistic (``node_sigma_mean``,
``node_sigma_max``, ``sigma_<organ>``, ``latent_sigma_mean``) the rule reads
it instead of recomputing it from ``landmarks_std`` (one float per row instead
of 240); the other statistics are computed from ``landmarks_std``.

Rows without the data a rule needs (``landmarks_std`` for node / organ / image
rules, ``latent_sigma`` for latent rules, the Dice column for dice rules):
``missing="raise"`` (default) raises :class:`~chexmask_u_tools.errors.RecordError`
naming the rule, how many rows lack the data and the first such image id;
``missing="keep"`` lets them pass, ``missing="drop"`` makes them fail.

Rules also have a text form, used by the command line and by ``str(rule)``
(:func:`parse_rule` reads it back)::

    image.mean<=8                 image.q0.9<12:weight=0.3
    organ.heart.mean<=10:drop_organ   node.left_lung.frac0.05<=25:drop_organ
    latent.mean<=1.1              dice.mean>=0.7;missing=keep
"""

from __future__ import annotations

import math
import re
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import polars as pl

from chexmask_u_tools.errors import InputError, RecordError
from chexmask_u_tools.layout import ORGAN_SIZES, ORGAN_SLICES, ORGANS
from chexmask_u_tools.schema import ORGAN_SIGMA_COLUMNS
from chexmask_u_tools.select.uncertainty import latent_sigma_mean, node_sigma, node_sigma_max, node_sigma_mean, node_sigma_quantile

__all__ = [
    "ACTIONS",
    "LEVELS",
    "Rule",
    "apply_rules",
    "dice_rule",
    "image_rule",
    "latent_rule",
    "mask_valid_columns",
    "node_rule",
    "organ_rule",
    "parse_rule",
    "parse_rules",
    "rule_report",
]

Level = Literal["node", "organ", "image", "latent", "dice"]
Action = Literal["drop_image", "drop_organ", "weight"]
Missing = Literal["raise", "keep", "drop"]
Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)

LEVELS: tuple[str, ...] = ("node", "organ", "image", "latent", "dice")
ACTIONS: tuple[str, ...] = ("drop_image", "drop_organ", "weight")
_MISSING: tuple[str, ...] = ("raise", "keep", "drop")
_STATS: dict[str, tuple[str, ...]] = {
    "node": ("all",),  # plus fracF
    "organ": ("mean", "max"),
    "image": ("mean", "max", "median"),  # plus qF
    "latent": ("mean", "max"),
    "dice": ("mean", "max"),
}
_NEEDS: dict[str, str] = {"node": "landmarks_std", "organ": "landmarks_std", "image": "landmarks_std", "latent": "latent_sigma"}

RULE_WEIGHT_COLUMN = "rule_weight"


def mask_valid_columns() -> dict[str, str]:
    """Organ -> name of the boolean column :func:`apply_rules` writes (``mask_valid_<organ>``)."""
    return {organ: f"mask_valid_{organ}" for organ in ORGANS}


def _stat_fraction(stat: str, prefix: str) -> float | None:
    if not stat.startswith(prefix):
        return None
    try:
        value = float(stat[len(prefix):])
    except ValueError:
        return None
    return value if 0.0 <= value <= 1.0 else None


@dataclass(frozen=True)
class Rule:
    """One threshold rule (see the module docstring for levels, statistics and actions).

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
        ``dice``: ``"mean"``/``"max"``.
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
    """

    level: str
    threshold: float
    stat: str = ""
    op: str = ""
    organ: str | None = None
    action: str = "drop_image"
    weight: float = 0.5
    missing: str = "raise"

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise InputError(f"rule level must be one of {LEVELS}, got {self.level!r}")
        default_stat = "all" if self.level == "node" else "mean"
        object.__setattr__(self, "stat", self.stat or default_stat)
        object.__setattr__(self, "op", self.op or (">=" if self.level == "dice" else "<="))
        try:
            threshold = float(self.threshold)
        except (TypeError, ValueError):
            raise InputError(f"rule threshold must be a number, got {self.threshold!r}") from None
        if not math.isfinite(threshold):
            raise InputError(f"rule threshold must be finite, got {threshold}")
        object.__setattr__(self, "threshold", threshold)
        stat_ok = self.stat in _STATS[self.level] or (
            (self.level == "node" and _stat_fraction(self.stat, "frac") is not None)
            or (self.level == "image" and _stat_fraction(self.stat, "q") is not None)
        )
        if not stat_ok:
            extra = {"node": " or frac<f>", "image": " or q<q>"}.get(self.level, "")
            raise InputError(f"{self.level} rules take stat {_STATS[self.level]}{extra}, got {self.stat!r}")
        allowed_ops = (">=", ">") if self.level == "dice" else ("<=", "<")
        if self.op not in allowed_ops:
            raise InputError(f"{self.level} rules pass when the value is {' or '.join(allowed_ops)} the threshold, got op {self.op!r}")
        if self.organ is not None:
            if self.level not in ("node", "organ"):
                raise InputError(f"{self.level} rules cover the whole image; organ={self.organ!r} is only for node/organ rules")
            if self.organ not in ORGANS:
                raise InputError(f"unknown organ {self.organ!r}; expected one of {ORGANS}")
        if self.action not in ACTIONS:
            raise InputError(f"rule action must be one of {ACTIONS}, got {self.action!r}")
        if self.action == "drop_organ" and self.level not in ("node", "organ"):
            raise InputError(f"action 'drop_organ' needs an organ-wise (node or organ) rule, not a {self.level} rule")
        weight = float(self.weight)
        if not 0.0 <= weight <= 1.0:
            raise InputError(f"rule weight factor must lie in [0, 1], got {self.weight}")
        # The factor means nothing for the drop actions; a fixed value keeps equality meaningful.
        object.__setattr__(self, "weight", weight if self.action == "weight" else 0.5)
        if self.missing not in _MISSING:
            raise InputError(f"rule missing policy must be one of {_MISSING}, got {self.missing!r}")

    # ------------------------------------------------------------------ text form
    def __str__(self) -> str:
        parts = [self.level]
        if self.organ is not None:
            parts.append(self.organ)
        parts.append(self.stat)
        text = ".".join(parts) + f"{self.op}{self.threshold!r}"
        if self.action != "drop_image":
            text += f":{self.action}" + (f"={self.weight!r}" if self.action == "weight" else "")
        if self.missing != "raise":
            text += f";missing={self.missing}"
        return text

    @property
    def name(self) -> str:
        """The rule's text form, used in reports and error messages."""
        return str(self)

    @property
    def needs(self) -> str:
        """The column whose data this rule needs (null there = missing data)."""
        if self.level == "dice":
            return "dice_rca_max" if self.stat == "max" else "dice_rca_mean"
        return _NEEDS[self.level]

    def stored_column(self, organ: str | None = None) -> str | None:
        """The canonical summary column holding this rule's statistic, if there is one."""
        if self.level == "image" and self.stat in ("mean", "max"):
            return f"node_sigma_{self.stat}"
        if self.level == "organ" and self.stat == "mean" and organ is not None:
            return ORGAN_SIGMA_COLUMNS[organ]
        if self.level == "latent" and self.stat == "mean":
            return "latent_sigma_mean"
        return None

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
        if self.level not in ("node", "organ"):
            return ()
        return (self.organ,) if self.organ is not None else ORGANS

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
        stored = self.stored_column(organ)
        if stored is not None and stored in columns:
            return pl.col(stored).cast(pl.Float32)
        if self.level in ("node", "organ"):
            if organ not in ORGANS:
                raise InputError(f"{self.level} rules are evaluated per organ; pass one of {ORGANS}")
            part = ORGAN_SLICES[organ]
            sigmas = node_sigma().arr.to_list().list.slice(part.start, ORGAN_SIZES[organ])
            if self.level == "organ":
                return (sigmas.list.mean() if self.stat == "mean" else sigmas.list.max()).cast(pl.Float32)
            if self.stat == "all":
                return sigmas.list.max().cast(pl.Float32)
            fails = ~self._compare(pl.element())
            return sigmas.list.eval(fails).list.mean().cast(pl.Float32)
        if self.level == "image":
            if self.stat == "mean":
                return node_sigma_mean()
            if self.stat == "max":
                return node_sigma_max()
            q = 0.5 if self.stat == "median" else float(self.stat[1:])
            return node_sigma_quantile(q)
        if self.level == "latent":
            if self.stat == "mean":
                return latent_sigma_mean()
            return pl.col("latent_sigma").arr.max().cast(pl.Float32)
        return pl.col(self.needs).cast(pl.Float64)

    def pass_expr(self, organ: str | None = None, columns: Container[str] = ()) -> pl.Expr:
        """Boolean expression: True where the row (organ) passes; missing data per ``missing``.

        Organ-wise rules without ``organ`` pass only when every selected organ passes.
        """
        if self.level in ("node", "organ") and organ is None:
            return pl.all_horizontal([self.pass_expr(o, columns) for o in self.organs])
        value = self.value_expr(organ, columns)
        if self.level == "node" and self.stat != "all":
            passed = value <= _stat_fraction(self.stat, "frac")
        else:
            passed = self._compare(value)
        return passed.fill_null(self.missing == "keep")


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
    """Every node sigma of the organ(s) ``<= threshold`` px (or at most ``fraction`` of them above)."""
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
    """Mean (or max) node sigma of each selected organ ``<= threshold`` px."""
    return Rule("organ", threshold, stat, organ=organ, action=action, weight=weight, missing=missing)


def image_rule(
    threshold: float,
    *,
    stat: str = "mean",
    action: Action = "drop_image",
    weight: float = 0.5,
    missing: Missing = "raise",
) -> Rule:
    """Image-level node sigma (``"mean"``, ``"max"``, ``"median"``, ``"q0.9"``...) ``<= threshold`` px."""
    return Rule("image", threshold, stat, action=action, weight=weight, missing=missing)


def latent_rule(
    threshold: float,
    *,
    stat: Literal["mean", "max"] = "mean",
    action: Action = "drop_image",
    weight: float = 0.5,
    missing: Missing = "raise",
) -> Rule:
    """Mean (or max) of the 64 latent sigmas ``<= threshold``."""
    return Rule("latent", threshold, stat, action=action, weight=weight, missing=missing)


def dice_rule(
    threshold: float = 0.7,
    *,
    stat: Literal["mean", "max"] = "mean",
    action: Action = "drop_image",
    weight: float = 0.5,
    missing: Missing = "raise",
) -> Rule:
    """``Dice RCA (Mean)`` (or ``(Max)``) ``>= threshold``; 0.7 is the parent dataset's advice."""
    return Rule("dice", threshold, stat, action=action, weight=weight, missing=missing)


# --------------------------------------------------------------------------- parsing

_RULE_RE = re.compile(
    r"""^\s*(?P<target>[a-z_]+(?:\.[a-z_]+)?(?:\.[a-z_]*[0-9.eE+-]*)?)\s*
        (?P<op><=|>=|<|>)\s*
        (?P<threshold>[-+0-9.eE]+)\s*
        (?::\s*(?P<action>[a-z_]+)\s*(?:=\s*(?P<weight>[-+0-9.eE]+))?)?\s*
        (?:;\s*missing\s*=\s*(?P<missing>[a-z]+))?\s*$""",
    re.VERBOSE,
)


def parse_rule(text: str) -> Rule:
    """Read a rule from its text form ``level[.organ][.stat]OP threshold[:action[=w]][;missing=m]``.

    Examples: ``"image.q0.9<=12"``, ``"organ.heart.mean<=10:drop_organ"``,
    ``"node.frac0.05<=25:weight=0.2"``, ``"dice.mean>=0.7;missing=keep"``.
    ``parse_rule(str(rule)) == rule`` for every valid rule.
    """
    match = _RULE_RE.match(text or "")
    if match is None:
        raise InputError(
            f"cannot read rule {text!r}; expected level[.organ][.stat]OP threshold[:action[=w]][;missing=m], "
            "e.g. 'image.mean<=8' or 'organ.heart.mean<=10:drop_organ'"
        )
    target = match["target"]
    level, _, rest = target.partition(".")
    organ = None
    for candidate in ORGANS:
        if rest == candidate or rest.startswith(candidate + "."):
            organ, rest = candidate, rest[len(candidate) + 1 :]
            break
    try:
        threshold = float(match["threshold"])
    except ValueError:
        raise InputError(f"rule {text!r}: threshold {match['threshold']!r} is not a number") from None
    action = match["action"] or "drop_image"
    weight = 0.5
    if match["weight"] is not None:
        if action != "weight":
            raise InputError(f"rule {text!r}: only the 'weight' action takes a factor")
        weight = float(match["weight"])
    return Rule(
        level,
        threshold,
        rest,
        op=match["op"],
        organ=organ,
        action=action,
        weight=weight,
        missing=match["missing"] or "raise",
    )


def parse_rules(texts: Iterable[str | Rule]) -> list[Rule]:
    """:func:`parse_rule` over a list (Rule objects pass through)."""
    return [text if isinstance(text, Rule) else parse_rule(text) for text in texts]


# --------------------------------------------------------------------------- applying


def _check_missing(frame: pl.DataFrame | pl.LazyFrame, rules: Sequence[Rule]) -> None:
    strict = [rule for rule in rules if rule.missing == "raise"]
    if not strict:
        return
    columns = set(frame.collect_schema().names())
    needed = sorted({rule.reads(columns) for rule in strict})
    absent = [c for c in needed if c not in columns]
    if absent:
        rule = next(r for r in strict if r.reads(columns) in absent)
        raise InputError(f"rule {rule.name!r} needs column {rule.needs!r}, which the table does not have")
    id_column = "image_id" if "image_id" in columns else None
    exprs = []
    for column in needed:
        exprs.append(pl.col(column).is_null().sum().alias(f"n:{column}"))
        if id_column:
            exprs.append(pl.col(id_column).filter(pl.col(column).is_null()).first().alias(f"id:{column}"))
    exprs.append(pl.len().alias("n_rows"))
    stats = frame.lazy().select(exprs).collect().row(0, named=True)
    for column in needed:
        count = stats[f"n:{column}"]
        if count:
            rule = next(r for r in strict if r.reads(columns) == column)
            raise RecordError(
                f"rule {rule.name!r} needs {rule.needs}, but {count} of {stats['n_rows']} rows have none; "
                f"add ';missing=keep' or ';missing=drop' to the rule, or filter those rows out first",
                image_id=stats.get(f"id:{column}"),
                column=column,
            )


def apply_rules(frame: Frame, rules: Iterable[Rule | str], *, check_missing: bool = True) -> Frame:
    """Apply rules to a canonical table (eager or lazy); the result has the same kind.

    Parameters
    ----------
    frame:
        Canonical table or scan (needs the columns the rules read; see ``Rule.needs``).
    rules:
        Rules or their text forms, in any order (they commute).
    check_missing:
        Raise for ``missing="raise"`` rules when needed data is null.  On a
        ``LazyFrame`` this collects one small aggregate over the needed columns
        (a projection of the scan) before returning.

    Returns
    -------
    The rows passing every ``drop_image`` rule, plus columns
    ``mask_valid_<organ>`` (Boolean, False where a ``drop_organ`` rule fails;
    an existing column is AND-ed so that successive calls compose) and
    ``rule_weight`` (Float32, product of the failing ``weight`` rules' factors,
    multiplied into an existing column).
    """
    rules = parse_rules(rules)
    if check_missing:
        _check_missing(frame, rules)
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


def rule_report(frame: pl.DataFrame | pl.LazyFrame, rules: Iterable[Rule | str]) -> pl.DataFrame:
    """How many rows each rule fails, without applying anything.

    Returns a DataFrame with one row per rule: ``rule`` (text form), ``action``,
    ``rows`` (rows in ``frame``), ``missing`` (rows lacking the needed data),
    ``failed`` (rows failing; for organ-wise rules, rows where any selected
    organ fails; missing rows count as failed only under ``missing="drop"``).
    """
    rules = parse_rules(rules)
    names = set(frame.collect_schema().names())
    exprs: list[pl.Expr] = [pl.len().alias("rows")]
    for i, rule in enumerate(rules):
        exprs.append((~rule.pass_expr(columns=names)).sum().alias(f"failed{i}"))
        null = pl.col(rule.reads(names)).is_null().sum() if rule.reads(names) in names else pl.len()
        exprs.append(null.alias(f"missing{i}"))
    stats = frame.lazy().select(exprs).collect().row(0, named=True)
    return pl.DataFrame(
        {
            "rule": [rule.name for rule in rules],
            "action": [rule.action for rule in rules],
            "rows": [stats["rows"]] * len(rules),
            "missing": [stats[f"missing{i}"] for i in range(len(rules))],
            "failed": [stats[f"failed{i}"] for i in range(len(rules))],
        },
        schema={"rule": pl.String, "action": pl.String, "rows": pl.Int64, "missing": pl.Int64, "failed": pl.Int64},
    )
