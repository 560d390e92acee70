"""Ablation runs: grid expansion and run ids, the resumable runner (killed mid-way, resumed), Ray, the CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from safeselect.ablation.grid import expand, run_dir
from safeselect.ablation.plan import load_plan, only_ablations
from safeselect.ablation.runner import execute_run, run_plan
from safeselect.cli.main import main
from safeselect.core.rundir import is_complete
from safeselect.errors import UserError
from safeselect.reporting.ablation import build_report

TESTS = Path(__file__).resolve().parent
PLANS = TESTS.parents[1] / "shared" / "plans"

# bounds: false keeps the run counts of these tests to the plan's own grid (the bounds runs: test_comparison)
PLAN_YAML = """
name: toy
base: {selection.method: seal}
seeds: [0, 1]
bounds: false
ablations:
  - name: gamma value
    parameter: selection.seal.gamma.value
    replacements: [0.1, 0.5]
    metrics: [win rate, safety alignment score, GPU memory, Arena-Hard WR]
"""


# ----------------------------------------------------------------------------- fake run functions
# Module level so spawned workers and Ray can import / pickle them. They log every start and end to
# OUT/calls.log (O_APPEND: one line per write, safe across processes).


def _log(out_dir: Path, event: str) -> None:
    with open(out_dir.parents[1] / "calls.log", "a") as fh:
        fh.write(f"{event} {out_dir.name}\n")


def fake_metrics(kind: str, cfg: Any, ref: Path | None) -> dict[str, Any]:
    """Deterministic metrics from the config: win rate grows with gamma and seed, so the tests know the answer."""
    g = cfg.selection.seal.gamma.value
    m: dict[str, Any] = {
        "safety_avg": {"refusal": round(0.5 - g / 2 + cfg.seed / 100, 6)},
        "resources": {"peak_memory_mb": 100.0 + cfg.seed, "train_s": 1.0},
        "kind": kind, "saw_reference": ref is not None and is_complete(ref),
        "complete": True,
    }
    if ref is not None:
        m["win_rate"] = {"builtin": {"rule": 50 + 100 * g + cfg.seed, "rule_ci": [40.0, 60.0], "rule_n": 20}}
    return m


def fake_run(kind: str, cfg: Any, out_dir: Path, reference_dir: Path | None, show_progress: bool) -> None:
    _log(out_dir, "start")
    (out_dir / "metrics.json").write_text(json.dumps(fake_metrics(kind, cfg, reference_dir)))
    _log(out_dir, "end")


def threads_fake_run(kind: str, cfg: Any, out_dir: Path, reference_dir: Path | None, show_progress: bool) -> None:
    """fake_run that also logs the torch thread count its worker was started with."""
    _log(out_dir, f"threads={os.environ.get('OMP_NUM_THREADS')}")
    fake_run(kind, cfg, out_dir, reference_dir, show_progress)


def slow_fake_run(kind: str, cfg: Any, out_dir: Path, reference_dir: Path | None, show_progress: bool) -> None:
    """Writes a half-done metrics.json first (complete: false), works a little, then the real one atomically.
    With FAKE_HANG set, the run of gamma 0.5 / seed 1 hangs there until it is killed."""
    _log(out_dir, "start")
    (out_dir / "metrics.json").write_text(json.dumps({"complete": False, "win_rate": {"builtin": {"rule": 0.0}}}))
    hang = os.environ.get("FAKE_HANG") and cfg.selection.seal.gamma.value == 0.5 and cfg.seed == 1
    time.sleep(300 if hang else 0.1)
    tmp = out_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(fake_metrics(kind, cfg, reference_dir)))
    os.replace(tmp, out_dir / "metrics.json")
    _log(out_dir, "end")


def returns_only(kind: str, cfg: Any, out_dir: Path, reference_dir: Path | None, show_progress: bool) -> dict:
    """Like run_eva: returns its metrics and writes no completion marker itself."""
    return {"eva.reward.delta": 0.25}


def broken_run(kind: str, cfg: Any, out_dir: Path, reference_dir: Path | None, show_progress: bool) -> None:
    if cfg.selection.seal.gamma.value == 0.5:
        raise ValueError("boom")
    fake_run(kind, cfg, out_dir, reference_dir, show_progress)


def _calls(out: Path) -> list[tuple[str, str]]:
    path = out / "calls.log"
    if not path.exists():
        return []
    lines = path.read_text().split("\n")[:-1]  # complete lines only: a writer may be mid-line
    return [(ev, rid) for ev, rid in (line.split() for line in lines)]


@pytest.fixture
def plan_path(tmp_path: Path) -> Path:
    p = tmp_path / "toy.yaml"
    p.write_text(PLAN_YAML)
    return p


# ----------------------------------------------------------------------------- grid


def test_grid_expands_ablations_x_replacements_x_seeds_plus_one_reference(plan_path: Path) -> None:
    plan = load_plan(plan_path)
    grid = expand(plan)
    assert len(grid.cells) == 2 * 2 and len(grid.runs) == 1 + 4
    assert grid.runs[0].is_reference and grid.runs[0].run_id == grid.reference_id
    assert grid.runs[0].overrides == {"selection.method": "full", "seed": 0, "data.seed": 0, "selection.seed": 0}
    ids = [r.run_id for r in grid.runs[1:]]
    assert all(re.fullmatch(r"gamma-value-0\.[15]-s[01]-[0-9a-f]{8}", i) for i in ids), ids
    assert len(set(ids)) == 4
    cell = next(c for c in grid.cells if c.label == "0.5" and c.seed == 1)
    run = next(r for r in grid.runs if r.run_id == cell.run_id)
    assert run.overrides == {"selection.method": "seal", "selection.seal.gamma.schedule": "constant",
                             "selection.seal.gamma.value": 0.5, "seed": 1, "data.seed": 1, "selection.seed": 1}


def test_run_ids_are_stable_and_follow_the_config(plan_path: Path, tmp_path: Path) -> None:
    a = [r.run_id for r in expand(load_plan(plan_path)).runs]
    b = [r.run_id for r in expand(load_plan(plan_path)).runs]
    assert a == b
    changed = [r.run_id for r in expand(load_plan(plan_path, overrides=["selection.seal.epochs=1"])).runs]
    assert not set(a) & set(changed)  # a different base never reuses a result
    # the same config asked for twice is one run: compare's `full` is the reference run
    grid = expand(load_plan("compare", seeds=[0]))
    full = next(c for c in grid.cells if c.label == "full")
    assert full.run_id == grid.reference_id and len(grid.runs) == len({c.run_id for c in grid.cells})


@pytest.mark.parametrize("bf16_cpu", [False, True])
def test_run_ids_follow_the_precision_that_runs(plan_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                bf16_cpu: bool) -> None:
    from safeselect.ablation import plan as plan_module
    from safeselect.core import precision

    # built configs are cached by their overrides; a CPU of other flags is another machine
    monkeypatch.setattr(plan_module, "_CHECKED", {})
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"amx_bf16"} if bf16_cpu else {"avx2"}))
    ids = {mp: [r.run_id for r in expand(load_plan(plan_path, overrides=["device=cpu"] + (
        [f"finetune.mixed_precision={mp}"] if mp else []))).runs] for mp in (None, "no", "auto", "bf16")}
    # float32 runs keep one id whether `=no` is written or auto resolves to it (folders made before the auto
    # default resume); a bf16 run never shares an id with a float32 one
    assert ids["no"] != ids["bf16"] and not set(ids["no"]) & set(ids["bf16"])
    assert ids[None] == ids["auto"] == (ids["bf16"] if bf16_cpu else ids["no"])
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset())
    plan_module._CHECKED.clear()
    assert [r.run_id for r in expand(load_plan(plan_path, overrides=["device=cpu"])).runs] == ids["no"]


def test_a_replacement_that_restates_the_default_shares_its_run(tmp_path: Path) -> None:
    p = tmp_path / "defaults.yaml"
    p.write_text("name: defaults\nbase: {selection.method: seal}\nseeds: [0]\nbounds: false\nablations:\n"
                 "  - {name: algorithm, parameter: selection.seal.algorithm, replacements: [memory_efficient, auxiliary]}\n"
                 "  - {name: schedule, parameter: selection.seal.gamma.schedule, replacements: [linear, constant]}\n")
    grid = expand(load_plan(p))
    by_label = {c.label: c.run_id for c in grid.cells}
    # Algorithm 2 and the linear schedule are both the default: one run answers both cells
    assert by_label["memory_efficient"] == by_label["linear"]
    assert len({by_label["auxiliary"], by_label["constant"], by_label["linear"]}) == 3
    assert len(grid.runs) == 1 + 3  # the `full` reference, then three SEAL runs
    shared = next(r for r in grid.runs if r.run_id == by_label["linear"])
    assert shared.overrides["selection.seal.algorithm"] == "memory_efficient"  # the first asker's overrides, as written


def test_one_section_of_a_plan_now_the_rest_later_reuses_its_runs(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "two.yaml"
    p.write_text("name: two\nbase: {selection.method: seal}\nseeds: [0]\nbounds: false\nablations:\n"
                 "  - {name: algorithm, parameter: selection.seal.algorithm, replacements: [memory_efficient, auxiliary]}\n"
                 "  - {name: gamma value, parameter: selection.seal.gamma.value, replacements: [0.1, 0.5]}\n")
    whole = expand(load_plan(p))
    part = only_ablations(load_plan(p), ["ALGORITHM"])
    cut = expand(part)
    assert {c.ablation for c in cut.cells} == {"algorithm"}
    # the same ids as in the whole plan (the shared default run too), and only the runs its cells need
    assert {r.run_id for r in cut.runs} == {whole.reference_id} | {c.run_id for c in cut.cells}
    assert {r.run_id for r in cut.runs} < {r.run_id for r in whole.runs}
    out = tmp_path / "out"
    run_plan(part, out, workers=0, run_fn=fake_run, show_progress=False)
    report = build_report(out, plots=False).read_text()
    assert "Not run this time" in report and "'gamma value'" in report
    assert "| memory_efficient" in report and "| 0.1" not in report
    outcomes = run_plan(load_plan(p), out, workers=0, run_fn=fake_run, show_progress=False)
    assert {o.run_id for o in outcomes if o.status == "skipped"} == {r.run_id for r in cut.runs}
    assert "Not run this time" not in build_report(out, plots=False).read_text()
    with pytest.raises(UserError, match="did you mean 'gamma value'"):
        only_ablations(load_plan(p), ["gamma valu"])
    assert main(["ablate", str(p), "--dry-run", "--ablation", "algorithm", "--out", str(tmp_path / "d")]) == 0
    assert capsys.readouterr().out.startswith(f"{len(cut.runs)} runs (2 table cells)")
    assert main(["ablate", str(p), "--dry-run", "--ablation", "gamma valu"]) == 2
    assert "no ablation 'gamma valu' (did you mean 'gamma value'?)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- runner


def test_runner_runs_reference_first_and_skips_complete_runs(plan_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    plan = load_plan(plan_path)
    outcomes = run_plan(plan, out, workers=0, run_fn=fake_run, show_progress=False)
    grid = expand(plan)
    assert sorted(o.run_id for o in outcomes) == sorted(r.run_id for r in grid.runs)
    assert {o.status for o in outcomes} == {"done"}
    calls = _calls(out)
    assert calls[0] == ("start", grid.reference_id)
    for r in grid.runs[1:]:
        m = json.loads((run_dir(out, r.run_id) / "metrics.json").read_text())
        assert m["saw_reference"] is True  # every run got the finished reference
        assert json.loads((run_dir(out, r.run_id) / "runner.json").read_text())["wall_s"] >= 0
    again = run_plan(plan, out, workers=0, run_fn=fake_run, show_progress=False)
    assert {o.status for o in again} == {"skipped"} and _calls(out) == calls


def test_the_reference_alone_runs_with_every_workers_threads(plan_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    outcomes = run_plan(load_plan(plan_path), out, workers=2, threads=1, run_fn=threads_fake_run,
                        show_progress=False)
    assert all(o.status == "done" for o in outcomes)
    grid = expand(load_plan(plan_path))
    threads = {rid: ev for ev, rid in _calls(out) if ev.startswith("threads=")}
    assert threads.keys() == {r.run_id for r in grid.runs}
    assert threads.pop(grid.reference_id) == "threads=2", "nothing else can run beside the reference"
    assert set(threads.values()) == {"threads=1"}


def test_a_run_that_only_returns_metrics_is_marked_complete(tmp_path: Path) -> None:
    spec = {"run_id": "r1", "kind": "eva", "preset": None, "overrides": {"seed": 0}, "seed": 0,
            "is_reference": False}
    res = execute_run(spec, str(tmp_path), None, returns_only)
    assert res["status"] == "done"
    m = json.loads((tmp_path / "runs" / "r1" / "metrics.json").read_text())
    assert m == {"eva": {"reward": {"delta": 0.25}}, "complete": True}  # nested, like every metrics.json


def test_failed_runs_are_reported_and_the_rest_still_run(plan_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    outcomes = run_plan(load_plan(plan_path), out, workers=0, run_fn=broken_run, show_progress=False)
    failed = [o for o in outcomes if o.status == "failed"]
    assert len(failed) == 2 and all("ValueError: boom" in o.error for o in failed)
    assert sum(o.status == "done" for o in outcomes) == 3
    assert "ValueError: boom" in (run_dir(out, failed[0].run_id) / "error.txt").read_text()


def test_killed_plan_resumes_without_redoing_or_counting_half_written_runs(plan_path: Path, tmp_path: Path) -> None:
    """Start the runner with 2 worker processes, SIGKILL everything mid-way, report, resume."""
    from safeselect.reporting.ablation import collect

    out = tmp_path / "out"
    script = tmp_path / "go.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from test_ablate import slow_fake_run\n"
        "from safeselect.ablation.plan import load_plan\n"
        "from safeselect.ablation.runner import run_plan\n"
        "if __name__ == '__main__':\n"
        f"    run_plan(load_plan({str(plan_path)!r}), {str(out)!r}, workers=2, run_fn=slow_fake_run,\n"
        "             show_progress=False)\n")
    env = {**os.environ, "FAKE_HANG": "1"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    grid = expand(load_plan(plan_path))
    victim = next(c.run_id for c in grid.cells if c.label == "0.5" and c.seed == 1)
    deadline = time.time() + 90
    try:
        while time.time() < deadline:
            calls = _calls(out)
            ended = {rid for ev, rid in calls if ev == "end"}
            # the other worker finished everything else; the victim is half-way (its partial metrics.json is there)
            partial = run_dir(out, victim) / "metrics.json"
            # written with write_text (not atomically): wait until its text is there, not only the file
            if len(ended) == len(grid.runs) - 1 and partial.exists() and partial.read_text().strip():
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        else:
            pytest.fail("the runner did not reach the kill point in time")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    finished = {rid for ev, rid in _calls(out) if ev == "end"}
    half = {rid for ev, rid in _calls(out) if ev == "start"} - finished
    assert half == {victim}
    # the killed run left its half-written metrics.json behind ...
    assert json.loads((run_dir(out, victim) / "metrics.json").read_text())["complete"] is False
    # ... which the report does not count
    _, _, rows = collect(out)
    status = {r["run_id"]: r["status"] for r in rows}
    assert {rid for rid, s in status.items() if s == "complete"} == finished
    assert all(status[rid] == "incomplete" for rid in half)
    assert all("win_rate.builtin.rule" not in r for r in rows if r["run_id"] in half)

    outcomes = run_plan(load_plan(plan_path), out, workers=0, run_fn=slow_fake_run, show_progress=False)
    assert {o.run_id for o in outcomes if o.status == "skipped"} == finished
    assert {o.run_id for o in outcomes if o.status == "done"} == {r.run_id for r in grid.runs} - finished
    ends = [rid for ev, rid in _calls(out) if ev == "end"]
    assert sorted(ends) == sorted(r.run_id for r in grid.runs)  # every run finished exactly once
    starts = [rid for ev, rid in _calls(out) if ev == "start"]
    assert all(starts.count(rid) == 1 for rid in finished)  # nothing finished was started again
    assert all(is_complete(run_dir(out, r.run_id)) for r in grid.runs)


def test_ray_backend_runs_the_same_runs(plan_path: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'safeselect[ray]')")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test file
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "out"
        plan = load_plan(plan_path, seeds=[0])
        outcomes = run_plan(plan, out, backend="ray", run_fn=fake_run, show_progress=False)
        assert {o.status for o in outcomes} == {"done"} and len(outcomes) == 3
        grid = expand(plan)
        assert all(is_complete(run_dir(out, r.run_id)) for r in grid.runs)
        runner = json.loads((run_dir(out, grid.runs[1].run_id) / "runner.json").read_text())
        assert runner["backend"] == "ray" and runner["pid"] != os.getpid()
        again = run_plan(plan, out, backend="ray", run_fn=fake_run, show_progress=False)
        assert {o.status for o in again} == {"skipped"}
    finally:
        ray.shutdown()


# ----------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(("name", "n_runs"), [
    # Algorithm 2 and the linear schedule are both the preset's default: one run per seed, not two
    # plus the bounds runs of the built-in benchmark: oracle at both seeds, full at seed 1 (seed 0's is the
    # reference), the aligned model once
    ("plan_seal_aux_and_gamma_schedule.md", 1 + (2 + 3 - 1) * 2 + 3 + 1),
    ("plan_seal_gamma_and_selection_ratio.md", 1 + (5 + 5) * 2 + 3 + 1),
    # the shared creator and sample ratio 0.25 are both eva's default
    ("plan_eva_shared_and_sample_ratio.md", (2 + 3 - 1) * 2),
])
def test_cli_dry_run_lists_the_runs_of_the_example_plans(name: str, n_runs: int, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = PLANS / name
    if not path.exists():
        pytest.skip(f"example plan {path} is not on this machine")
    assert main(["ablate", str(path), "--dry-run", "--seeds", "0", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{n_runs} runs")
    assert out.count("  todo  ") == n_runs
    assert not (tmp_path / "runs").exists()  # a dry run runs nothing


def test_cli_explain_shows_every_mapping(capsys: pytest.CaptureFixture[str]) -> None:
    path = PLANS / "plan_seal_aux_and_gamma_schedule.md"
    if not path.exists():
        pytest.skip(f"example plan {path} is not on this machine")
    assert main(["ablate", str(path), "--explain"]) == 0
    out = capsys.readouterr().out
    assert "-> selection.seal.algorithm" in out and "-> selection.seal.gamma.schedule" in out
    assert "selection.seal.algorithm='auxiliary'" in out and "selection.seal.algorithm='memory_efficient'" in out
    assert "selection.seal.gamma.schedule='exponential'" in out and "selection.seal.gamma.init=0.015" in out
    assert "metric 'GPU_memory' -> resources.peak_gpu_memory_mb" in out


def test_cli_bad_plan_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "bad.md"
    p.write_text("### Ablation\n- **Ablated Part**: flux capacitor\n- **Action**: REPLACE\n"
                 "- **Replacement**:\n  - on\n")
    # partial by default: the dry run lists the section that does not run, with its reason
    assert main(["ablate", str(p), "--dry-run"]) == 0
    assert "NOT RUN: section 'Ablation' (line 1): no config key matches 'flux capacitor'" in capsys.readouterr().out
    # --strict: all or nothing; and a real run with nothing to run is a bad input
    for argv in (["ablate", str(p), "--dry-run", "--strict"], ["ablate", str(p), "--out", str(tmp_path / "o")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "flux capacitor" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
    assert main(["ablate", "no_such_plan", "--dry-run"]) == 2
    assert "unknown plan 'no_such_plan'" in capsys.readouterr().err
    for flag, value in (("--workers", "-1"), ("--threads", "0")):
        assert main(["ablate", "no_such_plan", flag, value]) == 2
        assert capsys.readouterr().err.strip().endswith(f"{flag} must be >= {1 if flag == '--threads' else 0}")


def test_cli_dry_run_marks_finished_runs_done(plan_path: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    run_plan(load_plan(plan_path), out, workers=0, run_fn=fake_run, show_progress=False)
    assert main(["ablate", str(plan_path), "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "5 already complete" in text and text.count("  done  ") == 5


def test_cli_quiet_turns_the_progress_bars_off(plan_path: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`ablate --quiet`, as `run --quiet`: the runner gets show_progress=False (bars on without it)."""
    from safeselect.cli import ablate as ablate_cli

    seen: list[bool] = []

    def fake_plan(*args: Any, show_progress: bool = True, **kwargs: Any) -> list[Any]:
        seen.append(show_progress)
        return []

    monkeypatch.setattr(ablate_cli, "run_plan", fake_plan)
    monkeypatch.setattr(ablate_cli, "build_report", lambda out: None)
    for extra in (["--quiet"], []):
        assert main(["ablate", str(plan_path), "--out", str(tmp_path / "o"), *extra]) == 0
    assert seen == [False, True]
