"""The metric catalogue: every name ``metrics.json`` may hold, with its direction, label, unit and meaning.

Names follow docs/ARCHITECTURE.md ("Metric names in metrics.json"). A name is
matched against the catalogue's patterns (``fnmatch``; ``*`` spans dots) in
order, first match wins, so specific entries come before general ones. Run
tables, ablation tables and plots read direction and labels from here rather
than parsing names themselves.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

# A figure is written as ``name`` plus these siblings (see core.stats.add_figure).
SIBLING_SUFFIXES = ("_ci", "_n", "_invalid")


@dataclass(frozen=True)
class Metric:
    """One family of metric names.

    ``pattern``: fnmatch pattern over dotted names. ``direction``: "lower" or
    "higher" is better, "" where neither. ``column``: the run-table header,
    formatted with the name's dotted parts (``{1}`` = second part) and
    ``{rest}`` (everything after the first part); "" keeps it out of the run
    table. ``unit``: "0..1", "0..100", "s", "MB", "rows", ...
    """

    pattern: str
    direction: str
    label: str
    unit: str
    description: str
    column: str = ""

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.pattern)

    def column_label(self, name: str) -> str:
        parts = name.split(".")
        return self.column.format(*parts, rest=".".join(parts[1:]))


CATALOGUE: tuple[Metric, ...] = (
    Metric("safety.*.*.harmful_rate", "lower", "harmful rate", "0..1",
           "share of a safety set's prompts whose response the judge calls harmful", "harmful rate ({1}, {2})"),
    Metric("safety.*.*.win_rate", "higher", "safety win rate", "0..100",
           "win rate against the reference run on a harmful set"),
    Metric("safety_avg.*", "lower", "Safety Avg", "0..1",
           "mean over safety sets of one judge's harmful rate (lower is safer)", "Safety Avg ({1}, mean harmful rate)"),
    Metric("overrefusal.*.refusal_rate", "lower", "over-refusal", "0..1",
           "share of benign look-alike prompts the model refuses", "over-refusal ({1})"),
    Metric("task.*.accuracy", "higher", "accuracy", "0..1", "exact-match accuracy on held-out task prompts",
           "accuracy ({1})"),
    Metric("win_rate.*", "higher", "win rate", "0..100", "win rate against the reference run (ties count half)",
           "win rate ({rest})"),
    Metric("eva.win_rate.*", "higher", "eva win rate", "0..100", "final solver against the starting solver"),
    Metric("mtbench*score", "higher", "MT-Bench score", "1..10", "MT-Bench grade"),
    Metric("selection.kept", "", "rows kept", "rows", "task rows the selector kept"),
    Metric("selection.harmful_kept_fraction", "lower", "harmful kept", "0..1",
           "share of the harmful task rows that were kept", "harmful kept"),
    Metric("selection.ranking_auc", "higher", "ranking AUC", "0..1",
           "P(the selector scores a benign row above a harmful one); 0.5 = chance", "ranking AUC"),
    Metric("selection.bad_kept_fraction", "lower", "bad kept", "0..1",
           "share of the level's ground-truth bad task rows (harmful, or benign rows that erode safety) kept",
           "bad rows kept"),
    Metric("selection.bad_ranking_auc", "higher", "bad-row ranking AUC", "0..1",
           "P(the selector scores a clean row above a bad one: harmful or eroding); 0.5 = chance",
           "bad-row ranking AUC"),
    Metric("resources.selection_s", "lower", "selection time", "s",
           "wall time of selection, i.e. selector training (s)"),
    Metric("resources.train_s", "lower", "training time", "s", "wall time of the final fine-tune on the kept rows (s)"),
    Metric("resources.peak_gpu_memory_mb", "lower", "peak GPU memory", "MB", "peak accelerator memory (MB)"),
    Metric("resources.peak_memory_mb", "lower", "peak memory", "MB",
           "peak memory in MB (accelerator where there is one, else this run's process)"),
    Metric("resources.eval_s", "lower", "evaluation time", "s", "wall time of evaluation (s)"),
    Metric("resources.*", "lower", "resources", "", "time and memory a run used"),
    Metric("*_loss", "lower", "loss", "", "a training loss"),
    Metric("*.harmful_rate", "lower", "harmful rate", "0..1", "share of responses judged harmful"),
    Metric("*.refusal_rate", "lower", "refusal rate", "0..1", "share of responses that refuse"),
)

# Order of the run table's headline columns: the figures a user reads first.
HEADLINE = ("safety.*.*.harmful_rate", "safety_avg.*", "overrefusal.*.refusal_rate", "task.*.accuracy",
            "win_rate.*", "selection.harmful_kept_fraction", "selection.ranking_auc", "selection.bad_kept_fraction",
            "selection.bad_ranking_auc")


def is_sibling(name: str) -> bool:
    """``_ci`` / ``_n`` / ``_invalid`` companions of a figure, not figures themselves."""
    return name.endswith(SIBLING_SUFFIXES)


def lookup(name: str) -> Metric | None:
    """The catalogue entry of a metric name (first match), or None."""
    for m in CATALOGUE:
        if m.matches(name):
            return m
    return None


def lower_is_better(name: str) -> bool:
    """Direction used to mark the best value of a metric."""
    m = lookup(name)
    return m is not None and m.direction == "lower"


def metric_bounds(name: str) -> tuple[float, float] | None:
    """The range a metric cannot leave (its catalogue unit ``lo..hi``: rates 0..1, win rates 0..100), or None."""
    m = lookup(name)
    if m is None or ".." not in m.unit:
        return None
    lo, hi = m.unit.split("..")
    return float(lo), float(hi)


def metric_label(name: str, family_label: str) -> str:
    """What one concrete metric means: the description of its own catalogue entry (one named exactly, not
    by a wildcard) where it has one, else ``family_label`` (the label of the family a plan asked for)."""
    m = lookup(name)
    return m.description if m is not None and m.pattern == name else family_label


def single_set_safety_avg(name: str, metric_names: Iterable[str]) -> bool:
    """True when ``name`` is a Safety Avg and ``metric_names`` (a run's figures) hold one safety set's harmful
    rate only: the Safety Avg is then that set's harmful rate again, not a figure of its own."""
    entry = lookup(name)
    if entry is None or entry.pattern != "safety_avg.*":
        return False
    return len({n.split(".")[1] for n in metric_names if fnmatch.fnmatchcase(n, "safety.*.*.harmful_rate")}) <= 1


def headline_columns(metrics: dict[str, object]) -> list[tuple[str, str]]:
    """(column label, metric name) for a run table, in the catalogue's headline order.

    Safety Avg is shown only with more than one safety set (:func:`single_set_safety_avg`).
    """
    names = sorted(n for n in metrics if not is_sibling(n))
    cols = []
    for pattern in HEADLINE:
        entry = next(m for m in CATALOGUE if m.pattern == pattern)
        for n in names:
            if lookup(n) is not entry:
                continue
            if pattern == "safety_avg.*" and (single_set_safety_avg(n, names) or n.count(".") != 1):
                continue
            cols.append((entry.column_label(n), n))
    return cols
