"""Named row filters on the canonical table: keyword shortcuts for rules, pushed into the scan.

Each keyword of :func:`filter_rules` is a shortcut for one rule of
:mod:`chexmask_u_tools.select.rules` (the one filter vocabulary; the command
line's ``filter`` and ``export`` take the same rules with ``--rule``):

==========================  ==========================================
keyword                     rule
==========================  ==========================================
``sources=[...]``           ``source in CheXpert,Padchest``
``frames=[...]``            ``frame in preprocessed``
``min_dice_rca_mean=x``     ``dice.mean>=x``
``min_dice_rca_max=x``      ``dice.max>=x``
``max_node_sigma_mean=x``   ``image.mean<=x``
``max_node_sigma_max=x``    ``image.max<=x``
``max_organ_sigma=x``       ``organ.<organ>.mean<=x`` for each organ (or a
                            mapping ``{"heart": x, ...}``), removing the row
``max_latent_sigma_mean=x`` ``latent.mean<=x``
``image_ids=[...]``         ``image_id in a,b,...``
==========================  ==========================================

:func:`apply_filters` combines them (and any further ``rules=``) into one
``LazyFrame.filter`` so polars pushes the predicate into the parquet / CSV
scan (row groups of the cache are skipped by their statistics);
:func:`filter_report` counts what each criterion removes, through
:func:`~chexmask_u_tools.select.rules.rule_report`.

Missing values: a row whose filtered quantity is null (no Dice RCA, no std,
no latents) cannot be judged.  ``missing="raise"`` (default) raises
:class:`~chexmask_u_tools.errors.RecordError` saying how many rows lack it
(rows another criterion removes anyway are not counted);
``missing="drop"`` removes them, ``missing="keep"`` keeps them.

Thresholds are inclusive: ``min_*`` keeps ``value >= min``, ``max_*`` keeps
``value <= max``.  Sigmas are in pixels of the row's frame.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import polars as pl

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.layout import ORGANS
from chexmask_u_tools.schema import CANONICAL_SCHEMA, as_polars
from chexmask_u_tools.select.rules import (
    MISSING_POLICIES,
    AnyRule,
    ColumnRule,
    Missing,
    Rule,
    check_rules,
    parse_rules,
    require_organ,
    rule_report,
)
from chexmask_u_tools.select.selection import normalize_frames, normalize_sources

__all__ = ["FILTER_CRITERIA", "apply_filters", "filter_criteria", "filter_report", "filter_rules"]

#: The keywords of :func:`filter_rules`, in report order.
FILTER_CRITERIA: tuple[str, ...] = (
    "sources",
    "frames",
    "min_dice_rca_mean",
    "min_dice_rca_max",
    "max_node_sigma_mean",
    "max_node_sigma_max",
    "max_organ_sigma",
    "max_latent_sigma_mean",
    "image_ids",
)

_FIX = (
    "pass missing='drop' to remove those rows or missing='keep' to keep them "
    "(for a rule, add ';missing=drop' or ';missing=keep'), or filter them out first"
)


def _threshold(name: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name} must be a number, got {value!r}") from error
    if math.isnan(number):
        raise InputError(f"{name} must not be NaN")
    return number


#: The command line's spellings (``--max-node-sigma``, ``--min-dice`` ...) -> the keyword they stand for.
_FLAG_SPELLINGS: dict[str, str] = {
    "max_node_sigma": "max_node_sigma_mean",
    "min_dice": "min_dice_rca_mean",
    "max_latent_sigma": "max_latent_sigma_mean",
}


def _check_keywords(criteria: Mapping[str, Any]) -> None:
    for name in criteria:
        if name not in FILTER_CRITERIA:
            match = difflib.get_close_matches(name, FILTER_CRITERIA, n=1, cutoff=0.5)
            closest = _FLAG_SPELLINGS.get(name) or (match[0] if match else None)
            hint = f" (did you mean {closest!r}?)" if closest else ""
            raise InputError(f"unknown filter criterion {name!r}{hint}; expected one of {FILTER_CRITERIA}, or rules=[...]")


def filter_rules(
    *,
    sources: Sequence[str] | str | None = None,
    frames: Sequence[str] | str | None = None,
    min_dice_rca_mean: float | None = None,
    min_dice_rca_max: float | None = None,
    max_node_sigma_mean: float | None = None,
    max_node_sigma_max: float | None = None,
    max_organ_sigma: float | Mapping[str, float] | None = None,
    max_latent_sigma_mean: float | None = None,
    image_ids: Iterable[str] | str | None = None,
    missing: Missing = "raise",
) -> dict[str, AnyRule]:
    """The rules the filter keywords stand for, named, in a fixed order (the order of :func:`filter_report`).

    Parameters
    ----------
    sources, frames:
        Keep these parent databases (any accepted spelling) / frames.
    min_dice_rca_mean, min_dice_rca_max:
        Keep ``dice_rca_mean >= x`` / ``dice_rca_max >= x`` (the parent
        dataset advises ``dice_rca_mean >= 0.7``).
    max_node_sigma_mean, max_node_sigma_max:
        Keep images whose mean / largest node sigma is ``<= x`` pixels.
    max_organ_sigma:
        One threshold for all three organs' mean node sigma, or a mapping
        ``{"right_lung": x, "heart": y}``; one criterion per organ.
    max_latent_sigma_mean:
        Keep ``latent_sigma_mean <= x``.
    image_ids:
        Keep only these image ids (at least one).
    missing:
        ``"raise"``, ``"drop"`` or ``"keep"``: rows lacking a filtered value.

    Returns
    -------
    ``{name: rule}``; names are the keyword names, with
    ``max_organ_sigma[<organ>]`` per organ.  Unset criteria are absent.

    Examples
    --------
    >>> from chexmask_u_tools.select.filtering import filter_rules
    >>> {name: str(rule) for name, rule in filter_rules(sources="chexpert", max_node_sigma_mean=8).items()}
    {'sources': 'source in CheXpert', 'max_node_sigma_mean': 'image.mean<=8.0'}
    """
    if missing not in MISSING_POLICIES:
        raise InputError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
    rules: dict[str, AnyRule] = {}
    wanted_sources = normalize_sources(sources)
    if wanted_sources is not None:
        rules["sources"] = ColumnRule("source", "in", tuple(sorted(wanted_sources)), missing=missing)
    wanted_frames = normalize_frames(frames)
    if wanted_frames is not None:
        rules["frames"] = ColumnRule("frame", "in", tuple(sorted(wanted_frames)), missing=missing)
    bounds: list[tuple[str, float | None, str, str | None]] = [
        ("min_dice_rca_mean", min_dice_rca_mean, "dice.mean", None),
        ("min_dice_rca_max", min_dice_rca_max, "dice.max", None),
        ("max_node_sigma_mean", max_node_sigma_mean, "image.mean", None),
        ("max_node_sigma_max", max_node_sigma_max, "image.max", None),
    ]
    if max_organ_sigma is not None:
        per_organ = (
            dict(max_organ_sigma) if isinstance(max_organ_sigma, Mapping) else dict.fromkeys(ORGANS, max_organ_sigma)
        )
        for organ, value in per_organ.items():
            require_organ(organ, argument="max_organ_sigma")
            bounds.append((f"max_organ_sigma[{organ}]", value, "organ.mean", organ))
    bounds.append(("max_latent_sigma_mean", max_latent_sigma_mean, "latent.mean", None))
    for name, value, target, organ in bounds:
        number = _threshold(name, value)
        if number is None:
            continue
        level, stat = target.split(".")
        rules[name] = Rule(level, number, stat, organ=organ, missing=missing)
    if image_ids is not None:
        ids = (image_ids,) if isinstance(image_ids, str) else tuple(image_ids)
        if not ids:
            raise InputError("image_ids is empty; pass at least one id (or leave it unset to keep every row)")
        rules["image_ids"] = ColumnRule("image_id", "in", ids, missing=missing)
    return rules


def _named_rules(rules: Iterable[AnyRule | str], missing: Missing, criteria: Mapping[str, Any]) -> dict[str, AnyRule]:
    _check_keywords(criteria)
    named = filter_rules(missing=missing, **criteria)
    for rule in parse_rules(rules):
        if rule.action != "drop_image":
            raise InputError(
                f"rule {rule.name!r} has action {rule.action!r}; filters keep or remove whole rows: "
                "use apply_rules (command line: export --rule) to mark organs or weight rows"
            )
        named[rule.name] = rule
    return named


def filter_criteria(
    *,
    columns: Iterable[str] | None = None,
    **criteria: Any,
) -> dict[str, pl.Expr]:
    """Named keep-conditions (polars expressions) of the keywords of :func:`filter_rules`.

    ``columns``: the table's column names (default: the canonical schema, whose
    stored summaries ``node_sigma_mean``, ``sigma_<organ>``... the conditions
    read).  Rows lacking a value fail the condition unless ``missing="keep"``;
    the conditions themselves cannot raise, so check the data first with
    :func:`~chexmask_u_tools.select.rules.check_rules` (as
    :func:`apply_filters` does).

    Examples
    --------
    >>> from chexmask_u_tools.select.filtering import filter_criteria
    >>> list(filter_criteria(min_dice_rca_mean=0.7, max_organ_sigma={"heart": 9}))
    ['min_dice_rca_mean', 'max_organ_sigma[heart]']
    """
    _check_keywords({name: value for name, value in criteria.items() if name != "missing"})
    names = set(CANONICAL_SCHEMA) if columns is None else set(columns)
    return {name: rule.pass_expr(columns=names) for name, rule in filter_rules(**criteria).items()}


def apply_filters(
    lf: pl.LazyFrame | pl.DataFrame,
    *,
    rules: Iterable[AnyRule | str] = (),
    missing: Missing = "raise",
    check_missing: bool = True,
    **criteria: Any,
) -> pl.LazyFrame | pl.DataFrame:
    """Keep the rows meeting every criterion, as one pushed-down filter; the result has the input's kind.

    Parameters
    ----------
    lf:
        Canonical table or scan.
    rules:
        Further rules (objects or text forms, e.g. ``"view in PA,AP"``); only
        ``drop_image`` rules (use :func:`~chexmask_u_tools.select.rules.apply_rules`
        to mark organs or weight rows).
    missing:
        Rows lacking a value that a keyword criterion filters on: ``"raise"``
        (default), ``"drop"`` or ``"keep"``.  Rules carry their own policy.
    check_missing:
        Check the data first (:func:`~chexmask_u_tools.select.rules.check_rules`);
        on a ``LazyFrame`` this collects one small aggregate.
    **criteria:
        Keywords of :func:`filter_rules`; an unknown keyword raises
        :class:`~chexmask_u_tools.errors.InputError` naming the closest one.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> table = cxu.load_sample()
    >>> cxu.apply_filters(table, min_dice_rca_mean=0.7, max_node_sigma_mean=8.0).height
    104
    >>> cxu.apply_filters(table, max_node_sigma=8)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.InputError: unknown filter criterion 'max_node_sigma' (did you mean 'max_node_sigma_mean'?); ...
    >>> no_std = table.with_columns(landmarks_std=None, node_sigma_mean=None)
    >>> cxu.apply_filters(no_std, max_node_sigma_mean=8)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.RecordError: rule 'image.mean<=8.0' needs landmarks_std, but 200 of 200 rows have none; ...
    """
    lf = as_polars(lf, argument="lf")
    named = _named_rules(rules, missing, criteria)
    if not named:
        return lf
    if check_missing:
        check_rules(lf, named.values(), fix=_FIX)
    names = set(lf.collect_schema().names())
    return lf.filter(pl.all_horizontal([rule.pass_expr(columns=names) for rule in named.values()]))


def filter_report(
    lf: pl.LazyFrame | pl.DataFrame,
    *,
    rules: Iterable[AnyRule | str] = (),
    missing: Missing = "raise",
    check_missing: bool = True,
    **criteria: Any,
) -> pl.DataFrame:
    """How many rows each criterion removes, in one pass over the needed columns.

    Takes the arguments of :func:`apply_filters` and checks the data the same
    way (so it raises where :func:`apply_filters` would, unless
    ``check_missing=False``); the counts come from
    :func:`~chexmask_u_tools.select.rules.rule_report`.

    Returns
    -------
    ``DataFrame`` with one row per criterion (keywords in :func:`filter_rules`
    order, then the rules by their text form) preceded by a ``(input)`` row:

    ``criterion``
        the criterion's name;
    ``removed``
        rows removed by this criterion after the criteria above it were
        applied (sequential; these add up to input minus kept);
    ``removed_alone``
        rows this criterion would remove on its own;
    ``remaining``
        rows left after this criterion and the ones above it.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> cxu.filter_report(cxu.load_sample(), min_dice_rca_mean=0.7, max_node_sigma_mean=8.0).rows()
    [('(input)', None, None, 200), ('min_dice_rca_mean', 21, 21, 179), ('max_node_sigma_mean', 75, 96, 104)]
    """
    lf = as_polars(lf, argument="lf")
    named = _named_rules(rules, missing, criteria)
    if named:
        if check_missing:
            check_rules(lf, named.values(), fix=_FIX)
        report = rule_report(lf, list(named.values()))
        total = int(report["rows"][0])
        body = list(zip(named, report["removed"], report["failed"], report["remaining"], strict=True))
    else:
        total = int(lf.lazy().select(pl.len()).collect().item())
        body = []
    return pl.DataFrame(
        [("(input)", None, None, total), *body],
        schema={"criterion": pl.String, "removed": pl.Int64, "removed_alone": pl.Int64, "remaining": pl.Int64},
        orient="row",
    )
