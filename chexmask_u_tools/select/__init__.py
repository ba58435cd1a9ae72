"""Choosing and weighting rows by uncertainty: summary expressions, rules and weights."""

from __future__ import annotations

from chexmask_u_tools.select.filtering import (
    apply_filters,
    filter_criteria,
    filter_report,
    filter_rules,
)
from chexmask_u_tools.select.rules import (
    ColumnRule,
    Rule,
    apply_rules,
    check_rules,
    dice_rule,
    image_rule,
    latent_rule,
    node_rule,
    organ_rule,
    parse_rule,
    parse_rules,
    rule_report,
)
from chexmask_u_tools.select.uncertainty import (
    add_summaries,
    latent_sigma_mean,
    node_sigma,
    node_sigma_max,
    node_sigma_mean,
    node_sigma_quantile,
    organ_sigma_mean,
    require_uncertainty,
    summary_by_source,
)
from chexmask_u_tools.select.weights import (
    SampleWeighting,
    node_weights,
    sample_weights,
    soft_pixel_weights,
)

__all__ = [
    "ColumnRule",
    "Rule",
    "SampleWeighting",
    "add_summaries",
    "apply_filters",
    "apply_rules",
    "check_rules",
    "dice_rule",
    "filter_criteria",
    "filter_report",
    "filter_rules",
    "image_rule",
    "latent_rule",
    "latent_sigma_mean",
    "node_rule",
    "node_sigma",
    "node_sigma_max",
    "node_sigma_mean",
    "node_sigma_quantile",
    "node_weights",
    "organ_rule",
    "organ_sigma_mean",
    "parse_rule",
    "parse_rules",
    "require_uncertainty",
    "rule_report",
    "sample_weights",
    "soft_pixel_weights",
    "summary_by_source",
]
