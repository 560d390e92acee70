"""Ablation reports from fabricated results: results.csv, report.md (means, t-intervals, best marked, metrics we
cannot compute listed), plots, and ``safeselect report DIR``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from safeselect.ablation.grid import expand, run_dir
from safeselect.ablation.plan import load_plan
from safeselect.ablation.runner import run_plan
from safeselect.cli.main import main
from safeselect.core.metrics import metric_bounds
from safeselect.core.stats import t_interval
from safeselect.reporting.ablation import build_report

PLAN = """
name: fab
base: {selection.method: seal}
seeds: [0, 1, 2]
bounds: false
ablations:
  - name: gamma value
    parameter: selection.seal.gamma.value
    replacements: [0.1, 0.5]
    metrics: [win rate, safety alignment score, Arena-Hard WR, vibes]
  - name: percentage
    parameter: selection.ratio
    replacements: ["10%", "90%"]
    metrics: [training time]
"""


def fabricated(kind: str, cfg: Any, out_dir: Path, reference_dir: Path | None, show_progress: bool) -> None:
    """Known numbers: win rate = 50 + 60 * gamma + seed (seeds 0, 1, 2 -> mean 51 + 60 gamma, sd 1)."""
    g, s = cfg.selection.seal.gamma.value, cfg.seed
    metrics: dict[str, Any] = {"safety_avg": {"refusal": 0.5 - g / 2}, "resources": {"train_s": 10 * cfg.selection.ratio},
                               "complete": True}
    if reference_dir is not None:
        metrics["win_rate"] = {"builtin": {"rule": 50 + 60 * g + s, "rule_ci": [1.0, 2.0], "rule_n": 9}}
    (out_dir / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    (tmp / "fab.yaml").write_text(PLAN)
    out = tmp / "out"
    plan = load_plan(tmp / "fab.yaml")
    run_plan(plan, out, workers=0, run_fn=fabricated, show_progress=False)
    # one run killed half-way: its metrics.json is there but not complete, and must not be counted
    grid = expand(plan)
    victim = next(c.run_id for c in grid.cells if c.label == "0.5" and c.seed == 2)
    (run_dir(out, victim) / "metrics.json").write_text(json.dumps({"complete": False, "win_rate": {"builtin": {
        "rule": 0.0}}}))
    build_report(out)
    return out


def test_t_interval_exact() -> None:
    mean, lo, hi = t_interval([1.0, 2.0, 3.0])
    half = 4.302652729749464 * 1.0 / 3 ** 0.5  # t(0.975, 2) * sd / sqrt(n)
    assert mean == 2.0 and lo == pytest.approx(2.0 - half, abs=1e-9) and hi == pytest.approx(2.0 + half, abs=1e-9)
    assert t_interval([4.0]) == (4.0, None, None)
    # two seeds of a rate: t(0.975, 1) = 12.706 would reach below 0; the metric's range clips it
    mean, lo, hi = t_interval([0.0, 0.1], bounds=metric_bounds("safety_avg.refusal"))
    assert mean == pytest.approx(0.05) and lo == 0.0 and hi == pytest.approx(0.05 + 12.706204736 * 0.05, abs=1e-6)
    assert metric_bounds("win_rate.builtin.rule") == (0.0, 100.0)
    assert metric_bounds("overrefusal.lookalike.refusal_rate") == (0.0, 1.0)
    assert metric_bounds("resources.train_s") is None


def test_results_csv_has_one_row_per_cell_and_only_complete_metrics(done: Path) -> None:
    rows = list(csv.DictReader((done / "results.csv").open()))
    assert len(rows) == 1 + 2 * 3 + 2 * 3  # reference + cells
    assert rows[0]["ablation"] == "reference" and rows[0]["status"] == "complete"
    assert {"run_id", "ablation", "parameter", "replacement", "value", "seed", "status",
            "win_rate.builtin.rule", "win_rate.builtin.rule_ci", "safety_avg.refusal"} <= set(rows[0])
    r = next(r for r in rows if r["replacement"] == "0.1" and r["seed"] == "1")
    assert float(r["win_rate.builtin.rule"]) == 57.0 and json.loads(r["win_rate.builtin.rule_ci"]) == [1.0, 2.0]
    killed = next(r for r in rows if r["replacement"] == "0.5" and r["seed"] == "2")
    assert killed["status"] == "incomplete" and killed["win_rate.builtin.rule"] == ""


def test_report_table_mean_interval_best_reference_and_missing_metrics(done: Path) -> None:
    md = (done / "report.md").read_text()
    # gamma 0.1: win rates 56, 57, 58 -> 57 +- t(0.975, 2) * 1 / sqrt(3) = 57.0 [54.5, 59.5]
    assert "| 0.1 | 0.1 | 3/3 | 57.0 [54.5, 59.5] | 0.450 [0.450, 0.450] |" in md
    # gamma 0.5: 80, 81 (the killed seed 2 is excluded) -> 80.5 +- t(0.975, 1) * 0.707 / sqrt(2), the best
    assert "| 0.5 | 0.5 | 2/3 | **80.5 [74.1, 86.9]** |" in md
    assert "| reference (shared run) | - | 1/1 |" in md
    assert "95% Student-t interval" in md
    # lower Safety Avg is better: 0.5 (0.25) beats 0.1 (0.45), bold
    assert "| **80.5 [74.1, 86.9]** | **0.250 [0.250, 0.250]** |" in md and "**0.450" not in md
    assert "'Arena-Hard WR' (win_rate.arenahard.*): not computed by these runs" in md
    assert "'vibes': not computed: no safeselect metric matches this name" in md
    assert "Not counted (not complete):" in md
    # the percentage ablation: training time only
    assert "`resources.train_s` ↓" in md
    assert "- `resources.train_s`: wall time of the final fine-tune on the kept rows (s)" in md


def test_plots_are_written_per_ablation_and_metric(done: Path) -> None:
    pngs = sorted(p.name for p in (done / "plots").glob("*.png"))
    assert pngs == ["gamma-value__safety-avg-refusal.png", "gamma-value__win-rate-builtin-rule.png",
                    "percentage__resources-train-s.png"]
    for p in (done / "plots").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000
    md = (done / "report.md").read_text()
    assert "](plots/gamma-value__win-rate-builtin-rule.png)" in md


def test_cli_report_rebuilds_from_files(done: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (done / "report.md").unlink()
    (done / "results.csv").unlink()
    assert main(["report", str(done)]) == 0
    assert "12 of 13 runs complete" in capsys.readouterr().out
    assert (done / "report.md").exists() and (done / "results.csv").exists()


def test_cli_report_on_a_folder_that_is_not_an_ablation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "no plan.json" in capsys.readouterr().err


def test_run_table_adds_safety_avg_only_with_two_safety_sets() -> None:
    from safeselect.core.metrics import headline_columns

    one = {"safety.builtin.refusal.harmful_rate": 0.5, "safety_avg.refusal": 0.5, "safety_avg.refusal_n": 40}
    two = {**one, "safety.hh.refusal.harmful_rate": 0.3, "safety_avg.refusal": 0.4}
    assert [label for label, _ in headline_columns(one)] == ["harmful rate (builtin, refusal)"]
    assert headline_columns(two) == [("harmful rate (builtin, refusal)", "safety.builtin.refusal.harmful_rate"),
                                     ("harmful rate (hh, refusal)", "safety.hh.refusal.harmful_rate"),
                                     ("Safety Avg (refusal, mean harmful rate)", "safety_avg.refusal")]


def test_cli_report_on_a_folder_of_runs_orders_rows_and_flags_unlike_runs(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from safeselect.config import loading
    from safeselect.core.dotted import nest

    def fake_run(name: str, harmful: float, **overrides: Any) -> None:
        d = tmp_path / name
        d.mkdir()
        cfg = loading.build({"selection.method": name, **overrides})
        (d / "config.yaml").write_text(loading.to_yaml(cfg))
        m = {"safety.builtin.refusal.harmful_rate": harmful, "win_rate.builtin.rule": 60.0, "complete": True}
        (d / "metrics.json").write_text(json.dumps(nest(m)))

    fake_run("seal", 0.25)
    recs = [{"row_id": "a", "score": 2.0, "harmful": False}, {"row_id": "b", "score": 1.0, "harmful": True},
            {"row_id": "c", "score": 0.5, "harmful": False}, {"row_id": "s", "score": None, "added": True}]
    (tmp_path / "seal" / "selection.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    fake_run("full", 0.9)
    fake_run("aligned", 0.05)
    (tmp_path / "unfinished").mkdir()
    assert main(["report", str(tmp_path), "--no-win-rates"]) == 0
    text = (tmp_path / "report.md").read_text()
    assert capsys.readouterr().out.strip() == text.strip()
    rows = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows == ["| run", "| aligned", "| full", "| seal"]
    assert "| seal | 0.25 | 0.50 |" in text and "ranking AUC" in text  # derived from selection.jsonl: 1 of 2 pairs
    assert "win rate" not in text and "Not like-for-like" not in text
    fake_run("random", 0.8, **{"finetune.lr": 0.1})
    assert main(["report", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "win rate (builtin.rule)" in text
    assert "Not like-for-like" in text and "`finetune.lr`" in text and "random=0.1" in text


def test_single_seed_runs_carry_their_bootstrap_interval_to_the_plot(tmp_path: Path) -> None:
    from safeselect.reporting.ablation import _interval, ablation_table

    assert _interval("[0.1, 0.3]") == (0.1, 0.3) and _interval([1, 2]) == (1.0, 2.0)
    assert _interval("") is None and _interval(None) is None and _interval("[1]") is None
    ablation = {"name": "a", "parameter": "selection.ratio", "part": "selection.ratio", "how": "", "runner": "pipeline",
                "slug": "a", "replacements": [{"label": "x", "value": 0.5}, {"label": "y", "value": 0.9}],
                "metrics": [{"name": "safety_avg.refusal", "patterns": ["safety_avg.refusal"], "label": "", "note": ""}]}
    rows = [{"run_id": "1", "ablation": "a", "replacement": "x", "seed": 0, "status": "complete",
             "safety_avg.refusal": 0.2, "safety_avg.refusal_ci": "[0.1, 0.3]"},
            {"run_id": "2", "ablation": "a", "replacement": "y", "seed": 0, "status": "complete",
             "safety_avg.refusal": 0.4}]
    _, _, data = ablation_table(ablation, rows, None)
    assert data["run_ci"]["safety_avg.refusal"] == {"x": (0.1, 0.3)}


def test_run_reports_describe_the_level_mix() -> None:
    from safeselect.config import loading
    from safeselect.reporting.runs import data_desc

    assert data_desc(loading.load("quickstart", ["data.difficulty=hard"])) == "`builtin` (hard, harmful ratio 0.2)"
    # erosion has no harmful rows: its mix is the eroding share
    assert data_desc(loading.load("quickstart", ["data.difficulty=erosion", "data.erosion_ratio=0.3"])) == (
        "`builtin` (erosion, eroding share 0.3, no harmful rows)")


def test_rows_of_a_folder_report_frame_the_methods() -> None:
    from safeselect.reporting.runs import _order

    names = ["seal", "loss", "dsir", "full", "aligned", "random", "oracle", "dualselect"]
    assert _order(names) == ["aligned", "oracle", "full", "random", "loss", "dsir", "dualselect", "seal"]
    assert _order(["seal", "full", "b"]) == ["full", "b", "seal"]
