"""``safeselect eval`` through ``main(argv)``: re-score a run directory, evaluate a config, bad input -> exit 2."""

from __future__ import annotations

import json

import pytest
from test_evaluate import MODEL_A, _bundle, fake_generate

from safeselect.cli.main import main
from safeselect.config import loading
from safeselect.core.dotted import flatten, nest
from safeselect.core.io import atomic_write_text, read_jsonl, write_json, write_jsonl
from safeselect.evaluation import evaluate as E
from safeselect.registry import DATASETS


@pytest.fixture
def run_dir(tmp_path):
    cfg = loading.load(None, ["eval.bootstrap=20"])
    flat, records = E.evaluate(None, None, _bundle(), cfg, generate_fn=fake_generate(MODEL_A), show_progress=False)
    d = tmp_path / "run"
    write_jsonl(d / "generations.jsonl", records)
    write_json(d / "metrics.json", nest({**flat, "complete": True}))
    atomic_write_text(d / "config.yaml", loading.to_yaml(cfg))
    return d


def test_rescore_run_dir_with_reference(run_dir, capsys):
    before = (run_dir / "generations.jsonl").read_text()
    assert main(["eval", str(run_dir), "--judge", "rule", "--reference", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "win_rate.hx.rule" in out and "n=4" in out
    m = flatten(json.loads((run_dir / "metrics.json").read_text()))
    assert m["win_rate.hx.rule"] == 50.0 and m["safety.hx.refusal.harmful_rate"] == 0.5
    # Same responses, only verdicts added.
    old = [json.loads(x)["response"] for x in before.splitlines()]
    assert [r["response"] for r in read_jsonl(run_dir / "generations.jsonl")] == old


def test_rescore_to_other_out_dir(run_dir, tmp_path):
    out = tmp_path / "rescored"
    assert main(["eval", str(run_dir), "judges.refusal.window=5", "--out", str(out)]) == 0
    m = flatten(json.loads((out / "metrics.json").read_text()))
    # No refusal marker fits in a 5-character window: every response now counts as harmful.
    assert m["safety.hx.refusal.harmful_rate"] == 1.0
    assert flatten(json.loads((run_dir / "metrics.json").read_text()))["safety.hx.refusal.harmful_rate"] == 0.5


def test_eval_config_target_runs_model_name(tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS._entries, "evaltest", DATASETS._entries["builtin"].__class__(
        "evaltest", "test_eval_cli:_builder"))
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text("name: t\nmodel:\n  name: tiny-llama\ndata:\n  benchmark: evaltest\n")
    out = tmp_path / "out"
    assert main(["eval", str(cfg_path), "eval.max_new_tokens=3", "eval.bootstrap=10", "--out", str(out),
                 "--quiet"]) == 0
    m = flatten(json.loads((out / "metrics.json").read_text()))
    assert m["task.mix.accuracy_n"] == 3 and "safety_avg.refusal" in m and "resources.eval_s" in m
    assert len(read_jsonl(out / "generations.jsonl")) == 10
    assert (out / "config.yaml").exists()


def _builder(cfg):
    return _bundle()


@pytest.mark.parametrize("argv,msg", [
    (["eval", "no-such-config"], "unknown config"),
    (["eval", "quickstart", "--judge", "refusl"], "did you mean 'refusal'"),
    (["eval", "quickstart", "--reference", "/nonexistent"], "not a run directory"),
    (["eval", "quickstart", "eval.bootstrap=-1"], "out of range"),
])
def test_bad_input_exit_2(argv, msg, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_not_a_run_dir_exit_2(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    assert "not a finished run" in capsys.readouterr().err
