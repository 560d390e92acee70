"""Run and comparison tables: the report.md of a run, of a `compare` run, and of a folder of finished runs.

Columns come from the metric catalogue (:func:`safeselect.core.metrics.headline_columns`).
"""

from __future__ import annotations

import dataclasses
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
from safeselect.reporting.comparison import seeded_report
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


def data_desc(cfg: ExperimentConfig) -> str:
    """The data of a run in words: benchmark, level and its mix (`erosion` has eroding rows, not harmful ones)."""
    d = cfg.data
    if d.benchmark == "builtin" and d.difficulty == "erosion":
        return f"`{d.benchmark}` (erosion, eroding share {d.erosion_ratio}, no harmful rows)"
    return f"`{d.benchmark}` ({d.difficulty}, harmful ratio {d.harmful_ratio})"


def run_report(cfg: ExperimentConfig, metrics: dict[str, Any], loss_plot: bool = False,
               model_saved: bool = False) -> str:
    judges = ", ".join(cfg.eval.judges)
    res = {k: v for k, v in metrics.items() if k.startswith("resources.")}
    lines = [
        f"# Run: {cfg.name} ({cfg.selection.method})", "",
        f"Model `{cfg.model.name}`, data {data_desc(cfg)}, selection ratio {cfg.selection.ratio} by {cfg.selection.budget}. "
        f"Seed {cfg.seed}, alignment seed {cfg.align.seed}. Judges: {judges}. Figures are 0..1 with 95% intervals "
        "(Wilson for rates, bootstrap for averages; win rates 0..100).", "",
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
        f"Model `{cfg.model.name}`, data {data_desc(cfg)}, seed {cfg.seed}, alignment seed {cfg.align.seed}, judges "
        f"{', '.join(cfg.eval.judges)}. 95% intervals in brackets (Wilson for proportions, bootstrap for "
        "averages); `aligned` is the starting model before fine-tuning.", "",
        table(results, win_rates), "",
        card_section(list(cfg.eval.judges), list(results.values())), "",
    ])


def seeds_report(cfg: ExperimentConfig, rows: dict[str, dict[int, Path]]) -> str:
    """report.md of a comparison over seeds: means over seeds, headroom, paired verdicts against the baseline."""
    seeds = sorted({s for by in rows.values() for s in by})
    return "\n".join([
        f"# {cfg.name}: {', '.join(rows)} over seeds {', '.join(map(str, seeds))}", "",
        f"Model `{cfg.model.name}`, data {data_desc(cfg)}, alignment seed {cfg.align.seed}, judges {', '.join(cfg.eval.judges)}. "
        "`aligned` is the starting model before fine-tuning.", "",
        seeded_report(rows, _columns(rows), cfg.baseline, cfg.eval.bootstrap or 1000)])


def decide(cfg: ExperimentConfig, rows: dict[str, dict[int, Path]], results: dict[str, dict[str, Any]]) -> str:
    """Headroom and paired verdicts of a one-seed comparison, under its table."""
    return seeded_report(rows, table_columns(results), cfg.baseline, cfg.eval.bootstrap or 1000, with_table=False)


def _columns(rows: dict[str, dict[int, Path]]) -> list[tuple[str, str]]:
    """The headline columns of the first run (any seed) of each row."""
    return table_columns({m: RunDir(next(iter(by.values()))).read_metrics() for m, by in rows.items() if by})


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


def _seed_folders(out: Path) -> dict[int, Path]:
    """``s<seed>`` subfolders of a comparison over seeds (``compare`` with ``seeds``)."""
    found = {}
    for p in out.iterdir():
        if p.is_dir() and p.name[:1] == "s" and p.name[1:].isdigit() and any(is_complete(q) for q in p.iterdir()
                                                                               if q.is_dir()):
            found[int(p.name[1:])] = p
    return dict(sorted(found.items()))


# The rows that frame a comparison, in this order, before the methods: start, floor, ceiling, then the
# baseline and the floor every method must beat (the order of the tables in docs/results.md).
_FRAME = ("aligned", "oracle", "full", "random", "loss")


def _order(names: list[str]) -> list[str]:
    """``aligned``, ``oracle``, ``full``, ``random``, ``loss`` first (those present), then the rest by name."""
    return sorted(names, key=lambda n: (_FRAME.index(n) if n in _FRAME else len(_FRAME), n))


def _saved_cfg(run: Path, baseline: str | None) -> ExperimentConfig:
    """The config a finished run was made with (the keys this version knows), with ``baseline`` if given."""
    flat = flatten(RunDir(run).saved_config() or {})
    cfg = loading.build({k: v for k, v in flat.items() if k in all_keys()})
    return cfg if baseline is None else dataclasses.replace(cfg, baseline=baseline)


def write_runs_report(out_dir: str | Path, win_rates: bool = True, baseline: str | None = None) -> str:
    """Rebuild report.md and report.html of a folder of runs (``safeselect report``); returns the markdown."""
    text, results = runs_report(out_dir, win_rates, with_results=True, baseline=baseline)
    write_report(out_dir, text, results, win_rates)
    return text


def runs_report(out_dir: str | Path, win_rates: bool = True, with_results: bool = False,
                baseline: str | None = None) -> Any:
    """report.md for a folder of finished runs (a `compare` run, plus any run written into it later), or of a
    comparison over seeds (``s<seed>/<run>`` subfolders).

    Rows: ``aligned``, ``oracle``, ``full``, ``random``, ``loss`` first, then the rest by name. Settings that differ between the runs
    outside ``selection`` are listed under the table: those rows are not like-for-like.
    ``with_results``: return (text, {run: metrics}) instead of the text.
    """
    out = Path(out_dir)
    seeds = _seed_folders(out)
    if seeds:
        names = _order(sorted({q.name for p in seeds.values() for q in p.iterdir() if q.is_dir() and is_complete(q)}))
        by_seed = {n: {s: p / n for s, p in seeds.items() if is_complete(p / n)} for n in names}
        text = seeds_report(_saved_cfg(next(iter(by_seed[names[0]].values())), baseline), by_seed)
        return (text, {}) if with_results else text
    names = _order([p.name for p in out.iterdir() if p.is_dir() and is_complete(p)])
    if not names:
        raise UserError(f"{out}: no plan.json (not an ablation folder) and no finished run in its subfolders")
    flat = {n: flatten(RunDir(out / n).saved_config() or {}) for n in names}
    first = flat[names[0]]
    differ = sorted({k for f in flat.values() for k in f.keys() & first.keys()
                     if k.startswith(_SHARED_SECTIONS) and f[k] != first[k]})
    cfg = _saved_cfg(out / names[0], baseline)
    results = {n: _with_ranking_auc(out / n) for n in names}
    lines = [compare_report(cfg, results, win_rates).rstrip(), "",
             decide(cfg, {n: {int(flat[n].get("seed", 0)): out / n} for n in names}, results)]
    if differ:
        lines += ["Not like-for-like: these settings differ between the runs: "
                  + "; ".join(f"`{k}` ({', '.join(f'{n}={flat[n].get(k)!r}' for n in names)})" for k in differ), ""]
    text = "\n".join(lines)
    return (text, results) if with_results else text


def _with_ranking_auc(run: Path) -> dict[str, Any]:
    """A run's metrics, with ``selection.ranking_auc`` derived from its selection.jsonl when a run made
    before that metric existed lacks it (same computation, same files)."""
    m = RunDir(run).read_metrics()
    sel = RunDir(run).selection
    if "selection.ranking_auc" not in m and sel.exists():
        recs = [json.loads(line) for line in sel.read_text().splitlines() if line.strip()]
        recs = [r for r in recs if r.get("harmful") is not None and "score" in r and not r.get("added")]
        auc = ranking_auc([np.nan if r["score"] is None else r["score"] for r in recs], [r["harmful"] for r in recs])
        if auc is not None:
            m["selection.ranking_auc"] = auc
    return m
