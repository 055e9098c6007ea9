"""The overlap rules, defined once: every place that names a rule reads the one table."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from tasks.algorithms.calibration import apply_rule, calibration_table, setting_flags
from tasks.algorithms.centroids import neighbour_ranks
from tasks.algorithms.overlap_rule import RULE_NAMES, RULES
from tasks.core.params import OverlapParams
from tasks.overlap import rule_params
from tasks.reporting.figures_calibration import PANELS
from tests.support.builders import FIVE_CLASS_COSINE as COSINE


def test_the_run_parameters_the_calibration_and_the_figure_know_the_same_rules() -> None:
    choices = typing.get_args(OverlapParams.model_fields["overlap_rule"].annotation)
    assert choices == RULE_NAMES == tuple(PANELS)
    table = calibration_table(COSINE, neighbour_ranks(COSINE), chosen={"rule": "sigma", "k": 1.0})
    rules = table.column("rule").to_pylist()
    assert tuple(dict.fromkeys(rules)) == RULE_NAMES
    for name, parameter in zip(rules, table.column("parameter").to_pylist(), strict=True):
        assert parameter == RULES[name].parameter


@pytest.mark.parametrize("name", RULE_NAMES)
def test_a_rule_s_value_reaches_the_key_the_flags_and_the_words(name: str) -> None:
    rule = RULES[name]
    value = 2 if rule.integer else 0.5  # within every rule's bounds
    params = OverlapParams(
        dataset="synthetic", out="/tmp/x", overlap_rule=name, **{rule.field: value}
    )
    chosen = rule_params(params)
    assert chosen == {"rule": name, rule.parameter: value}
    assert setting_flags(name, value) == f"--overlap-rule {name} {rule.flag} {value:g}"
    assert str(value) in rule.describe(chosen)
    flagged = apply_rule(COSINE, neighbour_ranks(COSINE), **chosen)
    assert flagged.pairs.shape[1] == 2 and np.all(flagged.pairs[:, 0] < flagged.pairs[:, 1])
