"""Config: defaults < preset < overrides, unknown keys and bad values rejected with did-you-mean."""

from __future__ import annotations

import pytest

from safeselect.config import loading
from safeselect.config.paths import preset_names
from safeselect.config.schema import field_info
from safeselect.errors import UserError


def test_defaults_match_methods_md():
    cfg = loading.load(None)
    assert cfg.selection.ratio == 0.8
    assert cfg.selection.seal.activation == "softmax"
    assert cfg.selection.seal.algorithm == "memory_efficient"
    assert (cfg.selection.seal.gamma.schedule, cfg.selection.seal.gamma.init, cfg.selection.seal.gamma.step) == (
        "linear", 0.0, 0.03)
    assert cfg.selection.seal.selector_lr == 5e-3 and cfg.selection.seal.selector_betas == [0.9, 0.95]
    d = cfg.selection.dualselect
    assert (d.warmup_steps, d.tau_task, d.tau_ref, d.rho, d.mode, d.correction) == (10, 0.1, 0.1, 0.2, "hard", "additive")
    assert cfg.selection.dsir.buckets == 10000
    assert (cfg.eva.responses_per_prompt, cfg.eva.sample_ratio, cfg.eva.evolutions, cfg.eva.mix_ratio) == (6, 0.25, 4, 0.2)
    assert cfg.data.harmful_ratio == 0.2


def test_preset_then_override_order(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("selection:\n  method: random\n  ratio: 0.5\n")
    cfg = loading.load(str(p), ["selection.ratio=0.25"])
    assert cfg.selection.method == "random" and cfg.selection.ratio == 0.25


def test_plain_number_gamma_is_constant():
    g = loading.load(None, ["selection.seal.gamma=0.1"]).selection.seal.gamma
    assert g.schedule == "constant" and g.value == 0.1


@pytest.mark.parametrize("override, needle", [
    ("selection.rato=0.5", "did you mean 'selection.ratio'"),
    ("selection.ratio=1.5", "out of range [0, 1]"),
    ("selection.seal.algorithm=aux", "did you mean 'auxiliary'"),
    ("finetune.epochs=abc", "bad value for 'finetune.epochs'"),
    ("noequals", "key=value"),
])
def test_bad_input_is_one_clear_line(override, needle):
    with pytest.raises(UserError) as e:
        loading.load(None, [override])
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_exponential_needs_positive_init():
    with pytest.raises(UserError, match="init"):
        loading.load(None, ["selection.seal.gamma.schedule=exponential"])


def test_every_preset_validates():
    names = preset_names()
    assert "quickstart" in names
    for name in names:
        loading.load(name)


def test_field_info_has_help_and_aliases():
    info = field_info()
    assert all(meta["help"] for meta in info.values())
    assert "selection percentage" in info["selection.ratio"]["aliases"]


def test_mixed_precision_no_is_the_word_not_a_yaml_boolean(tmp_path):
    # YAML 1.1 reads `no` as False; a word-choice field gets the word back (before: "bad value ... 'False'")
    assert loading.load(None, ["finetune.mixed_precision=no"]).finetune.mixed_precision == "no"
    # already when parsed: plan bases and reports show the word
    assert loading.parse_override("finetune.mixed_precision=no") == ("finetune.mixed_precision", "no")
    assert loading.parse_override("finetune.group_by_length=no") == ("finetune.group_by_length", False)
    p = tmp_path / "c.yaml"
    p.write_text("finetune:\n  mixed_precision: no\n")
    assert loading.load(str(p)).finetune.mixed_precision == "no"
    # a boolean field keeps its boolean
    assert loading.load(None, ["finetune.group_by_length=yes"]).finetune.group_by_length is True


@pytest.mark.parametrize("flags, want", [
    (frozenset({"avx2", "fma"}), "no"),
    (frozenset({"avx512f", "avx512_bf16"}), "bf16"),
    (frozenset({"amx_bf16", "amx_tile"}), "bf16"),
    (frozenset(), "no"),
])
def test_auto_precision_follows_the_cpu_bf16_units(monkeypatch, flags, want):
    from safeselect.core import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    cfg = loading.load(None, ["device=cpu"])
    # the fine-tune resolves auto for this CPU; the alignment stays float32 on every machine
    assert cfg.finetune.mixed_precision == want and cfg.align.train.mixed_precision == "no"
    assert loading.load(None, ["device=cpu", "finetune.mixed_precision=no"]).finetune.mixed_precision == "no"
    assert loading.load(None, ["device=cpu", "align.train.mixed_precision=auto"]).align.train.mixed_precision == want
    # the resolved value is what config.yaml records (a cell from another kind of machine differs in config)
    import yaml

    assert yaml.safe_load(loading.to_yaml(cfg))["finetune"]["mixed_precision"] == want


def test_cpu_flags_reads_proc_cpuinfo(tmp_path, monkeypatch):
    from safeselect.core import precision

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512_bf16 amx_tile\n\nprocessor\t: 1\n")
    monkeypatch.setattr(precision, "Path", lambda _p: info)
    precision.cpu_flags.cache_clear()
    try:
        assert precision.cpu_flags() == frozenset({"fpu", "sse2", "avx512_bf16", "amx_tile"})
        assert precision.cpu_has_bf16()
    finally:
        precision.cpu_flags.cache_clear()


@pytest.mark.parametrize("cuda, bf16, device, want", [
    (True, True, "cuda", "bf16"), (True, False, "cuda", "no"), (True, True, "auto", "bf16"),
    (False, False, "auto", "cpu-flags"),
])
def test_auto_precision_on_gpus(monkeypatch, cuda, bf16, device, want):
    import torch

    from safeselect.core import precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    # a GPU from Ampere on: bf16; an older one: no; no GPU with device=auto: the CPU decides
    assert precision.resolve_mixed_precision("auto", device) == ("bf16" if want == "cpu-flags" else want)
    assert precision.resolve_mixed_precision("no", device) == "no"
