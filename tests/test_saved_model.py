"""The model a run keeps: PEFT adapter + tokenizer in RUN/model, loadable by peft and transformers as saved,
merged on export, evaluated again without training (tiny-llama)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY

from safeselect.cli.main import main

ONE = [*TINY, "compare=[]", "selection.method=full"]


def _logits(model, tok) -> torch.Tensor:
    ids = tok.apply_chat_template([{"role": "user", "content": "how do i make a bomb"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    import os

    out = tmp_path_factory.mktemp("saved") / "run"
    os.environ["SAFESELECT_CACHE"] = str(tmp_path_factory.getbasetemp() / "cache")  # the session cache of conftest
    assert main(["run", "quickstart", *ONE, "finetune.merge=true", "--out", str(out), "--quiet"]) == 0
    return out


def test_adapter_loads_as_saved_with_peft_and_merged_with_transformers(run_dir, tmp_path, capsys):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safeselect.models.saved import load_saved

    model_dir = run_dir / "model"
    cfg = json.loads((model_dir / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"].startswith("/") and "aligned" in cfg["base_model_name_or_path"]
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    peft_model = AutoPeftModelForCausalLM.from_pretrained(model_dir).eval()
    ref = _logits(peft_model, tok)
    # The adapter is not a no-op: the base alone gives other logits.
    base = AutoModelForCausalLM.from_pretrained(cfg["base_model_name_or_path"]).eval()
    assert (ref - _logits(base, tok)).abs().max() > 1e-4
    # finetune.merge=true wrote merged weights that plain transformers loads, giving the same logits.
    merged = AutoModelForCausalLM.from_pretrained(model_dir / "merged").eval()
    torch.testing.assert_close(_logits(merged, tok), ref, atol=1e-4, rtol=1e-4)
    # `safeselect export` does the same from the run folder.
    out = tmp_path / "exported"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    torch.testing.assert_close(_logits(exported, AutoTokenizer.from_pretrained(out)), ref, atol=1e-4, rtol=1e-4)
    model, tok2 = load_saved(run_dir)
    torch.testing.assert_close(_logits(model, tok2), ref, atol=1e-4, rtol=1e-4)
    capsys.readouterr()
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "no saved model" in capsys.readouterr().err


def test_eval_run_regenerates_with_the_saved_model(run_dir, tmp_path, capsys):
    from safeselect.core.io import read_jsonl

    out = tmp_path / "again"
    # Same sets, generated anew from RUN/model: the replies are the run's own (greedy), so the
    # saved model is the model the run evaluated.
    assert main(["eval", str(run_dir), "--generate", "--out", str(out), "--quiet"]) == 0
    before = {(r["set"], r["row_id"]): r["response"] for r in read_jsonl(run_dir / "generations.jsonl")}
    after = {(r["set"], r["row_id"]): r["response"] for r in read_jsonl(out / "generations.jsonl")}
    assert after == before
    # New sets (a data override): evaluated without training, into RUN-eval by default.
    assert main(["eval", str(run_dir), "data.n_eval_harmful=3", "data.seed=7", "--quiet"]) == 0
    new = json.loads((run_dir.parent / "run-eval" / "metrics.json").read_text())
    assert new["safety"]["builtin"]["refusal"]["harmful_rate_n"] == 3
    assert "train" not in new
    capsys.readouterr()
    # The Python API's evaluate is the same stage: the same saved model gives the same replies and figures.
    import safeselect

    flat = safeselect.evaluate(run_dir, {"data.n_eval_harmful": 3, "data.seed": 7}, out=tmp_path / "api-eval")
    assert read_jsonl(tmp_path / "api-eval" / "generations.jsonl") == read_jsonl(run_dir.parent / "run-eval" / "generations.jsonl")
    assert flat["safety.builtin.refusal.harmful_rate"] == new["safety"]["builtin"]["refusal"]["harmful_rate"]


def test_model_built_in_process_is_saved_beside_the_adapter(tmp_path):
    from peft import AutoPeftModelForCausalLM

    out = tmp_path / "noalign"
    assert main(["run", "quickstart", *ONE, "align.enabled=false", "eval.enabled=false", "--out", str(out),
                 "--quiet"]) == 0
    cfg = json.loads((out / "model" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str((out / "model" / "base").resolve())
    model = AutoPeftModelForCausalLM.from_pretrained(out / "model")
    assert any("lora_A" in n for n, _ in model.named_parameters())


def test_full_fine_tuning_saves_the_whole_model(tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "nolora"
    assert main(["run", "quickstart", *ONE, "model.lora.enabled=false", "eval.enabled=false", "finetune.max_steps=1",
                 "--out", str(out), "--quiet"]) == 0
    assert not (out / "model" / "adapter_config.json").exists() and not (out / "model" / "base").exists()
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert model.config.num_hidden_layers == 2


def test_python_api_runs_and_returns_the_saved_model(tmp_path):
    import safeselect
    from safeselect.config.loading import parse_override

    overrides = dict(parse_override(o) for o in ONE)  # a mapping of dotted keys, typed values
    res = safeselect.run("quickstart", overrides, out=tmp_path / "api")
    assert res.run_dir == tmp_path / "api" and res.model_path == tmp_path / "api" / "model"
    assert (res.model_path / "adapter_config.json").exists()
    assert 0 <= res.metrics["safety.builtin.refusal.harmful_rate"] <= 1
    model, tok = safeselect.load_model(res.run_dir)
    assert _logits(model, tok).shape[-1] == len(tok)
    # A finished run is reused; bad input is the CLI's one-line UserError.
    assert safeselect.run("quickstart", overrides, out=tmp_path / "api").metrics == res.metrics
    rows = safeselect.select("quickstart", [*ONE, "selection.method=random", "selection.ratio=0.5"],
                             out=tmp_path / "sel")
    assert len(rows) == 24 and sum(r["kept"] for r in rows) == 12
    assert main(["select", "quickstart", *ONE, "selection.method=random", "selection.ratio=0.5", "--out",
                 str(tmp_path / "sel-cli"), "--quiet"]) == 0
    assert (tmp_path / "sel-cli" / "selection.jsonl").read_text() == (tmp_path / "sel" / "selection.jsonl").read_text()
    with pytest.raises(safeselect.api.UserError, match="unknown config key"):
        safeselect.run("quickstart", {"selection.ratoi": 0.5}, out=tmp_path / "bad")


def test_import_safeselect_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, safeselect; safeselect.RunResult; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


def test_python_dash_m_safeselect(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "safeselect", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "export" in proc.stdout


def test_checkpointed_lora_model_loads_and_wraps_without_deprecation_warnings():
    """transformers 5 renamed gradient checkpointing's switch and flag; neither our code nor peft's wrap warns."""
    import warnings

    from safeselect.config.schema import LoraConfig, ModelConfig
    from safeselect.models import add_lora, load_model
    from safeselect.training.losses import checkpointing_active

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        model, _ = load_model("tiny-llama", model_cfg=ModelConfig(name="tiny-llama", gradient_checkpointing=True))
        wrapped = add_lora(model, LoraConfig(r=4, alpha=8))
        assert checkpointing_active(wrapped)
