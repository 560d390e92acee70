"""Tables that decide: rows over several seeds, paired differences against a baseline row, headroom.

Input: for each table row (a method, or an ablation's replacement) its finished run folders by seed.
Per-prompt figures (harmful rate, over-refusal, task accuracy, win rates) are read back from each run's
``generations.jsonl`` by prompt id, so that:

- a cell is the mean over seeds with a two-level bootstrap interval (seeds, then prompts;
  :func:`safeselect.evaluation.stats.seeds_mean`);
- a row is compared with the baseline row on the same prompts and seeds
  (:func:`safeselect.evaluation.stats.paired_difference`): difference, 95% interval, verdict, and the
  smallest difference the run could have detected;
- the headroom of a table with both `oracle` (the floor) and `full` (the ceiling) is their paired
  difference.

Safety Avg is a per-prompt figure too: each harmful prompt's verdict weighted so that the mean over
prompts is the mean over safety sets of each set's rate (:func:`safety_avg_values`). Figures without
per-prompt values (resources, selection counts) are the mean of the runs' own figures; with two or more
seeds their interval is a bootstrap over the seed values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from safeselect.core.metrics import lower_is_better, metric_bounds, single_set_safety_avg
from safeselect.core.rundir import RunDir
from safeselect.core.stats import paired_difference, seeds_mean

FLOOR, CEILING = "oracle", "full"


def prompt_values(run: Path, metric: str) -> dict[str, float | None] | None:
    """Per-prompt values behind ``metric`` in ``run/generations.jsonl`` (None when not per-prompt).

    ``safety.<set>.<judge>.harmful_rate``: the judge's harmful verdict on each harmful prompt (0/1);
    ``overrefusal.<set>.refusal_rate``: the refusal verdict on each look-alike (0/1); ``task.<set>.accuracy``:
    exact match on each task prompt (0/1); ``win_rate.<set>.<judge>`` and ``safety.<set>.<judge>.win_rate``:
    the pairwise judge's outcome against the reference reply on each prompt of the set, on the win rate's
    0-100 scale (100 win, 50 tie, 0 loss), so that win rates too get the two-level interval over seeds and
    prompts and paired verdicts. Undecided items are None.
    """
    parts = metric.split(".")
    if len(parts) == 2 and parts[0] == "safety_avg":
        return safety_avg_values(run, parts[1])
    if len(parts) == 4 and parts[0] == "safety" and parts[3] == "harmful_rate":
        kind, name, pick = "harmful", parts[1], lambda r: _flag((r["verdicts"].get(parts[2]) or {}).get("harmful"))
    elif len(parts) == 3 and parts[0] == "overrefusal" and parts[2] == "refusal_rate":
        kind, name, pick = "overrefusal", parts[1], lambda r: _flag((r["verdicts"].get("refusal") or {}).get("refused"))
    elif len(parts) == 3 and parts[0] == "task" and parts[2] == "accuracy":
        kind, name, pick = "task", parts[1], lambda r: _flag(r.get("correct"))
    elif (len(parts) == 3 and parts[0] == "win_rate") or (len(parts) == 4 and parts[0] == "safety"
                                                            and parts[3] == "win_rate"):
        judge = parts[2]
        kind, name, pick = None, parts[1], lambda r: _outcome((r.get("pairwise") or {}).get(judge))
    else:
        return None
    records = _records(run)
    if records is None:
        return None
    out = {str(r["row_id"]): pick(r) for r in records
           if r.get("set") == name and (kind is None or r.get("kind") == kind)}
    if kind is None and all(v is None for v in out.values()):
        return None  # no pairwise judge of that name ran on this set
    return out or None


def safety_avg_values(run: Path, judge: str) -> dict[str, float | None] | None:
    """Per-prompt values behind ``safety_avg.<judge>``, keyed ``<set>/<row_id>``, whose mean is the figure.

    Safety Avg weighs every safety set equally whatever its size (:func:`safeselect.core.stats.safety_avg`), so
    a prompt of set s counts its harmful verdict (0/1) times N / (S x n_s), with n_s decided prompts in s, S
    sets and N decided prompts in all: the mean over prompts is then the mean of the sets' rates, and the
    two-level bootstrap and paired verdicts apply as to any per-prompt figure. Undecided items are None.
    """
    records = _records(run)
    if records is None:
        return None
    flags = {f"{r['set']}/{r['row_id']}": (r["set"], _flag((r["verdicts"].get(judge) or {}).get("harmful")))
             for r in records if r.get("kind") == "harmful" and judge in (r.get("verdicts") or {})}
    decided: dict[str, int] = {}
    for name, f in flags.values():
        if f is not None:
            decided[name] = decided.get(name, 0) + 1
    if not decided:
        return None
    total = sum(decided.values())
    return {key: None if f is None else f * total / (len(decided) * decided[name])
            for key, (name, f) in flags.items()}


def _records(run: Path) -> list[dict[str, Any]] | None:
    """The records of ``run/generations.jsonl`` (None when the run kept none)."""
    path = run / RunDir.GENERATIONS
    if not path.exists():
        return None
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _flag(v: Any) -> float | None:
    return None if v is None else float(bool(v))


def _outcome(v: Any) -> float | None:
    return None if v is None else 100.0 * float(v)


def is_rate(metric: str) -> bool:
    """True for figures in 0..1 (harmful, refusal and accuracy rates: per prompt, 0/1 verdicts), by the metric
    catalogue's unit."""
    return metric_bounds(metric) == (0.0, 1.0)


def on_percent_scale(metric: str) -> bool:
    """True for figures in 0..100 (win rates), by the metric catalogue's unit."""
    return metric_bounds(metric) == (0.0, 100.0)


def _run_figure(run: Path, metric: str) -> float | None:
    v = RunDir(run).read_metrics().get(metric)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def cell(runs: list[Path], metric: str, n_boot: int = 1000, seed: int = 0) -> dict[str, Any] | None:
    """Mean over ``runs`` (one per seed) of ``metric`` with its interval (module docstring); None if absent."""
    if len(runs) == 1 and _run_figure(runs[0], metric) is not None:
        # One seed: the run's own figure and interval (Wilson for proportions, bootstrap for averages).
        own = RunDir(runs[0]).read_metrics()
        ci = own.get(f"{metric}_ci")
        return {"value": _run_figure(runs[0], metric), "n": own.get(f"{metric}_n"), "seeds": 1,
                "ci": list(ci) if isinstance(ci, list) and len(ci) == 2 else None}
    per_prompt = [prompt_values(r, metric) for r in runs]
    if per_prompt and all(p is not None for p in per_prompt):
        groups = [list(p.values()) for p in per_prompt]  # type: ignore[union-attr]
        # a rate of 0/1 verdicts also gets the Wilson bound, so its interval never collapses to [0, 0]; Safety
        # Avg's weighted verdicts are no count of successes (with one safety set they are 0/1 again)
        binary = is_rate(metric) and all(v in (0.0, 1.0) for g in groups for v in g if v is not None)
        return seeds_mean(groups, n_boot, seed, binary=binary)
    vals = [v for v in (_run_figure(r, metric) for r in runs) if v is not None]
    if not vals:
        return None
    ci = None
    if len(vals) >= 2:
        rng = np.random.default_rng(seed)
        boots = np.asarray(vals)[rng.integers(0, len(vals), size=(n_boot, len(vals)))].mean(axis=1)
        ci = [float(x) for x in np.percentile(boots, [2.5, 97.5])]
    return {"value": float(np.mean(vals)), "n": None, "seeds": len(vals), "ci": ci}


def paired(row: dict[int, Path], base: dict[int, Path], metric: str, n_boot: int = 1000,
           seed: int = 0) -> dict[str, Any] | None:
    """Row minus baseline on the seeds both have, prompt by prompt; None if the metric is not per-prompt."""
    seeds = sorted(row.keys() & base.keys())
    a = [prompt_values(row[s], metric) for s in seeds]
    b = [prompt_values(base[s], metric) for s in seeds]
    if not seeds or any(x is None for x in a + b):
        return None
    return paired_difference(a, b, lower_is_better(metric), n_boot, seed)  # type: ignore[arg-type]


def fmt_stat(stat: dict[str, Any] | None, signed: bool = False, metric: str = "") -> str:
    """``value [lo, hi]``: two decimals for rates and differences of rates; one for figures above 1 and for
    any figure of ``metric`` on a 0-100 scale (win rates), so that a column keeps one format."""
    if stat is None or stat.get("value") is None:
        return "-"
    f = (lambda x: f"{x:+.2f}") if signed else (lambda x: f"{x:.2f}")
    if abs(stat["value"]) > 1.0 or on_percent_scale(metric):
        f = (lambda x: f"{x:+.1f}") if signed else (lambda x: f"{x:.1f}")
    ci = stat.get("ci")
    return f(stat["value"]) + (f" [{f(ci[0])}, {f(ci[1])}]" if ci else "")


def seeded_report(rows: dict[str, dict[int, Path]], metrics: list[tuple[str, str]], baseline: str | None,
                  n_boot: int = 1000, with_table: bool = True) -> str:
    """Markdown: the table of means over seeds, then headroom and paired verdicts against ``baseline``.

    ``rows``: label -> {seed: run folder}; ``metrics``: (column label, metric name) in table order;
    ``with_table=False`` leaves the table out (a one-seed report that already printed its own).
    """
    seeds = sorted({s for by_seed in rows.values() for s in by_seed})
    head = "| run | seeds | " + " | ".join(c for c, _ in metrics) + " |"
    lines = [head, "|---|---|" + "---|" * len(metrics)]
    for label, by_seed in rows.items():
        runs = [by_seed[s] for s in sorted(by_seed)]
        cells = [fmt_stat(cell(runs, m, n_boot), metric=m) for _, m in metrics]
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    out = [f"Seeds: {', '.join(map(str, seeds))} (seed, data.seed and selection.seed; the aligned model is "
           "the same for all). Cells: mean over seeds, 95% interval from a two-level bootstrap (seeds, then "
           "prompts within each seed; a single run keeps its own interval, Wilson for rates).", "",
           "\n".join(lines), ""] if with_table else []
    out += [precision_line(rows), ""]
    if "aligned" not in rows:
        out += ["The aligned starting model is not a row of this table: add `aligned` to `compare` to print its "
                "figures beside the others.", ""]
    per_prompt = [(c, m) for c, m in metrics if m in per_prompt_metrics(rows, [m])]
    if FLOOR in rows and CEILING in rows:
        hl = ["| figure | headroom (full - oracle) | smallest detectable |", "|---|---|---|"]
        for c, m in per_prompt:
            d = paired(rows[CEILING], rows[FLOOR], m, n_boot)
            if d is not None:
                hl.append(f"| {c} | {fmt_stat(d, signed=True, metric=m)} | {d['detectable']:.2f} |")
        out += ["Headroom: `full` (ceiling) minus `oracle` (floor, drops the ground-truth bad rows), paired "
                "on the same prompts and seeds.", "", "\n".join(hl), ""]
    else:
        out += ["Headroom: not measured (needs both `oracle` and `full` rows).", ""]
    if baseline is not None:
        if baseline not in rows:
            out += [f"Baseline `{baseline}` is not a row of this table: no paired verdicts.", ""]
        else:
            out += [paired_section(rows, baseline, per_prompt, n_boot), ""]
    return "\n".join(out)


def has_prompt_values(by_seed: dict[int, Path], metric: str) -> bool:
    """True when every run of a row has per-prompt values for ``metric``."""
    return bool(by_seed) and all(prompt_values(p, metric) is not None for p in by_seed.values())


def per_prompt_metrics(rows: dict[str, dict[int, Path]], metrics: list[str]) -> list[str]:
    """The ``metrics`` that at least two rows have per prompt in every run: those can be paired. A row without
    them (the win-rate reference, which is not compared with itself) is left out of that metric's pairs. Safety
    Avg over a single safety set is that set's harmful rate again, so it is not paired twice."""
    names = {k for by_seed in rows.values() for run in by_seed.values() for k in RunDir(run).read_metrics()}
    return [m for m in metrics if sum(has_prompt_values(by, m) for by in rows.values()) >= 2
            and not single_set_safety_avg(m, names)]


def precision_line(rows: dict[str, dict[int, Path]]) -> str:
    """One sentence: the fine-tune and decoding precision the rows ran with (from each run's config.yaml), or,
    when rows differ, which row ran with which: their paired differences then include the precision."""
    def of(run: Path, tuned: bool) -> str:
        saved = RunDir(run).saved_config() or {}
        ft, ev = saved.get("finetune", {}), saved.get("eval", {})
        # configs written before the key existed ran float32; `aligned` is not fine-tuned at all
        tune = f"fine-tune {'bf16 autocast' if ft.get('mixed_precision') == 'bf16' else 'float32'}, " if tuned else ""
        return f"{tune}decoding {ev.get('dtype', 'float32')}"

    per_row = {label: sorted({of(p, label != "aligned") for p in by_seed.values()}) for label, by_seed in rows.items()}
    tuned = {k for label, ks in per_row.items() if label != "aligned" for k in ks}
    decoding = {k.rsplit(", ", 1)[-1] for ks in per_row.values() for k in ks}
    if len(tuned) <= 1 and len(decoding) <= 1:
        return f"Precision: {next(iter(tuned or decoding), 'unknown')} in every run."
    return ("Precision differs between runs (their paired differences include it): "
            + "; ".join(f"{label}: {' / '.join(ks)}" for label, ks in per_row.items()) + ".")


def paired_section(rows: dict[str, dict[int, Path]], baseline: str, metrics: list[tuple[str, str]],
                   n_boot: int = 1000) -> str:
    """Every row against ``baseline``: paired difference [95%], verdict, smallest detectable difference."""
    lines = [f"Paired against `{baseline}` (row - baseline on the same prompts and seeds; 95% two-level "
             "bootstrap interval; `better` / `worse` when it excludes 0, lower is better for harm and refusal "
             "rates). The smallest detectable difference is (z_0.975 + z_0.8) x SE of the paired mean "
             "difference: what this run would find with 80% power at alpha 0.05.", "",
             "| run | figure | difference | verdict | smallest detectable |", "|---|---|---|---|---|"]
    for label, by_seed in rows.items():
        if label == baseline:
            continue
        for c, m in metrics:
            d = paired(by_seed, rows[baseline], m, n_boot)
            if d is None or d["value"] is None:
                continue
            lines.append(f"| {label} | {c} | {fmt_stat(d, signed=True, metric=m)} | {d['verdict']} | "
                         f"{d['detectable']:.{1 if on_percent_scale(m) else 2}f} |")
    return "\n".join(lines)
