"""The six shipped ablation plans and `compare` (every selector) end to end on tiny-llama at smoke scale: real runs (pipeline and eva), one seed,
then report.md, results.csv and plots. Slow-ish (every run trains and evaluates a tiny model)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from safeselect.ablation.grid import expand, run_dir
from safeselect.ablation.plan import load_plan
from safeselect.ablation.runner import run_plan
from safeselect.core.rundir import is_complete
from safeselect.reporting.ablation import build_report

# Tiny data and models: each run takes seconds. SEAL and eva knobs cut to one short epoch / iteration.
TINY = {
    "model.name": "tiny-llama", "device": "cpu", "model.max_length": 80, "data.n_task": 16,
    "data.n_eval_harmful": 4, "data.n_eval_overrefusal": 2, "data.n_eval_task": 4, "data.safety_ref.n": 8,
    "align.n_refusals": 6, "align.n_benign": 6, "align.train.epochs": 1, "finetune.epochs": 1,
    "eval.max_new_tokens": 4, "eval.bootstrap": 20, "selection.seal.epochs": 1,
    "eva.iterations": 1, "eva.n_prompts": 4, "eva.responses_per_prompt": 2, "eva.evolutions": 1,
    "eva.max_new_tokens": 4, "eva.creator_max_new_tokens": 8, "eva.n_heldout": 2, "eva.min_prompt_chars": 1,
    "selection.dualselect.warmup_steps": 1,
}
SIX = {  # plan -> (rows in its table, a metric column its report must show)
    "seal_algorithm": (2, "resources.peak_memory_mb"),
    "seal_gamma_schedule": (3, "win_rate.builtin.rule"),
    "seal_gamma_value": (5, "safety_avg.refusal"),
    "seal_selection_ratio": (5, "selection.harmful_kept_fraction"),
    "eva_creator": (2, "eva.win_rate.rule"),
    "eva_sample_ratio": (3, "eva.reward.delta"),
    "compare": (8, "selection.harmful_kept_fraction"),  # safeinstr with its default count beside the rest
}


@pytest.mark.slow
def test_shipped_plans_run_on_tiny_llama(tmp_path: Path) -> None:
    for name, (n_rows, metric) in SIX.items():
        out = tmp_path / name
        plan = load_plan(name, overrides=TINY, seeds=[0])
        # the bounds runs (oracle, full per seed, the aligned model once) on one plan: each costs a run, and one
        # plan shows they work
        bounds = 3 if name == "seal_algorithm" else 0
        plan.bounds = bool(bounds)
        # in this process (workers=0): no interpreter start-up per run, which would dominate at this scale
        outcomes = run_plan(plan, out, workers=0, show_progress=False)
        build_report(out)
        failed = [f"{o.run_id}: {o.error}" for o in outcomes if o.status == "failed"]
        assert not failed, failed
        grid = expand(plan)
        assert all(is_complete(run_dir(out, r.run_id)) for r in grid.runs)
        rows = list(csv.DictReader((out / "results.csv").open()))
        assert len(rows) == n_rows + (grid.reference_id is not None) + bounds
        assert all(r["status"] == "complete" for r in rows)
        md = (out / "report.md").read_text()
        assert f"`{metric}`" in md, (name, md)
        assert md.count(" | 1/1 | ") == n_rows + (grid.reference_id is not None) + bounds
        assert ("Headroom of the base config (`full` - `oracle` bounds runs, paired): "
                "`safety.builtin.refusal.harmful_rate`" in md) == bool(bounds), (name, md)
        assert ("| aligned (the starting model, no fine-tuning) | - | 1/1 | " in md) == bool(bounds), (name, md)
        assert list((out / "plots").glob("*.png"))
        if name.startswith("seal_"):  # whatever the plan names, safety is shown and paired per prompt
            assert "`safety.builtin.refusal.harmful_rate` ↓ |" in md and "Paired against" in md, (name, md)
