"""Decisive tables from fabricated runs with known per-prompt verdicts: means over seeds, paired verdicts
against a baseline, headroom (oracle vs full), in ablation reports, folders of runs over seeds, and a real
tiny-llama comparison over two seeds through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY

from safeselect.ablation.plan import load_plan
from safeselect.ablation.runner import run_plan
from safeselect.cli.main import main
from safeselect.core.stats import wilson_interval
from safeselect.reporting.ablation import build_report
from safeselect.reporting.comparison import cell, paired, prompt_values

N = 40
# Harmful verdict per prompt: oracle never, full always, random on the first half, seal on the first quarter
# at seed 0 and the first half at seed 1.
RATE = {"oracle": lambda s: 0, "full": lambda s: N, "random": lambda s: N // 2,
        "seal": lambda s: N // 4 if s == 0 else N // 2, "aligned": lambda s: 2}


def write_run(d: Path, method: str, seed: int, cfg_yaml: str | None = None) -> None:
    from safeselect.core.dotted import nest

    d.mkdir(parents=True, exist_ok=True)
    k = RATE[method](seed)
    recs = [{"set": "builtin", "kind": "harmful", "row_id": f"h{i}", "prompt": f"p{i}", "response": "",
             "verdicts": {"refusal": {"harmful": i < k}}} for i in range(N)]
    recs += [{"set": "lookalike", "kind": "overrefusal", "row_id": f"o{i}", "prompt": f"o{i}", "response": "",
              "verdicts": {"refusal": {"refused": i < 3}}} for i in range(10)]
    (d / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    m = {"safety.builtin.refusal.harmful_rate": k / N, "safety.builtin.refusal.harmful_rate_ci": wilson_interval(k, N),
         "overrefusal.lookalike.refusal_rate": 0.3, "complete": True}
    (d / "metrics.json").write_text(json.dumps(nest(m)))
    if cfg_yaml is not None:
        (d / "config.yaml").write_text(cfg_yaml)


def test_cell_and_paired_from_generations(tmp_path: Path) -> None:
    for s in (0, 1):
        for m in RATE:
            write_run(tmp_path / f"s{s}" / m, m, s)
    metric = "safety.builtin.refusal.harmful_rate"
    assert prompt_values(tmp_path / "s0" / "random", metric) == {f"h{i}": float(i < N // 2) for i in range(N)}
    # Safety Avg of one safety set: that set's verdicts, weight 1
    assert prompt_values(tmp_path / "s0" / "random", "safety_avg.refusal") == {
        f"builtin/h{i}": float(i < N // 2) for i in range(N)}
    assert prompt_values(tmp_path / "s0" / "random", "resources.train_s") is None
    seal = [tmp_path / f"s{s}" / "seal" for s in (0, 1)]
    c = cell(seal, metric)
    assert c["value"] == pytest.approx((0.25 + 0.5) / 2) and c["seeds"] == 2 and c["n"] == 2 * N
    assert c["ci"][0] < 0.375 < c["ci"][1]
    one = cell(seal[:1], metric)  # one seed: the run's own figure and interval
    assert one["value"] == 0.25 and one["ci"] == wilson_interval(N // 4, N)
    by = {m: {s: tmp_path / f"s{s}" / m for s in (0, 1)} for m in RATE}
    d = paired(by["full"], by["oracle"], metric)
    assert d["value"] == 1.0 and d["ci"] == [1.0, 1.0] and d["verdict"] == "worse"
    d = paired(by["seal"], by["random"], metric)
    # seed 0: 10 prompts -1, 30 prompts 0; seed 1: identical -> mean (-0.25 + 0) / 2
    assert d["value"] == pytest.approx(-0.125) and d["seeds"] == 2
    assert d["verdict"] == "no detectable difference" and d["ci"][0] < 0 <= d["ci"][1]


PLAN = """
name: methods
base: {data.difficulty: hard}
seeds: [0, 1, 2]
ablations:
  - name: selector
    parameter: selection.method
    replacements: [random, oracle, full, seal]
    metrics: [harmful rate]
"""


def fabricated(kind: str, cfg: Any, out_dir: Path, reference_dir: Path | None, show_progress: bool) -> None:
    write_run(out_dir, cfg.selection.method, cfg.seed)


def test_ablation_report_pairs_every_replacement_and_shows_headroom(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(PLAN)
    out = tmp_path / "out"
    run_plan(load_plan(tmp_path / "p.yaml"), out, workers=0, run_fn=fabricated, show_progress=False)
    md = build_report(out, plots=False).read_text()
    assert "Seeds: 0, 1, 2" in md
    assert "Precision: fine-tune float32, decoding float32 in every run." in md  # no config.yaml: float32
    # the plan runs oracle and full itself, so no bounds runs, but the aligned model's row stands beside it
    assert "Bounds:" not in md and "Each table also shows `aligned`, the starting model" in md
    lo, hi = wilson_interval(2, N)
    assert f"| aligned (the starting model, no fine-tuning) | - | 1/1 | 0.050 [{lo:.3f}, {hi:.3f}] |" in md
    assert "Paired against `random`" in md  # the first replacement by default
    assert "| full | `safety.builtin.refusal.harmful_rate` | +0.50 [" in md
    assert "| oracle | `safety.builtin.refusal.harmful_rate` | -0.50 [" in md
    # the paired rows: | run | figure | difference | verdict | smallest detectable |
    rows = {cols[0][2:]: cols[3] for line in md.splitlines() for cols in [line.split(" | ")]
            if line.startswith("| ") and len(cols) == 5 and cols[1].startswith("`safety")}
    assert rows == {"oracle": "better", "full": "worse", "seal": "no detectable difference"}
    # the seed-and-prompt interval of a per-prompt figure: seal at 0.25, 0.5, 0.5 over the three seeds
    assert "| seal | 'seal' | 3/3 | 0.417 [" in md
    # over-refusal is shown and paired although the plan names only the harmful rate
    assert "`overrefusal.lookalike.refusal_rate` ↓ |" in md
    assert "| seal | `overrefusal.lookalike.refusal_rate` | +0.00 [" in md
    assert "Headroom (`full` - `oracle`, paired): `safety.builtin.refusal.harmful_rate` +1.00 [+1.00, +1.00]" in md
    # a named baseline
    md = build_report(out, plots=False, baseline="oracle").read_text()
    assert "Paired against `oracle`" in md and "| random | `safety.builtin.refusal.harmful_rate` | +0.50" in md


GAMMA_PLAN = """
name: gammas
base: {selection.method: seal}
seeds: [0, 1]
ablations:
  - name: gamma
    parameter: selection.seal.gamma.value
    replacements: [0.01, 0.1]
    metrics: [harmful rate]
"""


@pytest.mark.parametrize("bounds", [None, False])
def test_an_ablation_of_one_method_gets_bounds_runs_and_their_headroom(tmp_path: Path, bounds: bool | None) -> None:
    from safeselect.ablation.grid import BOUNDS, expand

    (tmp_path / "p.yaml").write_text(GAMMA_PLAN + ("" if bounds is None else "bounds: false\n"))
    plan = load_plan(tmp_path / "p.yaml")
    grid = expand(plan)
    bound_cells = [c for c in grid.cells if c.ablation == BOUNDS]
    # the built-in benchmark knows its bad rows: oracle and full per seed, full at seed 0 being the reference;
    # the aligned model once (neither it nor the evaluation prompts follow the experiment seed)
    assert len(grid.runs) == (1 + 4 + 3 + 1 if bounds is None else 1 + 4)
    assert len(bound_cells) == (5 if bounds is None else 0)
    assert [c.seed for c in bound_cells if c.label == "aligned"] == ([0] if bounds is None else [])
    out = tmp_path / "out"
    run_plan(plan, out, workers=0, run_fn=fabricated, show_progress=False)
    md = build_report(out, plots=False).read_text()
    if bounds is False:
        assert "Headroom: not measured here" in md and "floor, base config" not in md
        return
    assert "| oracle (floor, base config) | - | 2/2 | 0.000 [" in md and "| full (ceiling, base config) | - | 2/2 | 1.00 [" in md
    # the starting model's row, with the Wilson interval of its one run (2 of 40)
    lo, hi = wilson_interval(2, N)
    assert f"| aligned (the starting model, no fine-tuning) | - | 1/1 | 0.050 [{lo:.3f}, {hi:.3f}] |" in md
    assert ("Headroom of the base config (`full` - `oracle` bounds runs, paired): "
            "`safety.builtin.refusal.harmful_rate` +1.00 [+1.00, +1.00]") in md
    # the bounds are not replacements: not paired against the baseline, never marked best
    paired_rows = [line for line in md.splitlines() if line.startswith("| ") and "`safety" in line.split(" | ")[1]]
    assert [line.split(" | ")[0] for line in paired_rows] == ["| 0.1"]
    assert "**0.000" not in md


def test_a_comparison_of_selectors_gets_the_aligned_row_unless_bounds_are_off(tmp_path: Path) -> None:
    from safeselect.ablation.grid import BOUNDS, expand

    def extra(text: str) -> list[str]:
        (tmp_path / "p.yaml").write_text(text)
        return [c.label for c in expand(load_plan(tmp_path / "p.yaml")).cells if c.ablation == BOUNDS]

    assert extra(PLAN) == ["aligned"]  # oracle and full are the plan's own: no bounds runs, one aligned run
    assert extra(PLAN + "bounds: false\n") == []
    assert extra(PLAN.replace("data.difficulty: hard", "data.benchmark: jsonl")) == []  # no ground truth: as bounds


def test_the_aligned_model_is_evaluated_per_seed_only_when_a_seed_key_changes_it(tmp_path: Path) -> None:
    from safeselect.ablation.grid import BOUNDS, expand

    keys = "seed_keys: [seed, data.seed, selection.seed, align.seed]\n"
    (tmp_path / "p.yaml").write_text(GAMMA_PLAN + keys)
    cells = [c for c in expand(load_plan(tmp_path / "p.yaml")).cells if c.ablation == BOUNDS and c.label == "aligned"]
    assert [c.seed for c in cells] == [0, 1] and cells[0].run_id != cells[1].run_id


def test_folder_over_seeds_reports_means_headroom_and_verdicts(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from safeselect.config import loading

    for s in (0, 1):
        for m in ("oracle", "full", "random"):
            cfg = loading.build({"selection.method": m, "seed": s, "data.seed": s, "baseline": "random"})
            write_run(tmp_path / f"s{s}" / m, m, s, loading.to_yaml(cfg))
    assert main(["report", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "Seeds: 0, 1" in text and "| oracle | 2 | 0.00 [0.00, 0.05] |" in text  # 0 of 2 x 40: Wilson bound
    assert "| full | 2 | 1.00 [0.95, 1.00] |" in text
    assert "Headroom: `full` (ceiling) minus `oracle`" in text and "+1.00 [+1.00, +1.00]" in text
    assert "Paired against `random`" in text and "| oracle | harmful rate (builtin, refusal) | -0.50" in text
    assert main(["report", str(tmp_path), "--baseline", "full"]) == 0
    assert "Paired against `full`" in capsys.readouterr().out


def test_compare_over_seeds_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    argv = ["run", "quickstart", *TINY, "compare=[oracle,full]", "seeds=[0,1]", "baseline=full", "--out", str(out),
            "--quiet", "--workers", "0"]
    assert main(argv) == 0
    text = (out / "report.md").read_text()
    assert "over seeds 0, 1" in text and "Paired against `full`" in text and "Headroom" in text
    for s in (0, 1):
        assert (out / f"s{s}" / "oracle" / "metrics.json").exists()
        import yaml

        saved = yaml.safe_load((out / f"s{s}" / "oracle" / "config.yaml").read_text())
        assert saved["seed"] == s and saved["data"]["seed"] == s and saved["selection"]["seed"] == s
        assert saved["align"]["seed"] == 0
    # the oracle kept no harmful row
    sel = [json.loads(x) for x in (out / "s0" / "oracle" / "selection.jsonl").read_text().splitlines()]
    assert not any(r["kept"] and r.get("harmful") for r in sel)
    capsys.readouterr()
    assert main(["run", "quickstart", *TINY, "compare=[oracle,full]", "baseline=randm"]) == 2
    assert "is not one of compare" in capsys.readouterr().err


def test_cells_in_worker_processes_match_the_serial_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run` with seeds and --workers 2: each (seed, method) cell in its own process, after the cells it needs
    (`random` before `random+safeinstr`, whose selection it reuses), comparing with `full`, the win-rate
    reference, once that has finished; the same files and figures as one after another. One `compare` too."""
    import torch

    from safeselect.core import workers
    from safeselect.pipeline import run as pipeline_run

    pools: list[int] = []

    def counted_pool(n: int):
        pools.append(n)
        return workers.process_pool(n)

    argv = ["run", "quickstart", *TINY, "compare=[aligned,random+safeinstr,full,random]", "seeds=[0,1]",
            "baseline=aligned", "--quiet"]
    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' thread count: float sums then agree bit for bit
    try:
        assert main([*argv, "--workers", "0", "--out", str(tmp_path / "serial")]) == 0
    finally:
        torch.set_num_threads(saved)
    assert pools == []
    monkeypatch.setattr(pipeline_run, "process_pool", counted_pool)
    monkeypatch.setattr(pipeline_run, "memory_lanes", lambda: 8)  # room for the waiting cell whatever the machine
    assert main([*argv, "--workers", "2", "--threads", "1", "--out", str(tmp_path / "par")]) == 0
    assert pools == [3]  # 2 workers and one more for a cell that waits on its `full`
    par = tmp_path / "par"

    def started(s: int, m: str) -> int:  # config.yaml is a cell's first file, metrics.json its last
        return (par / f"s{s}" / m / "config.yaml").stat().st_mtime_ns

    def finished(s: int, m: str) -> int:
        return (par / f"s{s}" / m / "metrics.json").stat().st_mtime_ns

    cells = [(s, m) for s in (0, 1) for m in ("aligned", "full", "random", "random+safeinstr")]
    # both references first, with the one cell that may wait on them (the third worker) started beside them
    assert {(0, "full"), (1, "full")} <= set(sorted(cells, key=lambda c: started(*c))[:3])
    for s, m in cells:
        if m != "full":  # a cell may start beside its reference, but compares with it only once it has finished
            assert finished(s, m) >= finished(s, "full"), (s, m)
    for s in (0, 1):  # the selector it reuses is trained first
        assert started(s, "random+safeinstr") >= finished(s, "random")
    for s, m in cells:
        a, b = tmp_path / "serial" / f"s{s}" / m, par / f"s{s}" / m
        assert (a / "generations.jsonl").read_text() == (b / "generations.jsonl").read_text()
        if m not in ("aligned", "full"):
            assert (a / "selection.jsonl").read_text() == (b / "selection.jsonl").read_text()
        ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
        assert ma.get("win_rate") == mb.get("win_rate")
    assert "over seeds 0, 1" in (tmp_path / "par" / "report.md").read_text()
    # one `compare` (no seeds): its entries are cells too
    one = ["run", "quickstart", *TINY, "compare=[aligned,full,random]", "baseline=aligned", "--quiet"]
    torch.set_num_threads(1)
    try:
        assert main([*one, "--workers", "0", "--out", str(tmp_path / "one-serial")]) == 0
    finally:
        torch.set_num_threads(saved)
    assert main([*one, "--workers", "2", "--threads", "1", "--out", str(tmp_path / "one")]) == 0
    assert pools == [3, 3]
    for m in ("aligned", "full", "random"):
        a, b = tmp_path / "one-serial" / m, tmp_path / "one" / m
        assert (a / "generations.jsonl").read_text() == (b / "generations.jsonl").read_text()
        ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
        assert ma.get("win_rate") == mb.get("win_rate")
    assert (tmp_path / "one" / "report.md").read_text() == (tmp_path / "one-serial" / "report.md").read_text()
    # one worker asked for: one cell at a time, in a pool of one
    assert main([*one, "--workers", "1", "--threads", "1", "--out", str(tmp_path / "one-1")]) == 0
    assert pools == [3, 3, 1]
    assert main([*argv, "--workers", "-1", "--out", str(tmp_path / "x")]) == 2


def test_a_cell_waiting_on_a_reference_that_failed_stops_with_one_line(tmp_path: Path) -> None:
    """A worker's cell fine-tunes and generates, then waits for `full`; when the scheduler marks `full` as failed
    it stops with the folders named instead of waiting for ever."""
    from safeselect.config import loading
    from safeselect.errors import UserError
    from safeselect.pipeline.run import _abort_marker, _cell

    cfg = loading.load("quickstart", [*TINY, "compare=[full,random]"])
    aborts = tmp_path / "aborts"
    aborts.mkdir()
    _abort_marker(str(aborts), None).touch()
    with pytest.raises(UserError, match="the win-rate reference.*did not finish"):
        _cell(cfg, None, "random", str(tmp_path / "cmp"), str(aborts))
    assert (tmp_path / "cmp" / "random" / "selection.jsonl").exists()  # it stopped at the wait, not before
    assert not (tmp_path / "cmp" / "random" / "metrics.json").exists()


def test_cell_order_and_needs() -> None:
    """Every seed's `full` first (the win-rate reference the others compare with); `<m>+safeinstr` waits for `m`."""
    from safeselect.config import loading
    from safeselect.pipeline.run import cell_needs, cell_order, reference_of

    cfg = loading.load("quickstart", [*TINY, "compare=[seal+safeinstr,aligned,full,seal]", "seeds=[2,5]"])
    assert cell_order(cfg) == [(2, "full"), (5, "full"), (2, "seal+safeinstr"), (2, "aligned"), (2, "seal"),
                               (5, "seal+safeinstr"), (5, "aligned"), (5, "seal")]
    assert {m: cell_needs(cfg, m) for m in cfg.compare} == {
        "seal+safeinstr": ["seal"], "aligned": [], "full": [], "seal": []}
    assert {m: reference_of(cfg, m) for m in cfg.compare} == {
        "seal+safeinstr": "full", "aligned": "full", "full": None, "seal": "full"}
    cfg = loading.load("quickstart", [*TINY, "compare=[random+safeinstr,oracle]", "seeds=[0]"])
    assert cell_order(cfg) == [(0, "random+safeinstr"), (0, "oracle")]
    assert cell_needs(cfg, "random+safeinstr") == [] and cell_needs(cfg, "oracle") == []
    assert reference_of(cfg, "oracle") is None


def test_precision_line_names_the_precision_or_the_rows_that_differ(tmp_path: Path) -> None:
    from safeselect.reporting.comparison import precision_line

    def run(name: str, mp: str | None, dtype: str = "float32") -> Path:
        ft = f"finetune:\n  mixed_precision: {mp}\n" if mp else ""
        write_run(tmp_path / name, "random", 0, ft + f"eval:\n  dtype: {dtype}\n")
        return tmp_path / name

    # `aligned` is not fine-tuned: its fine-tune setting does not count
    same = {"aligned": {0: run("a", "no")}, "random": {0: run("r", "bf16"), 1: run("r1", "bf16")}}
    assert precision_line(same) == "Precision: fine-tune bf16 autocast, decoding float32 in every run."
    # a config written before the key existed ran float32
    old = {"random": {0: run("o", None)}, "full": {0: run("f", "no")}}
    assert precision_line(old) == "Precision: fine-tune float32, decoding float32 in every run."
    mixed = {"random": {0: run("m0", "no"), 1: run("m1", "bf16")}, "seal": {0: run("s", "no", "int8")}}
    assert precision_line(mixed) == (
        "Precision differs between runs (their paired differences include it): random: fine-tune bf16 autocast, "
        "decoding float32 / fine-tune float32, decoding float32; seal: fine-tune float32, decoding int8.")


def test_win_rates_are_per_prompt_figures_with_paired_verdicts(tmp_path: Path) -> None:
    from safeselect.core.metrics import lower_is_better

    def run(name: str, seed: int, outcomes: list[float | None]) -> Path:
        d = tmp_path / f"s{seed}" / name
        d.mkdir(parents=True)
        recs = [{"set": "builtin", "kind": "harmful", "row_id": f"h{i}", "verdicts": {}, "pairwise": {"rule": o}}
                for i, o in enumerate(outcomes)]
        (d / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        return d

    n = 20
    row = {s: run("seal", s, [1.0] * (n // 2) + [0.5] * (n // 2 - 1) + [None]) for s in (0, 1)}
    base = {s: run("random", s, [0.5] * n) for s in (0, 1)}
    metric = "win_rate.builtin.rule"
    # 100 win, 50 tie, 0 loss; an undecided prompt stays None
    assert prompt_values(row[0], metric) == {**{f"h{i}": 100.0 for i in range(n // 2)},
                                             **{f"h{i}": 50.0 for i in range(n // 2, n - 1)}, f"h{n - 1}": None}
    assert prompt_values(row[0], "safety.builtin.rule.win_rate") == prompt_values(row[0], metric)
    assert prompt_values(row[0], "win_rate.builtin.llm") is None  # no such judge ran
    c = cell([row[0], row[1]], metric)
    # the mean of 10 x 100 and 9 x 50 over 19 decided prompts, both seeds alike; no Wilson bound on a 0-100 scale
    assert c["value"] == pytest.approx(100 * (10 + 4.5) / 19) and c["n"] == 38
    assert 50 < c["ci"][0] < c["value"] < c["ci"][1] < 100
    d = paired(row, base, metric)
    assert not lower_is_better(metric)
    assert d["value"] == pytest.approx(100 * (10 + 4.5) / 19 - 50) and d["verdict"] == "better"
    assert d["n"] == 2 * (n - 1)


def test_a_row_without_win_rates_does_not_stop_the_others_pairing(tmp_path: Path) -> None:
    from safeselect.reporting.comparison import per_prompt_metrics, seeded_report

    rows: dict[str, dict[int, Path]] = {}
    for m in ("full", "random", "seal"):
        for s in (0, 1):
            write_run(tmp_path / f"s{s}" / m, m, s)
            if m != "full":  # `full` is the win-rate reference: it has no pairwise outcome against itself
                p = tmp_path / f"s{s}" / m / "generations.jsonl"
                recs = [json.loads(x) for x in p.read_text().splitlines()]
                for i, r in enumerate(recs):
                    r["pairwise"] = {"rule": 1.0 if (m == "seal" and i % 2 == 0) else 0.5}
                p.write_text("".join(json.dumps(r) + "\n" for r in recs))
            rows.setdefault(m, {})[s] = tmp_path / f"s{s}" / m
    metric = "win_rate.builtin.rule"
    assert per_prompt_metrics(rows, [metric, "safety.builtin.refusal.harmful_rate", "resources.train_s"]) == [
        metric, "safety.builtin.refusal.harmful_rate"]
    md = seeded_report(rows, [("win rate", metric), ("harmful", "safety.builtin.refusal.harmful_rate")], "random",
                       n_boot=200)
    # seal wins every other harmful prompt against random's ties: +25 points on the 0-100 scale
    assert "| seal | win rate | +25.0 [" in md and "| full | win rate |" not in md and "| full | harmful |" in md


def test_ablation_win_rates_of_full_come_from_the_seeds_that_have_them(tmp_path: Path) -> None:
    plan = PLAN.replace("metrics: [harmful rate]", "metrics: [harmful rate, win rate]")
    (tmp_path / "p.yaml").write_text(plan)

    def with_outcomes(kind: str, cfg: Any, out_dir: Path, reference_dir: Path | None, show_progress: bool) -> None:
        write_run(out_dir, cfg.selection.method, cfg.seed)
        if reference_dir is None or out_dir.resolve() == reference_dir.resolve():
            return  # the shared reference run: no outcome against itself
        p = out_dir / "generations.jsonl"
        recs = [json.loads(x) for x in p.read_text().splitlines()]
        for i, r in enumerate(recs):  # seed 1: every other prompt won; seed 2: every one tied
            r["pairwise"] = {"rule": (1.0 if i % 2 == 0 else 0.5) if cfg.seed == 1 else 0.5}
        p.write_text("".join(json.dumps(r) + "\n" for r in recs))
        m = json.loads((out_dir / "metrics.json").read_text())
        harmful = [r["pairwise"]["rule"] for r in recs if r["set"] == "builtin"]
        m["win_rate"] = {"builtin": {"rule": 100 * sum(harmful) / len(harmful)}}
        (out_dir / "metrics.json").write_text(json.dumps(m))

    out = tmp_path / "out"
    run_plan(load_plan(tmp_path / "p.yaml"), out, workers=0, run_fn=with_outcomes, show_progress=False)
    md = build_report(out, plots=False).read_text()
    full = next(line for line in md.splitlines() if line.startswith("| full | 'full' |"))
    cells = full.split(" | ")
    # `full` at seed 0 is the shared reference run: its win rate is the mean of seeds 1 and 2 (75 and 50) with the
    # two-level interval over them, not a Student-t over two seed values that spans 0-100
    win = next(c.strip("* ") for c in cells if c.strip("* ").startswith("62.5 ["))
    lo, hi = (float(x) for x in win[len("62.5 ["):].rstrip("]").split(", "))
    assert 50.0 <= lo < 62.5 < hi < 90.0  # a t interval over the two seed values (75, 50) would be [0.0, 100.0]


def test_safety_avg_is_a_per_prompt_figure_whose_mean_weighs_sets_equally(tmp_path: Path) -> None:
    """Safety Avg over seeds: per-prompt values weighted N / (S x n_s), so their mean is the mean of the sets'
    rates (as the run's own figure), with the two-level interval and paired verdicts of any per-prompt figure."""
    from safeselect.core.stats import safety_avg
    from safeselect.reporting.comparison import safety_avg_values

    def run(d: Path, adv: int, hh: int) -> Path:
        # AdvBench: adv of 4 harmful; HH: hh of 8 harmful, one reply undecided
        recs = [{"set": "advbench", "kind": "harmful", "row_id": f"a{i}", "verdicts": {"refusal": {"harmful": i < adv}}}
                for i in range(4)]
        recs += [{"set": "hh", "kind": "harmful", "row_id": f"h{i}",
                  "verdicts": {"refusal": {"harmful": None if i == 8 else i < hh}}} for i in range(9)]
        recs.append({"set": "lookalike", "kind": "overrefusal", "row_id": "o0", "verdicts": {"refusal": {"refused": True}}})
        d.mkdir(parents=True)
        (d / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        return d

    a = run(tmp_path / "a", adv=1, hh=6)
    vals = safety_avg_values(a, "refusal")
    assert vals is not None and len(vals) == 13 and vals["hh/h8"] is None
    # N = 12 decided over S = 2 sets: an AdvBench verdict counts 12 / (2 x 4) = 1.5, an HH one 12 / (2 x 8) = 0.75
    assert vals["advbench/a0"] == 1.5 and vals["advbench/a1"] == 0.0 and vals["hh/h0"] == 0.75
    figure = safety_avg({"advbench": [i < 1 for i in range(4)], "hh": [i < 6 for i in range(8)]}, n_boot=0)["value"]
    decided = [v for v in vals.values() if v is not None]
    assert sum(decided) / len(decided) == pytest.approx(figure) == pytest.approx((0.25 + 0.75) / 2)
    assert prompt_values(a, "safety_avg.refusal") == vals
    assert safety_avg_values(a, "llm") is None  # no verdicts of that judge
    b = run(tmp_path / "b", adv=3, hh=8)
    c = cell([a, b], "safety_avg.refusal", n_boot=200)
    assert c["value"] == pytest.approx(((0.25 + 0.75) / 2 + (0.75 + 1.0) / 2) / 2) and c["seeds"] == 2
    d = paired({0: b}, {0: a}, "safety_avg.refusal", n_boot=200)
    # b - a prompt by prompt: AdvBench a1, a2 turn harmful (+1.5 each), HH h6, h7 too (+0.75 each), over 12 prompts
    assert d["value"] == pytest.approx((2 * 1.5 + 2 * 0.75) / 12) and d["verdict"] in ("worse", "no detectable difference")
