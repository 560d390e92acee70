"""Run and comparison tables: the report.md of a run, of a `compare` run, and of a folder of finished runs.

Columns come from the metric catalogue (:func:`safeselect.core.metrics.headline_columns`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from safeselect.config import loading
from safeselect.config.schema import ExperimentConfig, all_keys
from safeselect.core.dotted import flatten
from safeselect.core.io import atomic_write_text
from safeselect.core.metrics import headline_columns
from safeselect.core.rundir import RunDir, is_complete
from safeselect.core.stats import ranking_auc
from safeselect.errors import UserError
from safeselect.judges.accuracy import card_section
from safeselect.reporting.html import comparison_figures, write_html

LOSS_PLOT = "loss.png"  # the training-loss plot beside a run's report.md


def fmt(metrics: dict[str, Any], key: str) -> str:
    v = metrics.get(key)
    if v is None:
        return "-"
    ci = metrics.get(f"{key}_ci")
    if isinstance(v, float):
        s = f"{v:.2f}" if abs(v) <= 1.0 else f"{v:.1f}"
        if ci and ci[0] is not None:
            s += f" [{ci[0]:.2f}, {ci[1]:.2f}]" if abs(v) <= 1.0 else f" [{ci[0]:.1f}, {ci[1]:.1f}]"
        return s
    return str(v)


def table_columns(rows: dict[str, dict[str, Any]], win_rates: bool = True) -> list[tuple[str, str]]:
    """The headline columns of every run, in first-seen order (win rates optional)."""
    cols: list[tuple[str, str]] = []
    for m in rows.values():
        for c in headline_columns(m):
            if c not in cols and (win_rates or not c[1].startswith("win_rate.")):
                cols.append(c)
    return cols


def table(rows: dict[str, dict[str, Any]], win_rates: bool = True) -> str:
    """Markdown table, one row per run, the headline columns of every run (win rates optional)."""
    if not rows:
        return ""
    cols = table_columns(rows, win_rates)
    head = "| run | " + " | ".join(c[0] for c in cols) + " |"
    sep = "|---|" + "---|" * len(cols)
    lines = [head, sep]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(fmt(m, c[1]) for c in cols) + " |")
    return "\n".join(lines)


def run_report(cfg: ExperimentConfig, metrics: dict[str, Any], loss_plot: bool = False,
               model_saved: bool = False) -> str:
    judges = ", ".join(cfg.eval.judges)
    res = {k: v for k, v in metrics.items() if k.startswith("resources.")}
    lines = [
        f"# Run: {cfg.name} ({cfg.selection.method})", "",
        f"Model `{cfg.model.name}`, data `{cfg.data.benchmark}` ({cfg.data.difficulty}, harmful ratio "
        f"{cfg.data.harmful_ratio}), selection ratio {cfg.selection.ratio} by {cfg.selection.budget}. "
        f"Judges: {judges}. Figures are 0..1 with 95% bootstrap intervals (win rates 0..100).", "",
        table({cfg.selection.method: metrics}), "",
        card_section(list(cfg.eval.judges), [metrics]), "",
        "Resources: " + ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in sorted(res.items())), "",
    ]
    if loss_plot:
        lines += ["Training loss per optimiser step (`train_log.jsonl`):", "", f"![training loss]({LOSS_PLOT})", ""]
    if model_saved:
        lines += ["The fine-tuned model is in `model/` (PEFT adapter + tokenizer; "
                  "`safeselect export RUN --out DIR` writes merged weights).", ""]
    return "\n".join(lines)


def compare_report(cfg: ExperimentConfig, results: dict[str, dict[str, Any]], win_rates: bool = True) -> str:
    return "\n".join([
        f"# {cfg.name}: {', '.join(results)}", "",
        f"Model `{cfg.model.name}`, data `{cfg.data.benchmark}` ({cfg.data.difficulty}, harmful ratio "
        f"{cfg.data.harmful_ratio}), judges {', '.join(cfg.eval.judges)}. 95% bootstrap intervals in brackets; "
        "`aligned` is the starting model before fine-tuning.", "",
        table(results, win_rates), "",
        card_section(list(cfg.eval.judges), list(results.values())), "",
    ])


# Settings that make two runs comparable in one table: same data, model, alignment, training and judging.
_SHARED_SECTIONS = ("seed", "data.", "model.", "align.", "finetune.", "eval.")


def write_report(out_dir: str | Path, text: str, results: dict[str, dict[str, Any]] | None = None,
                 win_rates: bool = True) -> Path:
    """``report.md`` and, beside it, ``report.html`` (the same as one offline page; with ``results`` of
    several runs, one chart per headline metric); returns the markdown path."""
    path = Path(out_dir) / RunDir.REPORT
    atomic_write_text(path, text)
    figures = comparison_figures(results, table_columns(results, win_rates)) if results and len(results) > 1 else []
    write_html(path, figures)
    return path


def write_runs_report(out_dir: str | Path, win_rates: bool = True) -> str:
    """Rebuild report.md and report.html of a folder of runs (``safeselect report``); returns the markdown."""
    text, results = runs_report(out_dir, win_rates, with_results=True)
    write_report(out_dir, text, results, win_rates)
    return text


def runs_report(out_dir: str | Path, win_rates: bool = True, with_results: bool = False) -> Any:
    """report.md for a folder of finished runs (a `compare` run, plus any run written into it later).

    Rows: ``aligned`` and ``full`` first, then the rest by name. Settings that differ between the runs
    outside ``selection`` are listed under the table: those rows are not like-for-like.
    ``with_results``: return (text, {run: metrics}) instead of the text.
    """
    import yaml

    out = Path(out_dir)
    names = sorted((p.name for p in out.iterdir() if p.is_dir() and is_complete(p)),
                   key=lambda n: (n not in ("aligned", "full"), n != "aligned", n))
    if not names:
        raise UserError(f"{out}: no plan.json (not an ablation folder) and no finished run in its subfolders")
    flat = {n: flatten(yaml.safe_load((out / n / "config.yaml").read_text()) or {}) for n in names}
    first = flat[names[0]]
    differ = sorted({k for f in flat.values() for k in f.keys() & first.keys()
                     if k.startswith(_SHARED_SECTIONS) and f[k] != first[k]})
    cfg = loading.build({k: v for k, v in first.items() if k in all_keys()})
    results = {n: _with_ranking_auc(out / n) for n in names}
    lines = [compare_report(cfg, results, win_rates).rstrip(), ""]
    if differ:
        lines += ["Not like-for-like: these settings differ between the runs: "
                  + "; ".join(f"`{k}` ({', '.join(f'{n}={flat[n].get(k)!r}' for n in names)})" for k in differ), ""]
    text = "\n".join(lines)
    return (text, results) if with_results else text


def _with_ranking_auc(run: Path) -> dict[str, Any]:
    """A run's metrics, with ``selection.ranking_auc`` derived from its selection.jsonl when a run made
    before that metric existed lacks it (same computation, same files)."""
    m = RunDir(run).read_metrics()
    sel = run / "selection.jsonl"
    if "selection.ranking_auc" not in m and sel.exists():
        recs = [json.loads(line) for line in sel.read_text().splitlines() if line.strip()]
        recs = [r for r in recs if r.get("harmful") is not None and "score" in r and not r.get("added")]
        auc = ranking_auc([np.nan if r["score"] is None else r["score"] for r in recs], [r["harmful"] for r in recs])
        if auc is not None:
            m["selection.ranking_auc"] = auc
    return m
