"""Report figure of the overlap calibration: what each setting of each rule would flag."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers, workers or CI

import matplotlib.pyplot as plt
import pyarrow as pa
from matplotlib.figure import Figure

from tasks.algorithms.overlap_rule import RULES

# Panel order and axis labels, one panel per rule.
PANELS = {name: rule.axis for name, rule in RULES.items()}


def calibration_figure(calibration: pa.Table, num_classes: int) -> Figure:
    """Classes flagged against each rule's parameter, the run's own setting marked (pairs: in the
    ``overlap_calibration`` table; their count grows far faster and would flatten the curves)."""
    rows = calibration.to_pylist()
    # two panels a row: the figure fits the report's page width (no sideways scrolling)
    ncols = 2
    nrows = -(-len(PANELS) // ncols)
    figure, grid = plt.subplots(
        nrows, ncols, figsize=(4.6 * ncols, 3.3 * nrows + 0.5), sharey=True, squeeze=False
    )
    axes = list(grid.ravel())
    for ax in axes[len(PANELS) :]:
        ax.set_visible(False)
    axes = axes[: len(PANELS)]
    for ax, (rule, label) in zip(axes, PANELS.items(), strict=True):
        mine = [r for r in rows if r["rule"] == rule]
        x = [r["value"] for r in mine]
        ax.plot(x, [r["n_classes"] for r in mine], "-o", ms=3, label="classes flagged")
        for r in (r for r in mine if r["chosen"]):
            ax.plot([r["value"]], [r["n_classes"]], "D", color="tab:red", ms=9, label="this run")
            ax.annotate(
                f"{r['n_classes']} classes",
                (r["value"], r["n_classes"]),
                textcoords="offset points",
                xytext=(6, 6),
                color="tab:red",
            )
        ax.axhline(num_classes, color="tab:gray", lw=0.5)
        ax.set_ylim(0, num_classes * 1.08)
        ax.set_xlabel(label)
        ax.set_title(rule)
    for ax in axes[::ncols]:
        ax.set_ylabel(f"flagged (of {num_classes} classes)")
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:  # the run's marker lives in one panel only
        extra = ax.get_legend_handles_labels()
        handles += [h for h, n in zip(*extra, strict=True) if n not in labels]
        labels += [n for n in extra[1] if n not in labels]
    figure.legend(handles, labels, loc="upper center", ncol=2, frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.4 / figure.get_figheight()))
    return figure
