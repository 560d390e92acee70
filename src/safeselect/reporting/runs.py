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
from safeselect.core.metrics import headline_columns
from safeselect.core.rundir import RunDir, is_complete
from safeselect.core.stats import ranking_auc
from safeselect.errors import UserError

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


def table(rows: dict[str, dict[str, Any]], win_rates: bool = True) -> str:
    """Markdown table, one row per run, the headline columns of every run (win rates optional)."""
    if not rows:
        return ""
    cols: list[tuple[str, str]] = []
    for m in rows.values():
        for c in headline_columns(m):
            if c not in cols and (win_rates or not c[1].startswith("win_rate.")):
                cols.append(c)
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
    ])


# Settings that make two runs comparable in one table: same data, model, alignment, training and judging.
_SHARED_SECTIONS = ("seed", "data.", "model.", "align.", "finetune.", "eval.")


def runs_report(out_dir: str | Path, win_rates: bool = True) -> str:
    """report.md for a folder of finished runs (a `compare` run, plus any run written into it later).

    Rows: ``aligned`` and ``full`` first, then the rest by name. Settings that differ between the runs
    outside ``selection`` are listed under the table: those rows are not like-for-like.
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
    lines = [compare_report(cfg, {n: _with_ranking_auc(out / n) for n in names}, win_rates).rstrip(), ""]
    if differ:
        lines += ["Not like-for-like: these settings differ between the runs: "
                  + "; ".join(f"`{k}` ({', '.join(f'{n}={flat[n].get(k)!r}' for n in names)})" for k in differ), ""]
    return "\n".join(lines)


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
