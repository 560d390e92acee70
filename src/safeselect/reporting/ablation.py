"""Tables from an ablation's output folder: ``results.csv``, ``report.md`` and the plots.

Everything is rebuilt from files (``OUT/plan.json`` and ``OUT/runs/*/metrics.json``),
so ``safeselect report OUT`` works after a partial, resumed or copied run. Only
runs whose metrics.json says ``"complete": true`` are counted; the others are
listed as missing, incomplete or failed.

Each table cell is the mean over seeds: per-prompt figures (harmful rate, over-refusal,
accuracy) over two or more seeds with a two-level bootstrap interval (seeds, then prompts);
the others with a 95% Student-t interval (mean +- t_{0.975, n-1} * sd / sqrt(n), clipped to the
metric's range); with one seed there is no interval. Under each table every replacement is paired against the first
(or a named baseline) on the same prompts and seeds (:mod:`safeselect.reporting.comparison`). The
best replacement of each metric is in bold (higher is better, except rates of
harm or refusal, Safety Avg and resources, marked "lower is better").
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from safeselect.ablation.grid import BOUND_LABELS, BOUNDS, REFERENCE_LABEL, STARTING, Grid, run_dir
from safeselect.ablation.mapping import MetricSpec, map_metric
from safeselect.ablation.plan import slugify
from safeselect.core.io import atomic_write_text
from safeselect.core.metrics import lower_is_better, metric_bounds, metric_label
from safeselect.core.rundir import RunDir
from safeselect.core.stats import t_interval
from safeselect.errors import UserError
from safeselect.reporting.comparison import (
    CEILING,
    FLOOR,
    cell,
    fmt_stat,
    paired,
    paired_section,
    per_prompt_metrics,
    precision_line,
    prompt_values,
)
from safeselect.reporting.html import write_html
from safeselect.reporting.plots import plot_metric

DEFAULT_METRICS = ["harmful rate", "win rate", "accuracy", "over refusal"]
# Shown under every ablation whatever its plan asks for (a plan written for a paper may name only win rates):
# the per-prompt figures that decide "safer / worse / no detectable difference" in the paired section.
ALWAYS_METRICS = ["harmful rate", "over refusal", "accuracy"]
_BASE_COLUMNS = ["run_id", "ablation", "parameter", "replacement", "value", "seed", "status", "run.wall_s"]
_NEEDS = {
    "win_rate.arenahard": "needs the llm judge and benchmarks.arenahard_questions/arenahard_baseline",
    "win_rate.alpacaeval": "needs the llm judge and benchmarks.alpacaeval",
    "mtbench": "needs the llm judge and benchmarks.mtbench_questions",
    "win_rate.*": "needs a reference run (win rates compare against it)",
}


# ----------------------------------------------------------------------------- reading


def read_plan_file(out_dir: Path) -> tuple[dict[str, Any], Grid]:
    path = out_dir / "plan.json"
    if not path.exists():
        raise UserError(f"{out_dir} has no plan.json: not the output folder of `safeselect ablate`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data["plan"], Grid.from_dict(data["grid"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{path}: malformed plan file ({e})") from None


def run_status(path: Path) -> str:
    run = RunDir(path)
    if run.is_complete():
        return "complete"
    if run.error.exists():
        return "failed"
    if path.exists():
        return "incomplete"
    return "missing"


def read_run(path: Path) -> tuple[str, dict[str, Any]]:
    """(status, flat metrics); metrics only for complete runs, so a half-written result is never counted."""
    status = run_status(path)
    if status != "complete":
        return status, {}
    metrics = RunDir(path).read_metrics()
    metrics.pop("complete", None)
    try:
        runner = json.loads((path / "runner.json").read_text(encoding="utf-8"))
        metrics["run.wall_s"] = runner.get("wall_s")
    except (OSError, json.JSONDecodeError):
        pass
    return status, metrics


def collect(out_dir: str | Path) -> tuple[dict[str, Any], Grid, list[dict[str, Any]]]:
    """The plan, its grid, and one row per cell (plus the reference row) with status and metrics."""
    out = Path(out_dir)
    plan, grid = read_plan_file(out)
    cache: dict[str, tuple[str, dict[str, Any]]] = {}

    def get(run_id: str) -> tuple[str, dict[str, Any]]:
        if run_id not in cache:
            cache[run_id] = read_run(run_dir(out, run_id))
        return cache[run_id]

    rows: list[dict[str, Any]] = []
    if grid.reference_id:
        ref = next(r for r in grid.runs if r.run_id == grid.reference_id)
        status, metrics = get(ref.run_id)
        rows.append({"run_id": ref.run_id, "ablation": REFERENCE_LABEL, "parameter": "", "replacement":
                     REFERENCE_LABEL, "value": "", "seed": ref.seed, "status": status, **metrics})
    for c in grid.cells:
        status, metrics = get(c.run_id)
        rows.append({"run_id": c.run_id, "ablation": c.ablation, "parameter": c.parameter, "replacement": c.label,
                     "value": c.value, "seed": c.seed, "status": status, **metrics})
    return plan, grid, rows


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    return None


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1000:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


# ----------------------------------------------------------------------------- results.csv


def write_results_csv(out_dir: Path, rows: list[dict[str, Any]]) -> Path:
    metric_cols = sorted({k for r in rows for k in r if k not in _BASE_COLUMNS})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_BASE_COLUMNS + metric_cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()})
    path = out_dir / "results.csv"
    atomic_write_text(path, buf.getvalue())
    return path


# ----------------------------------------------------------------------------- report.md


def _metric_columns(specs: list[MetricSpec], names: set[str]) -> tuple[list[tuple[MetricSpec, str]], list[str]]:
    """(spec, metric) columns found in the runs, and lines for the metrics that were asked for but not computed."""
    cols: list[tuple[MetricSpec, str]] = []
    missing: list[str] = []
    for spec in specs:
        found = sorted(n for n in names if spec.matches(n))
        if not spec.patterns:
            missing.append(f"- {spec.name!r}: not computed: {spec.note or 'no safeselect metric matches this name'}")
            continue
        if not found:
            why = spec.note.split("not produced: ", 1)[1] if "not produced: " in spec.note else next(
                (msg for prefix, msg in _NEEDS.items() if any(p.startswith(prefix) for p in spec.patterns)),
                "no run produced it")
            missing.append(f"- {spec.name!r} ({', '.join(spec.patterns)}): not computed by these runs ({why})")
            continue
        for n in found:
            if n not in [c[1] for c in cols]:
                cols.append((spec, n))
    return cols, missing


def _interval(v: Any) -> tuple[float, float] | None:
    """A ``*_ci`` cell (a list, or its JSON / Python text in results.csv) -> (lo, hi), else None."""
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            return None
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
        return float(v[0]), float(v[1])
    return None


def ablation_table(ablation: dict[str, Any], rows: list[dict[str, Any]], ref_row: dict[str, Any] | None,
                   out_dir: Path | None = None, baseline: str | None = None
                   ) -> tuple[str, list[tuple[str, str]], dict[str, Any]]:
    """Markdown for one ablation, the (metric, png name) plots to draw, and the per-replacement values.

    With ``out_dir`` (the ablation folder) per-prompt figures get a two-level bootstrap interval over seeds
    and prompts, and every replacement is paired against ``baseline`` (default: the first replacement)
    on the same prompts and seeds, with a verdict and the smallest detectable difference.
    """
    specs = [MetricSpec.from_dict(m) for m in ablation["metrics"]] or [map_metric(m) for m in DEFAULT_METRICS]
    mine = [r for r in rows if r["ablation"] == ablation["name"]]
    names = {k for r in mine + ([ref_row] if ref_row else []) if r["status"] == "complete" for k in r}
    cols, missing = _metric_columns(specs, names)
    always, _ = _metric_columns([map_metric(m) for m in ALWAYS_METRICS], names)  # absent ones are not "missing"
    cols += [c for c in always if c[1] not in {m for _, m in cols}]
    labels = [rep["label"] for rep in ablation["replacements"]]
    # The bounds runs (oracle and full at the base config, the aligned model) where the plan's own replacements
    # are not those.
    bounds = [lab for lab in (STARTING, *BOUND_LABELS) if lab not in labels and any(
        r["ablation"] == BOUNDS and r["replacement"] == lab and r["status"] == "complete" for r in rows)]
    pool = mine + [r for r in rows if r["ablation"] == BOUNDS and r["replacement"] in bounds]
    values: dict[str, dict[str, list[float]]] = {
        m: {lab: [v for r in pool if r["replacement"] == lab and r["status"] == "complete"
                  for v in [_num(r.get(m))] if v is not None] for lab in labels + bounds} for _, m in cols}
    stats = {m: {lab: t_interval(vs, metric_bounds(m)) if vs else None for lab, vs in per.items()}
             for m, per in values.items()}
    by_label: dict[str, dict[int, Path]] = {
        lab: {r["seed"]: run_dir(out_dir, r["run_id"]) for r in pool if r["replacement"] == lab
              and r["status"] == "complete"} for lab in labels + bounds} if out_dir is not None else {}
    per_prompt = per_prompt_metrics(by_label, [m for _, m in cols]) if by_label else []
    for m in per_prompt:
        for lab, by in by_label.items():
            # The seeds whose runs have the figure per prompt: `full` at the seed of the shared reference run is
            # that run and has no win rate against itself, so its win rates come from the other seeds' runs.
            runs = [by[k] for k in sorted(by) if prompt_values(by[k], m) is not None]
            if not runs:
                continue
            # one run of the aligned model: its own interval (Wilson for rates); other one-seed rows keep theirs
            c = cell(runs, m) if len(runs) >= 2 or lab == STARTING else None
            if c is not None and c["ci"] is not None:  # seeds, then prompts (one seed keeps the t/run figure)
                stats[m][lab] = (c["value"], c["ci"][0], c["ci"][1])
    best: dict[str, set[str]] = {}
    for m, per in stats.items():
        means = {lab: s[0] for lab, s in per.items() if s is not None and lab in labels}
        if len(set(means.values())) > 1:  # when all replacements tie there is no best one to mark
            target = min(means.values()) if lower_is_better(m) else max(means.values())
            best[m] = {lab for lab, v in means.items() if v == target}
    n_seeds = len({r["seed"] for r in mine})
    head = ["replacement", "value", "runs"] + [f"`{m}`" + (" ↓" if lower_is_better(m) else "") for _, m in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if ref_row is not None:
        done = ref_row["status"] == "complete"
        cells = [fmt(_num(ref_row.get(m))) if done else "-" for _, m in cols]
        lines.append(f"| {REFERENCE_LABEL} (shared run) | - | {int(done)}/1 | " + " | ".join(cells) + " |")
    # (label, row name, value column): the replacements, then the bounds runs
    table = [(rep["label"], rep["label"], repr(rep["value"])) for rep in ablation["replacements"]]
    role = {STARTING: "the starting model, no fine-tuning", FLOOR: "floor, base config", CEILING: "ceiling, base config"}
    table += [(lab, f"{lab} ({role[lab]})", "-") for lab in bounds]
    for lab, name, value in table:
        n_done = sum(1 for r in pool if r["replacement"] == lab and r["status"] == "complete")
        n_runs = n_seeds if lab in labels else sum(1 for r in pool if r["replacement"] == lab)
        cells = []
        for _, m in cols:
            s = stats[m][lab]
            if s is None:
                cells.append("-")
                continue
            mean, lo, hi = s
            text = fmt(mean) if lo is None else f"{fmt(mean)} [{fmt(lo)}, {fmt(hi)}]"
            cells.append(f"**{text}**" if lab in best.get(m, set()) else text)
        lines.append(f"| {name} | {value} | {n_done}/{n_runs} | " + " | ".join(cells) + " |")
    source = "" if ablation["part"] == ablation["parameter"] else f" <- \"{ablation['part']}\" ({ablation['how']})"
    parts = [
        f"## {ablation['name']}", "",
        f"`{ablation['parameter']}`{source}; runner: {ablation['runner']}.", "",
        "\n".join(lines), "",
    ]
    if per_prompt and len(labels) > 1:
        base = baseline if baseline in labels else labels[0]
        parts += [paired_section({lab: by_label[lab] for lab in labels}, base, [(f"`{m}`", m) for m in per_prompt]),
                  "", precision_line({lab: by_label[lab] for lab in labels}), ""]
        if FLOOR in by_label and CEILING in by_label:
            where = " of the base config (`full` - `oracle` bounds runs" if CEILING in bounds or FLOOR in bounds \
                else " (`full` - `oracle`"
            parts += [f"Headroom{where}, paired): " + "; ".join(
                f"`{m}` {fmt_stat(d, signed=True, metric=m)}" for m in per_prompt
                for d in [paired(by_label[CEILING], by_label[FLOOR], m)] if d is not None), ""]
        else:
            parts += ["Headroom: not measured here (needs `oracle` and `full` runs: `bounds: true` in the plan, "
                      "or replacements of those names).", ""]
    notes = [f"- `{m}`: {metric_label(m, spec.label)}" + (f"; {spec.note}" if spec.note else "")
             for spec, m in cols if spec.label or spec.note]
    if notes:
        parts += ["Metrics:", *notes, ""]
    if missing:
        parts += ["Asked for by the plan but not computed:", *missing, ""]
    plots = [(m, f"{ablation['slug']}__{slugify(m, 60)}.png") for _, m in cols]
    # With one seed there is no interval over seeds: the run's own bootstrap interval (over prompts) is drawn.
    run_ci = {m: {lab: ci for lab in labels
                  for one in [[r for r in mine if r["replacement"] == lab and r["status"] == "complete"]]
                  if len(one) == 1 for ci in [_interval(one[0].get(f"{m}_ci"))] if ci is not None}
              for _, m in cols}
    per_label = {"labels": labels, "values": {m: {lab: per[lab] for lab in labels} for m, per in values.items()},
                 "stats": stats, "run_ci": run_ci,
                 "reference": {m: _num(ref_row.get(m)) for _, m in cols} if ref_row and
                 ref_row["status"] == "complete" else {}}
    return "\n".join(parts), plots, per_label


def build_report(out_dir: str | Path, plots: bool = True, baseline: str | None = None) -> Path:
    """Write results.csv, report.md and plots/*.png for an ablation folder; returns the report path.

    ``baseline``: the replacement label every other one is paired against (default: each ablation's first)."""
    out = Path(out_dir)
    plan, grid, rows = collect(out)
    left_out = []
    if plan.get("only") is not None:  # `ablate --ablation NAME`: the other sections were not run this time
        left_out = [a["name"] for a in plan["ablations"] if a["slug"] not in plan["only"]]
        plan["ablations"] = [a for a in plan["ablations"] if a["slug"] in plan["only"]]
    write_results_csv(out, rows)
    ref_row = rows[0] if grid.reference_id else None
    n_runs = len(grid.runs)
    statuses: dict[str, str] = {}
    for r in rows:
        statuses[r["run_id"]] = r["status"]
    complete = sum(1 for s in statuses.values() if s == "complete")
    base = plan.get("preset") or "defaults"
    if plan.get("base"):
        base += " + " + " ".join(f"{k}={v!r}" for k, v in plan["base"].items())
    seeds = sorted({c.seed for c in grid.cells})
    md = [
        f"# Ablation report: {plan['name']}", "",
        f"Plan `{plan['source']}`. Base: {base}. Seeds: {', '.join(map(str, seeds))}. "
        f"Runs: {complete} of {n_runs} complete.", "",
        "Each cell is the mean over seeds. Per-prompt figures (harmful rate, over-refusal, accuracy, win rates) with two or "
        "more seeds carry a 95% two-level bootstrap interval (seeds, then prompts within each seed); other "
        "figures a 95% Student-t interval over seeds (mean +- t(0.975, n-1) sd / sqrt(n), clipped to the "
        "metric's range; one seed gives no interval). Under each table every replacement is paired against the first (or `--baseline`) on the same "
        "prompts and seeds: difference, 95% interval, verdict, smallest detectable difference. The best replacement per metric is "
        "in **bold**; ↓ marks metrics where lower is better. `runs` counts complete runs of the replacement. Figures from inside a run carry their own "
        "intervals in results.csv (`*_ci`: Wilson for rates, bootstrap for averages and win rates).",
        "",
    ]
    if grid.reference_id:
        md += [f"Reference: `{grid.reference_id}`, the shared run that win rates compare against (it scores 50 "
               "against itself, so its own win rates are not reported).", ""]
    starting = ("`aligned`, the starting model evaluated without fine-tuning (once: the aligned model and the "
                "evaluation prompts do not follow the experiment seed)")
    if any(c.ablation == BOUNDS and c.label in BOUND_LABELS for c in grid.cells):
        md += ["Bounds: `oracle` (drops the rows the data marks bad: the floor) and `full` (keeps every row: the "
               "ceiling) at the base config, one run each per seed (`bounds-*`, shared with the reference where "
               f"equal); each table shows them and the headroom between them, and {starting}.", ""]
    elif any(c.ablation == BOUNDS for c in grid.cells):
        md += [f"Each table also shows {starting}.", ""]
    for n in plan.get("notes", []):
        md += [f"Note: {n}.", ""]
    if left_out:
        md += ["Not run this time (`--ablation` chose the sections reported here): " +
               ", ".join(f"'{n}'" for n in left_out) + "; running the whole plan into this folder adds them and "
               "reuses these runs.", ""]
    not_run = [f"- section '{r['name']}'" + (f" (line {r['line']})" if r.get("line") else "") + f": {r['reason']}"
               for r in plan.get("refused", [])]
    not_run += [f"- '{a['name']}', replacement {t!r}: {why}" for a in plan["ablations"] for t, why in a.get("skipped", [])]
    if not_run:
        md += ["Not run (parts of the plan that could not be mapped to a setting):", *not_run, ""]
    low = [f"- '{a['name']}' -> `{a['parameter']}` ({a.get('how', '')})" for a in plan["ablations"]
           if a.get("low_confidence")]
    if low:
        md += ["Low-confidence mappings (check them; write the dotted key in the plan to settle one):", *low, ""]
    not_done = sorted((rid, s) for rid, s in statuses.items() if s != "complete")
    if not_done:
        md += ["Not counted (not complete):", *[f"- `{rid}`: {s}" for rid, s in not_done], ""]
    plot_jobs = []
    for a in plan["ablations"]:
        text, pl, data = ablation_table(a, rows, ref_row, out, baseline)
        md.append(text)
        if plots and pl:
            md += [f"![{a['name']}: {m}](plots/{png})" for m, png in pl] + [""]
            plot_jobs.append((a, pl, data))
    md += ["All runs, every metric: [results.csv](results.csv).", ""]
    if plots:
        for a, pl, data in plot_jobs:
            for m, png in pl:
                plot_metric(out / "plots" / png, title=f"{a['name']}: {m}", xlabel=a["parameter"],
                            labels=data["labels"], values=data["values"][m], reference=data["reference"].get(m),
                            lower_is_better=lower_is_better(m), run_ci=data["run_ci"].get(m),
                            bounds=metric_bounds(m))
    path = out / RunDir.REPORT
    atomic_write_text(path, "\n".join(md))
    write_html(path)  # report.html: the same with the plots embedded, offline
    return path
