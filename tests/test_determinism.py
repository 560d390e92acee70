"""Same seed, same result: every selector gives a byte-identical selection.jsonl through `select`, `run` and
`ablate`; a run gives the same metrics whether the aligned-model cache was cold or warm, and a run stopped at
a stage and resumed gives the same metrics as one that never stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from safeselect.cli.main import main
from safeselect.registry import registry

TINY = {
    "model.name": "tiny-llama", "device": "cpu", "model.max_length": 80, "data.n_task": 16,
    "data.n_eval_harmful": 4, "data.n_eval_overrefusal": 2, "data.n_eval_task": 4, "data.safety_ref.n": 8,
    "align.n_refusals": 6, "align.n_benign": 6, "align.train.epochs": 1, "finetune.epochs": 1,
    "eval.max_new_tokens": 4, "eval.bootstrap": 20, "selection.seal.epochs": 1,
    "selection.dualselect.warmup_steps": 1, "seed": 7,
}
TINY_ARGS = [f"{k}={v}" for k, v in TINY.items()]


def _metrics(run: Path) -> dict[str, object]:
    """metrics.json without the resource meters (wall time and memory are not results)."""
    m = json.loads((run / "metrics.json").read_text())
    m.pop("resources", None)
    return m


@pytest.mark.slow
def test_every_selector_gives_the_same_selection_through_select_run_and_ablate(tmp_path: Path) -> None:
    selectors = registry("selectors").names()
    plan = tmp_path / "det.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "det", "seeds": [7], "base": {**TINY, "eval.enabled": False},
        "ablations": [{"name": "selector", "parameter": "selection.method", "action": "REPLACE",
                       "replacements": selectors}],
    }))
    abl = tmp_path / "abl"
    assert main(["ablate", str(plan), "--workers", "0", "--out", str(abl)]) == 0
    runs = {yaml.safe_load((d / "config.yaml").read_text())["selection"]["method"]: d
            for d in (abl / "runs").iterdir() if (d / "selection.jsonl").exists()}
    assert set(runs) == set(selectors)
    for method, run in runs.items():
        cfg = str(run / "config.yaml")
        want = (run / "selection.jsonl").read_bytes()
        for i in range(2):  # twice in this process: the second finds every cache warm
            out = tmp_path / f"select-{method}-{i}"
            assert main(["select", cfg, "--quiet", "--out", str(out)]) == 0
            assert (out / "selection.jsonl").read_bytes() == want, (method, "select", i)
        out = tmp_path / f"run-{method}"
        assert main(["run", cfg, "eval.enabled=false", "--quiet", "--out", str(out)]) == 0
        assert (out / "selection.jsonl").read_bytes() == want, (method, "run")


class _Stop(Exception):
    """Stands in for the process being killed at a stage."""


def _stop_at(monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    """Make the next call of ``stage`` fail once (then behave), as a kill at that stage would."""
    from safeselect.pipeline import run as pipeline

    # the pipeline's own references to its stages (imported at the top of pipeline.run)
    target, name = {"select": (pipeline, "select"), "finetune": (pipeline, "train_sft"),
                    "eval": (pipeline, "evaluate")}[stage]
    real = getattr(target, name)
    state = {"fired": False}

    def once(*a, **k):  # noqa: ANN002, ANN003, ANN202
        is_finetune = stage != "finetune" or str(k.get("desc", "")).startswith("fine-tune")
        if is_finetune and not state["fired"]:
            state["fired"] = True
            raise _Stop(stage)
        return real(*a, **k)

    monkeypatch.setattr(target, name, once)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["finetune", "eval"])
def test_a_run_stopped_at_a_stage_resumes_to_the_metrics_of_an_uninterrupted_one(
        stage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["run", "quickstart", *TINY_ARGS, "compare=[]", "selection.method=random", "--quiet"]
    # cold cache: the alignment is trained in this process, before the fine-tune draws its random numbers
    monkeypatch.setenv("SAFESELECT_CACHE", str(tmp_path / "cold"))
    assert main([*args, "--out", str(tmp_path / "cold-run")]) == 0
    cold = _metrics(tmp_path / "cold-run")
    # warm cache: the same config finds the aligned model on disk
    assert main([*args, "--out", str(tmp_path / "warm-run")]) == 0
    assert _metrics(tmp_path / "warm-run") == cold
    # stopped at `stage` (cold cache again), then resumed in the same folder
    monkeypatch.setenv("SAFESELECT_CACHE", str(tmp_path / "cold2"))
    _stop_at(monkeypatch, stage)
    with pytest.raises(_Stop):
        from safeselect.cli.main import build_parser
        from safeselect.cli.run import run as run_cmd

        run_cmd(build_parser().parse_args([*args, "--out", str(tmp_path / "killed")]))
    assert not (tmp_path / "killed" / "metrics.json").exists()
    assert main([*args, "--out", str(tmp_path / "killed")]) == 0
    assert _metrics(tmp_path / "killed") == cold
