"""Ablation plans: YAML and markdown parsing, mojibake repair, alias mapping of parts, values and metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from safeselect.ablation.mapping import fix_mojibake, map_metric
from safeselect.ablation.markdown import parse_markdown
from safeselect.ablation.matcher import Query, map_section, read_value, reads_as_percentages
from safeselect.ablation.plan import load_plan, make_config, shipped_plans, split_top_level
from safeselect.errors import UserError

PLANS = Path(__file__).resolve().parents[2] / "shared" / "plans"


def _example(name: str) -> Path:
    path = PLANS / name
    if not path.exists():
        pytest.skip(f"example plan {path} is not on this machine")
    return path


# ----------------------------------------------------------------------------- text repair


@pytest.mark.parametrize(("broken", "fixed"), [
    ("Œ≥", "γ"),                      # UTF-8 read as Mac Roman
    ("Î³", "γ"),                      # UTF-8 read as cp1252 / Latin-1
    ("ÀÜŒ∏", "ˆθ"),                   # theta-hat
    ("trade‚Äêoffs", "trade‐offs"),    # U+2010 hyphen
    ("creator‚Äôs ‚Äúsample‚Äù", "creator’s “sample”"),
    ("ðŸ§\xa0 Reasoning", "🧠 Reasoning"),
])
def test_fix_mojibake_repairs_wrong_decodes(broken: str, fixed: str) -> None:
    assert fix_mojibake(broken) == fixed


@pytest.mark.parametrize("text", ["γ and θ", "café", "plain ascii", "naïve – dash"])
def test_fix_mojibake_leaves_correct_text_alone(text: str) -> None:
    assert fix_mojibake(text) == text


# ----------------------------------------------------------------------------- mapping


@pytest.mark.parametrize(("text", "values", "key"), [
    ("Penalty strength parameter (γ) in the bilevel optimization process", ["0.01", "0.5"],
     "selection.seal.gamma.value"),
    ("Penalty strength parameter (Œ≥) in the bilevel optimization process", ["0.01", "0.5"],
     "selection.seal.gamma.value"),
    ("gamma", ["0.1", "0.2"], "selection.seal.gamma.value"),
    ("Penalty strength (γ) scheduling strategy in the bilevel data selector training",
     ["Constant γ (fixed value)", "Exponential schedule"], "selection.seal.gamma.schedule"),
    ("Data selector update mechanism – specifically the use of an auxiliary parameter (ˆθ)",
     ["Algorithm 1", "Algorithm 2"], "selection.seal.algorithm"),
    ("Data selection percentage in SEAL framework", ["10", "50"], "selection.ratio"),
    ("Creator-solver network architecture", ["shared network", "independent networks"], "eva.creator"),
    ("Fraction of prompts selected by the informativeness metric in the creator step", ["10%", "50%"],
     "eva.sample_ratio"),
    ("selection.seal.selector_lr", ["0.1", "0.2"], "selection.seal.selector_lr"),
    ("harmful ratio", ["0.1", "0.3"], "data.harmful_ratio"),
])
def test_map_section(text: str, values: list[str], key: str) -> None:
    assert map_section(Query(text, values=values)).key == key


def test_the_values_decide_between_schedule_and_gamma_value() -> None:
    """'penalty schedule' with schedule names is the schedule; with numbers it is the (constant) gamma value."""
    q = Query("penalty (gamma) schedule", values=["fixed 0.1", "linear", "exponential"])
    m = map_section(q)
    assert m.key == "selection.seal.gamma.schedule"
    assert [v.value for _, v in m.values] == ["constant", "linear", "exponential"]
    assert m.values[0][1].extra == {"selection.seal.gamma.value": 0.1}  # "fixed 0.1": the constant's value
    assert map_section(Query("penalty gamma", values=["0.05", "0.2"])).key == "selection.seal.gamma.value"


def test_unmappable_part_is_refused_with_a_reason() -> None:
    m = map_section(Query("flux capacitor", values=["a", "b"]))
    assert m.key is None and "no config key matches 'flux capacitor'" in m.reason


@pytest.mark.parametrize(("key", "raw", "value"), [
    ("selection.seal.algorithm", "Using full bilevel update with auxiliary variable (Algorithm 1)", "auxiliary"),
    ("selection.seal.algorithm", "Using memory-efficient variant without auxiliary variable update (Algorithm 2)",
     "memory_efficient"),
    ("selection.seal.algorithm", "MemoryEfficient", "memory_efficient"),
    ("selection.seal.gamma.schedule", "Constant γ (fixed value)", "constant"),
    ("selection.seal.gamma.schedule", "Linear incremental schedule (e.g., increase by fixed step per epoch)",
     "linear"),
    ("selection.seal.gamma.schedule", "Exponential schedule", "exponential"),
    ("eva.creator", "shared network", "shared"),
    ("eva.creator", "independent networks", "independent"),
    ("eva.evolve_method", "EvolInstruct", "evol-instruct"),
    ("eva.evolve_method", "self instruct", "self-instruct"),
    ("eva.loss", "SimPO", "simpo"),
    ("eva.sample_ratio", "10%", 0.1),
    ("eva.sample_ratio", "80:20", 0.8),
    ("selection.seal.gamma.value", "0.05", 0.05),
    ("selection.seal.gamma.value", "fixed 0.1", 0.1),
    ("selection.seal.gamma.value", 0.5, 0.5),
    ("selection.seal.epochs", "5 epochs", 5),
    ("model.lora.enabled", "off", False),
    ("selection.safeinstr.count", "none", 0),
])
def test_read_value(key: str, raw: object, value: object) -> None:
    assert read_value(key, raw).value == value


def test_an_evolved_share_is_the_complement_of_mix_ratio() -> None:
    v = read_value("eva.mix_ratio", "0.7", wording="share of evolved prompts in the training mix")
    assert v.value == pytest.approx(0.3) and v.flagged and "1 - 0.7" in v.how
    assert read_value("eva.mix_ratio", "80:20", wording="evolved-to-original ratio").value == pytest.approx(0.2)
    assert read_value("eva.mix_ratio", "0.7", wording="share of original prompts").value == pytest.approx(0.7)


def test_a_comparative_scales_the_base_setting() -> None:
    base = {"selection.seal.gamma.schedule": "linear", "selection.seal.gamma.step": 0.03}.get
    v = read_value("selection.seal.gamma.schedule", "a faster schedule", base=base)
    assert (v.value, v.extra, v.flagged) == ("linear", {"selection.seal.gamma.step": 0.06}, True)


def test_bare_numbers_of_a_share_read_as_percentages_only_when_some_exceed_one() -> None:
    assert reads_as_percentages("selection.ratio", ["10", "20", "50", "70", "90"])
    assert not reads_as_percentages("selection.ratio", ["0.1", "0.5"])
    assert not reads_as_percentages("selection.seal.gamma.value", ["10", "20"])  # not a 0..1 share
    assert read_value("selection.ratio", "70", percent=True).value == pytest.approx(0.7)


def test_unreadable_values_are_user_errors() -> None:
    with pytest.raises(UserError, match=r"cannot read 'sinusoidal'.*choices: constant, linear, exponential"):
        read_value("selection.seal.gamma.schedule", "sinusoidal")
    with pytest.raises(UserError, match="cannot read"):
        read_value("selection.seal.gamma.schedule", "linear or exponential")
    with pytest.raises(UserError, match="range, not one value"):
        read_value("selection.seal.gamma.value", "0.1-0.2")
    with pytest.raises(UserError, match="not a registered model"):
        read_value("selection.seal.selector_model", "BPE")


@pytest.mark.parametrize(("text", "patterns"), [
    ("win rate", ["win_rate.*", "eva.win_rate.*"]),
    ("win_rate (ANTHROPIC HH, SLIMORCA, HEX-PHI)", ["win_rate.*", "eva.win_rate.*"]),
    ("safety win rate", ["safety.*.win_rate"]),
    ("safety alignment score", ["safety_avg.*"]),
    ("GPU_memory", ["resources.peak_gpu_memory_mb", "resources.peak_memory_mb"]),
    ("training_time", ["resources.train_s", "resources.selection_s"]),
    ("Arena-Hard WR", ["win_rate.arenahard.*"]),
    ("MT-Bench avg. score", ["mtbench.score", "mtbench.*.score"]),
    ("AlpacaEval WR", ["win_rate.alpacaeval.*", "win_rate.alpacaeval_lc.*"]),
    ("task.sst2.accuracy", ["task.sst2.accuracy"]),
])
def test_map_metric(text: str, patterns: list[str]) -> None:
    assert map_metric(text).patterns == patterns


def test_unknown_metric_is_kept_with_a_note_not_dropped() -> None:
    spec = map_metric("vibes")
    assert spec.patterns == [] and "no safeselect metric" in spec.note
    named = map_metric("win_rate (ANTHROPIC HH, SLIMORCA, HEX-PHI)")
    assert "ANTHROPIC HH, SLIMORCA, HEX-PHI" in named.note


def test_metric_spec_skips_interval_siblings() -> None:
    spec = map_metric("win rate")
    assert spec.matches("win_rate.builtin.rule") and spec.matches("eva.win_rate.rule")
    assert not spec.matches("win_rate.builtin.rule_ci") and not spec.matches("win_rate.builtin.rule_n")


# ----------------------------------------------------------------------------- markdown


MD = """<style>.x { color: red; }</style>
# lm-planner/x/SEAL__paper

<div class="trajectory-box"><h2>Reasoning</h2>
### Not an ablation, just prose
Some reasoning text.
</div>

### Ablation Study on Penalty Strength
- **Ablated Part**: Penalty strength parameter (Œ≥)
- **Action**: REPLACE
- **Replacement**:\u0020
  - 0.01
  - 0.5
- **Metrics**: win rate, safety alignment score

### Ablation: Percentage
- **Ablated Part:** Data selection percentage
- **Action**: REPLACE
- **Replacement**: 10, 50
- **Metrics**: win_rate (HH, HEX-PHI), training time
"""


def test_parse_markdown_sections_fields_and_nested_lists() -> None:
    title, raws = parse_markdown(MD)
    assert title == "lm-planner/x/SEAL__paper"
    assert [r["name"] for r in raws] == ["Penalty Strength", "Percentage"]
    assert raws[0]["parameter"] == "Penalty strength parameter (γ)"
    assert raws[0]["replacements"] == ["0.01", "0.5"]
    assert raws[0]["metrics"] == ["win rate", "safety alignment score"]
    assert raws[1]["replacements"] == ["10", "50"]
    assert raws[1]["metrics"] == ["win_rate (HH, HEX-PHI)", "training time"]


def test_markdown_plan_maps_and_infers_the_method(tmp_path: Path) -> None:
    p = tmp_path / "plan.md"
    p.write_text(MD, encoding="utf-8")
    plan = load_plan(p)
    gamma, pct = plan.ablations
    assert gamma.parameter == "selection.seal.gamma.value"
    assert [r.value for r in gamma.replacements] == [0.01, 0.5]
    # a gamma value means a constant schedule (METHODS.md section 2)
    assert gamma.replacements[0].overrides == {"selection.seal.gamma.schedule": "constant",
                                               "selection.seal.gamma.value": 0.01}
    assert pct.parameter == "selection.ratio"
    assert [r.value for r in pct.replacements] == [0.1, 0.5] and [r.label for r in pct.replacements] == ["10%", "50%"]
    assert make_config(plan.preset, plan.base).selection.method == "seal"  # inferred from the title
    assert plan.reference == {"selection.method": "full"}


def test_markdown_sections_that_cannot_map_are_refused_or_strict_errors(tmp_path: Path) -> None:
    p = tmp_path / "bad.md"
    p.write_text("### Ablation on X\n- **Ablated Part**: flux capacitor\n- **Action**: REPLACE\n"
                 "- **Replacement**:\n  - a\n", encoding="utf-8")
    plan = load_plan(p)
    assert plan.ablations == [] and plan.refused[0].name == "X" and plan.refused[0].line == 1
    assert "flux capacitor" in plan.refused[0].reason
    with pytest.raises(UserError, match="flux capacitor"):
        load_plan(p, strict=True)
    p.write_text("### Ablation on X\n- **Ablated Part**: gamma\n- **Action**: REMOVE\n- **Replacement**: 1\n")
    assert "only REPLACE" in load_plan(p).refused[0].reason
    with pytest.raises(UserError, match="only REPLACE"):
        load_plan(p, strict=True)
    p.write_text("# just prose\n\nno plan here\n")
    with pytest.raises(UserError, match="no ablation sections"):
        load_plan(p)


def test_example_plan_seal_aux_and_gamma_schedule() -> None:
    plan = load_plan(_example("plan_seal_aux_and_gamma_schedule.md"))
    aux, sched = plan.ablations
    assert aux.parameter == "selection.seal.algorithm"
    assert [r.value for r in aux.replacements] == ["auxiliary", "memory_efficient"]
    assert [m.patterns[0] for m in aux.metrics] == ["win_rate.*", "resources.peak_gpu_memory_mb", "resources.train_s"]
    assert sched.parameter == "selection.seal.gamma.schedule"
    assert [r.value for r in sched.replacements] == ["constant", "linear", "exponential"]
    assert sched.replacements[2].overrides["selection.seal.gamma.init"] > 0  # exponential needs init > 0
    assert plan.preset == "seal" and plan.base == {}  # the shipped SEAL preset, inferred from the plan


def test_example_plan_seal_gamma_and_selection_ratio() -> None:
    plan = load_plan(_example("plan_seal_gamma_and_selection_ratio.md"))
    gamma, ratio = plan.ablations
    assert gamma.parameter == "selection.seal.gamma.value"
    assert [r.value for r in gamma.replacements] == [0.01, 0.05, 0.1, 0.2, 0.5]
    assert ratio.parameter == "selection.ratio"
    assert [r.value for r in ratio.replacements] == pytest.approx([0.1, 0.2, 0.5, 0.7, 0.9])
    assert [m.patterns for m in gamma.metrics][1] == ["safety_avg.*"]


def test_example_plan_eva_shared_and_sample_ratio() -> None:
    plan = load_plan(_example("plan_eva_shared_and_sample_ratio.md"), overrides=["model.name=tiny-llama"])
    creator, ratio = plan.ablations
    assert (creator.parameter, creator.runner) == ("eva.creator", "eva")
    assert [r.value for r in creator.replacements] == ["shared", "independent"]
    # an independent creator needs a model: a frozen copy of the (overridden) starting model
    assert creator.replacements[1].overrides["eva.creator_model"] == "tiny-llama"
    assert ratio.parameter == "eva.sample_ratio"
    assert [r.value for r in ratio.replacements] == [0.1, 0.25, 0.5]
    assert plan.reference is None  # eva compares against its own starting model


# ----------------------------------------------------------------------------- YAML


def test_yaml_plan_with_labels_overrides_and_free_text_parameter(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("""
name: mine
base: {selection: {method: seal}, selection.seal.epochs: 1}
seeds: [3, 4]
reference: false
ablations:
  - name: strength
    parameter: penalty strength
    replacements: [0.1, {label: big, value: 0.9, overrides: {selection.seal.gamma.schedule: linear}}]
    metrics: [win rate]
""")
    plan = load_plan(p)
    assert plan.name == "mine" and plan.seeds == [3, 4] and plan.reference is None
    assert plan.base == {"selection.method": "seal", "selection.seal.epochs": 1}
    a = plan.ablations[0]
    assert a.parameter == "selection.seal.gamma.value"
    assert [r.label for r in a.replacements] == ["0.1", "big"]
    # the replacement's own override wins over the companion (constant schedule)
    assert a.replacements[1].overrides == {"selection.seal.gamma.schedule": "linear", "selection.seal.gamma.value": 0.9}


@pytest.mark.parametrize(("body", "msg"), [
    ("ablations: [{parameter: selection.ratio, replacements: [1.5]}]", "out of range"),
    ("ablations: [{parameter: selection.ratio, replacements: []}]", "non-empty list"),
    ("ablations: [{parameter: selection.ratio, replacements: [0.1, 0.1]}]", "both map to"),
    ("ablations: [{parameter: selection.ratio, replacements: [0.1]}]\nbase: {selection.rato: 1}", "did you mean"),
    ("ablations: [{parameter: selection.ratio, replacements: [0.1]}]\nseed: [1]", "unknown plan key 'seed'"),
    ("ablations: [{parameter: selection.ratio, replacements: [0.1], metric: [x]}]", "unknown key"),
])
def test_yaml_plan_errors(tmp_path: Path, body: str, msg: str) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(body)
    with pytest.raises(UserError, match=msg):
        load_plan(p)


def test_split_top_level_respects_parentheses() -> None:
    assert split_top_level("a (b, c), d") == ["a (b, c)", "d"]


@pytest.mark.parametrize("name", ["seal_algorithm", "seal_gamma_schedule", "seal_gamma_value",
                                  "seal_selection_ratio", "eva_creator", "eva_sample_ratio", "compare"])
def test_shipped_plans_load_and_validate(name: str) -> None:
    assert name in shipped_plans()
    plan = load_plan(name, overrides=["model.name=tiny-llama"])
    assert plan.ablations and all(len(a.replacements) >= 2 for a in plan.ablations)
    if name.startswith("eva"):
        assert all(a.runner == "eva" for a in plan.ablations) and plan.reference is None
    else:
        assert plan.reference == {"selection.method": "full"}
