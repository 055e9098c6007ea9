"""The overlap rules, each defined once: its name, its one parameter, how it reads in words.

The run parameters, the overlap stage's key, the calibration table and its suggestion, the
report's wording and the calibration figure all read this table; how each rule flags pairs is
``apply_rule`` (``tasks.algorithms.calibration``). A new rule is one entry here plus its flagging.
Imports nothing heavy: the run configuration reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OverlapRule:
    """One rule that flags class pairs by their centroid cosine."""

    name: str
    parameter: str  # its keyword in apply_rule, its key in manifests and the calibration table
    field: str  # the run parameter that holds its value; dashed, its command-line flag
    words: str  # the rule in words, ``{value}`` standing for its parameter
    axis: str  # the calibration figure's axis label
    looser: int  # +1: a larger value flags more pairs; -1: a smaller one does
    integer: bool = False
    via: str | None = None  # computed as another rule at a cutoff (``classes``: threshold)

    @property
    def flag(self) -> str:
        """Its parameter's command-line flag, e.g. ``--overlap-k``."""
        return "--" + self.field.replace("_", "-")

    def chosen(self, params: Any) -> dict[str, Any]:
        """The rule and its value in a run's parameters: ``{"rule": name, parameter: value}``."""
        return {"rule": self.name, self.parameter: getattr(params, self.field)}

    def setting(self, value: float) -> str:
        """The command-line flags of one setting, e.g. ``--overlap-rule sigma --overlap-k 2.5``."""
        shown = int(value) if self.integer else f"{value:g}"
        return f"--overlap-rule {self.name} {self.flag} {shown}"

    def describe(self, chosen: Mapping[str, Any]) -> str:
        """The rule in words, with the value in ``chosen`` (a manifest's info or params)."""
        return self.words.format(value=chosen.get(self.parameter))


RULES: dict[str, OverlapRule] = {
    rule.name: rule
    for rule in (
        OverlapRule(
            "sigma",
            "k",
            "overlap_k",
            "cosine >= mu + {value}*sigma",
            "k of the sigma rule (cosine >= mu + k*sigma)",
            looser=-1,
        ),
        OverlapRule(
            "threshold",
            "threshold",
            "overlap_threshold",
            "cosine >= {value}",
            "cosine threshold",
            looser=-1,
        ),
        OverlapRule(
            "topk",
            "top_k",
            "overlap_top_k",
            "mutual top-{value} nearest classes",
            "top-k of the mutual nearest-class rule",
            looser=1,
            integer=True,
        ),
        OverlapRule(
            "classes",
            "classes",
            "overlap_classes",
            "the most similar pairs, in order, until {value} classes are covered",
            "classes asked for (--overlap-classes)",
            looser=1,
            integer=True,
            via="threshold",
        ),
    )
}
RULE_NAMES = tuple(RULES)
