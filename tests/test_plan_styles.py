"""Ablation plans as other planners write them: the markdown parser, mapping by meaning, partial plans, metrics.

The plans are in tests/ablation_plans.py (SEAL and eva, one house style each, with sections that cannot map).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from ablation_plans import PLANS

from safeselect.ablation.markdown import field_kind, parse_markdown, split_values
from safeselect.ablation.matcher import Query, map_section
from safeselect.ablation.plan import explain, load_plan
from safeselect.ablation.runner import run_plan
from safeselect.cli.main import main
from safeselect.reporting.ablation import build_report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from plan_mapping import evaluate, load_fixture, summary  # noqa: E402

TINY = ["model.name=tiny-llama"]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every fixture plan, loaded once (loading builds and validates every run's config)."""
    tmp = tmp_path_factory.mktemp("plans")
    return {fx.name: load_fixture(fx, tmp) for fx in PLANS}


def _write(tmp_path: Path, text: str, name: str = "plan.md") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# ----------------------------------------------------------------------------- the parser


@pytest.mark.parametrize(("text", "items"), [
    ("fixed 0.1 / linear / exponential", ["fixed 0.1", "linear", "exponential"]),
    ("0.1, 0.3 and 0.5", ["0.1", "0.3", "0.5"]),
    ("greedy top-k, weighted by informativeness and uniform random",
     ["greedy top-k", "weighted by informativeness", "uniform random"]),
    ("constant or exponential", ["constant", "exponential"]),
    ("80:20, 50:50, 20:80", ["80:20", "50:50", "20:80"]),
    ("Algorithm 1 (auxiliary); Algorithm 2 (memory-efficient)", ["Algorithm 1 (auxiliary)",
                                                                 "Algorithm 2 (memory-efficient)"]),
    ("shared/independent", ["shared", "independent"]),
    ("Linear incremental schedule (e.g., increase by fixed step per epoch)",
     ["Linear incremental schedule (e.g., increase by fixed step per epoch)"]),
    ("DPO vs. SimPO", ["DPO", "SimPO"]),
])
def test_value_lists(text: str, items: list[str]) -> None:
    assert split_values(text) == items


@pytest.mark.parametrize(("label", "kind"), [
    ("Ablated Part", "part"), ("Knob", "part"), ("Ablated component", "part"), ("What is ablated", "part"),
    ("Replacement", "replacements"), ("Values tried", "replacements"), ("Alternatives", "replacements"),
    ("Replacement values", "replacements"), ("Metrics", "metrics"), ("Evaluation", "metrics"),
    ("Action", "action"), ("Hypothesis", "context"),
    ("Gamma value", None), ("Selection percentage", None), ("Random seed of the world", None),
])
def test_field_labels_are_classified_by_their_words(label: str, kind: str | None) -> None:
    assert field_kind(label) == kind


def test_every_fixture_style_parses_every_section() -> None:
    for fx in PLANS:
        _, raws = parse_markdown(fx.text)
        names = " | ".join(r["name"].lower() for r in raws)
        for word in fx.expected:
            assert word.lower() in names, (fx.name, word, names)
        assert all(r["replacements"] or r["prose"] for r in raws), fx.name


def test_setext_italic_labels_and_inline_lists() -> None:
    title, raws = parse_markdown(PLANS[1].text)
    assert title == "SEAL: what else to ablate"
    assert [r["name"] for r in raws] == ["Penalty schedule", "Selector learning rate"]
    assert raws[0]["parameter"] == "how the penalty gamma grows during selector training"
    assert raws[0]["replacements"] == ["fixed 0.1", "linear", "exponential"]
    assert raws[0]["metrics"] == ["win rate", "Safety Avg"]


def test_table_rows_and_field_tables() -> None:
    _, rows = parse_markdown(PLANS[3].text)
    assert [r["name"] for r in rows] == ["Algorithm", "Keep ratio", "Proxy"]
    assert rows[1]["replacements"] == ["20%", "40%", "60%", "80%"]
    assert rows[0]["metrics"] == ["GPU memory", "training time"]
    _, fields = parse_markdown(PLANS[5].text)
    assert [(r["name"], r["replacements"]) for r in fields] == [("Selector activation", ["softmax", "sigmoid"]),
                                                                ("Auxiliary steps", ["1", "2", "4"])]


def test_labels_outside_the_colon_and_lists_after_an_empty_field() -> None:
    _, raws = parse_markdown(PLANS[12].text)
    assert [r["replacements"] for r in raws][:2] == [["10%", "50%", "100%"], ["1 epoch", "2 epochs", "6 epochs"]]
    assert raws[0]["metrics"] == ["win rate", "harmful rate"]


# ----------------------------------------------------------------------------- mapping by meaning


def test_held_out_and_tuning_plans_map_right_or_flag(loaded: dict) -> None:
    """The acceptance figure on the fixture plans (docs/results.md): >= 85% right, never silently wrong."""
    for split in ("tune", "heldout"):
        s = summary(evaluate(split, loaded))
        assert s["right"] >= 0.85 * s["knob_exists"], (split, s)
        assert s["wrong_silent"] == 0, (split, s)


# One-line sections in other wordings (method, ablated part, values, the key they mean), written after the
# held-out measurement: the knob named by description, by a synonym, or only by its values.
PHRASINGS = [
 ("seal", "Budget unit for the top-k cut", ["rows", "tokens"], "selection.budget"),
 ("seal", "Weight normalisation of the selector", ["softmax over all rows", "independent sigmoids"], "selection.seal.activation"),
 ("seal", "number of safe reference examples", ["30", "60", "120"], "data.safety_ref.n"),
 ("seal", "Penalty coefficient", ["0", "0.1", "1"], "selection.seal.gamma.value"),
 ("seal", "How gamma evolves across epochs", ["constant", "linear ramp", "exponential growth"], "selection.seal.gamma.schedule"),
 ("seal", "Selector used to rank the data", ["SEAL", "DSIR", "random", "full data"], "selection.method"),
 ("seal", "Poison rate in the fine-tuning set", ["5%", "10%", "30%"], "data.harmful_ratio"),
 ("seal", "Bilevel solver", ["with auxiliary model (Alg. 1)", "without (Alg. 2)"], "selection.seal.algorithm"),
 ("seal", "Rank of the LoRA adapters", ["8", "16", "64"], "model.lora.r"),
 ("seal", "Fine-tuning learning rate", ["1e-5", "1e-4"], "finetune.lr"),
 ("seal", "selector step size", ["1e-3", "1e-2"], "selection.seal.selector_lr"),
 ("eva", "Informativeness estimator", ["max-min reward gap", "reward variance", "max-mean"], "eva.informativeness"),
 ("eva", "Prompt selection strategy of the creator", ["informativeness-weighted sampling", "greedy top-k", "uniform random"], "eva.sampler"),
 ("eva", "Number of evolved variants per prompt", ["1", "4", "8"], "eva.evolutions"),
 ("eva", "Preference optimization algorithm", ["DPO", "SimPO", "IPO"], "eva.loss"),
 ("eva", "Size of the seed prompt set", ["32", "64", "128"], "eva.n_prompts"),
 ("eva", "Reward signal", ["reward model", "LLM judge", "rule-based reward"], "eva.reward"),
 ("eva", "Number of self-play iterations", ["1", "2", "3"], "eva.iterations"),
 ("eva", "Number of responses sampled per prompt (K)", ["2", "4", "6"], "eva.responses_per_prompt"),
 ("eva", "Share of evolved prompts in the training mix", ["0.5", "0.8", "1.0"], "eva.mix_ratio"),
 ("eva", "creator model", ["same as solver", "separate frozen model"], "eva.creator"),
 ("eva", "DPO beta", ["0.01", "0.1"], "eva.beta"),
 ("eva", "Solver learning rate", ["1e-6", "5e-6"], "eva.lr"),
 ("eva", "Evolution operator", ["Evol-Instruct", "Self-Instruct"], "eva.evolve_method"),
 ("eva", "Fraction of the prompt pool sent to the evolver", ["10%", "25%", "50%"], "eva.sample_ratio"),
]


@pytest.mark.parametrize(("method", "part", "values", "key"), PHRASINGS, ids=[c[1] for c in PHRASINGS])
def test_knobs_named_in_other_words(method: str, part: str, values: list[str], key: str) -> None:
    m = map_section(Query(part, name=part, values=values, method=method))
    assert m.key == key, (m.key, m.explain(), m.reason)


def test_penalty_schedule_is_not_the_gamma_value(loaded: dict) -> None:
    plan = loaded[PLANS[1].name]
    sched = plan.ablations[0]
    assert sched.parameter == "selection.seal.gamma.schedule"
    fixed = sched.replacements[0]
    assert fixed.overrides == {"selection.seal.gamma.schedule": "constant", "selection.seal.gamma.value": 0.1}
    assert [r.label for r in sched.replacements] == ["constant", "linear", "exponential"]


def test_transforms_are_shown_and_flagged(loaded: dict) -> None:
    plan = loaded[PLANS[7].name]
    mix = plan.ablations[0]
    assert mix.parameter == "eva.mix_ratio" and mix.low_confidence
    assert [r.value for r in mix.replacements] == pytest.approx([0.2, 0.5, 0.8])
    text = explain(plan)
    assert "ratio 80:20 = 0.8; the plan's share is the complement of eva.mix_ratio: 1 - 0.8 = 0.2" in text
    assert "LOW CONFIDENCE" in text and "confidence" in text and "evidence:" in text
    evo = plan.ablations[1]
    assert [r.value for r in evo.replacements] == ["evol-instruct", "self-instruct"]


def test_ellipsis_range_is_filled_in_and_said(loaded: dict) -> None:
    plan = loaded[PLANS[11].name]
    mix = plan.ablations[0]
    assert [r.value for r in mix.replacements] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert "range 1.0 ... 0.0 filled in as 1, 0.75, 0.5, 0.25, 0" in explain(plan)
    assert [r.name for r in plan.refused] == ["eva: judge model size"]


def test_competing_keys_are_named(tmp_path: Path) -> None:
    p = _write(tmp_path, "### Ablation: learning rate\n- **Ablated Part**: learning rate\n- **Action**: REPLACE\n"
                         "- **Replacement**: 1e-4, 3e-4\n- **Metrics**: win rate\n")
    plan = load_plan(p, overrides=TINY)
    a = plan.ablations[0]
    assert a.low_confidence and a.competitors
    assert "two or more keys compete" in explain(plan)


# ----------------------------------------------------------------------------- partial plans, metrics, CLI


def test_every_fixture_plan_lists_what_does_not_run(loaded: dict) -> None:
    for fx in PLANS:
        text = explain(loaded[fx.name])
        for word, exp in fx.expected.items():
            lines = [ln.lower() for ln in text.splitlines() if ln.startswith("NOT RUN: section")]
            assert (exp is None) == any(word.lower() in ln for ln in lines), (fx.name, word, text)


@pytest.mark.parametrize("fx", [PLANS[2], PLANS[8], PLANS[12]], ids=lambda fx: fx.name)
def test_fixture_plans_dry_run_through_the_cli(fx, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = _write(tmp_path, fx.text, f"{fx.name}.md")
    assert main(["ablate", str(p), *TINY, "--dry-run", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    for word, exp in fx.expected.items():
        if exp is None:
            assert any(word.lower() in ln.lower() for ln in out.splitlines() if ln.startswith("NOT RUN: section")), \
                (word, out)


def test_named_metrics_are_produced_or_flagged_with_their_setting(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    p = _write(tmp_path, PLANS[10].text)
    assert main(["ablate", str(p), *TINY, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "metric 'Arena-Hard WR' -> win_rate.arenahard.*  FLAGGED, not produced: Arena-Hard runs only with " \
           "eval.benchmarks.arenahard_questions=..., eval.benchmarks.arenahard_baseline=..., " \
           "judges.llm.base_url=..." in out
    assert "metric 'MT-Bench' -> mtbench.score" in out and "eval.benchmarks.mtbench_questions=..." in out
    # configured: no longer flagged
    files = [f"eval.benchmarks.{k}={tmp_path / k}" for k in ("arenahard_questions", "arenahard_baseline",
                                                               "alpacaeval", "mtbench_questions")]
    assert main(["ablate", str(p), *TINY, *files, "judges.llm.base_url=http://127.0.0.1:9/v1", "--dry-run"]) == 0
    assert "FLAGGED" not in capsys.readouterr().out
    # benchmark files without a judge: a bad input, before anything runs
    assert main(["ablate", str(p), *TINY, *files, "--dry-run"]) == 2
    assert "judges.llm.base_url is not" in capsys.readouterr().err


def test_eva_metrics_a_pipeline_does_not_make_are_flagged(tmp_path: Path) -> None:
    p = _write(tmp_path, "### eva sampler\n- **Ablated Part**: eva prompt sampler\n- **Action**: REPLACE\n"
                         "- **Replacement**: greedy, uniform\n- **Metrics**: Safety Avg, harmful rate, win rate\n")
    text = explain(load_plan(p, overrides=TINY))
    assert "metric 'Safety Avg' -> safety_avg.*  FLAGGED, not produced: eva runs do not measure this" in text
    assert "metric 'win rate' -> win_rate.*, eva.win_rate.*\n" in text + "\n"


def _fake_run(kind, cfg, out_dir, reference_dir, show_progress):
    from safeselect.core.io import write_json

    write_json(out_dir / "metrics.json", {"win_rate": {"builtin": {"rule": 50.0}}, "complete": True})
    return None


def test_partial_plan_runs_what_maps_and_the_report_lists_the_rest(loaded: dict, tmp_path: Path) -> None:
    plan = loaded[PLANS[0].name]
    plan.seeds = [0]
    assert [a.parameter for a in plan.ablations] == ["selection.seal.activation", "data.safety_ref.fraction"]
    run_plan(plan, tmp_path / "out", workers=0, run_fn=_fake_run, show_progress=False)
    build_report(tmp_path / "out")  # the report is built from the files afterwards
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Not run (parts of the plan that could not be mapped to a setting):" in md
    assert "section 'Selector optimiser'" in md
    saved = json.loads((tmp_path / "out" / "plan.json").read_text())["plan"]
    assert [r["name"] for r in saved["refused"]] == ["Selector optimiser"]


def test_strict_is_all_or_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = _write(tmp_path, PLANS[0].text)
    assert main(["ablate", str(p), *TINY, "--dry-run", "--strict"]) == 2
    err = capsys.readouterr().err
    assert "Selector optimiser" in err and err.count("\n") == 1


@pytest.mark.parametrize("content", [b"\xff\xfe### a\x00", "dir"])
def test_a_plan_that_is_a_folder_or_not_utf8_exits_2(tmp_path: Path, content,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "plan.md"
    if content == "dir":
        p.mkdir()
    else:
        p.write_bytes(content)
    assert main(["ablate", str(p), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("folder" in err or "directory" in err or "UTF-8" in err)


@pytest.mark.slow
def test_ablate_runs_the_alignment_benchmarks_when_configured(tmp_path: Path) -> None:
    """AlpacaEval and MT-Bench files plus a judge endpoint: the runs of `ablate` score them, the report shows them."""
    from test_ablate_smoke import TINY as SMOKE
    from test_llm_judge import JudgeServer

    alpaca = tmp_path / "alpaca_eval.json"
    alpaca.write_text(json.dumps([{"instruction": "Name a fruit.", "output": "Apple."},
                                  {"instruction": "Say hi.", "output": "Hello there, friend."}]))
    mt = tmp_path / "question.jsonl"
    mt.write_text(json.dumps({"question_id": 81, "category": "writing", "turns": ["Write a haiku.", "Sadder."]})
                  + "\n")
    p = _write(tmp_path, "### Keep ratio\n- **Ablated Part**: share of the task data kept\n- **Action**: REPLACE\n"
                         "- **Replacement**: 50%\n- **Metrics**: AlpacaEval WR, MT-Bench score\n")
    with JudgeServer() as s:
        ov = {**SMOKE, "selection.method": "random", "judges.llm.base_url": s.url,
              "judges.llm.cache_dir": str(tmp_path / "cache"), "judges.llm.retries": 1,
              "eval.benchmarks.alpacaeval": str(alpaca), "eval.benchmarks.mtbench_questions": str(mt),
              "eval.benchmarks.max_new_tokens": 4}
        plan = load_plan(p, overrides=ov, seeds=[0])
        assert "FLAGGED" not in explain(plan)
        plan.reference, plan.bounds = None, False  # one run is enough here
        outcomes = run_plan(plan, tmp_path / "out", workers=0, show_progress=False)
    assert [o.status for o in outcomes] == ["done"], outcomes
    build_report(tmp_path / "out")
    run = next((tmp_path / "out" / "runs").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["win_rate"]["alpacaeval"]["llm_n"] == 2 and 1 <= metrics["mtbench"]["score"] <= 10
    md = (tmp_path / "out" / "report.md").read_text()
    assert "`win_rate.alpacaeval.llm`" in md and "`mtbench.score`" in md
