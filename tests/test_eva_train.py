"""eva's solver step on TRL (loss by hand, the reference model) and the loop end to end on tiny-llama."""

from __future__ import annotations

import copy
import json
import warnings

import pytest

from safeselect.cli.main import main
from safeselect.config import loading

PAIRS = [{"prompt": "What is 2 plus 2?", "chosen": "The answer is 4.", "rejected": "no idea"},
         {"prompt": "Is this review positive? I love it.", "chosen": "Positive.", "rejected": "I hate numbers"}]


def _perturbed_tiny(seed: int = 1):
    import torch

    from safeselect.models import load_model

    model, tok = load_model("tiny-llama")
    start = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model, start, tok


def _hand_logps(model, batch):
    """Summed log-probability of each sequence's completion tokens, from the logits by hand."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    tok_logp = logp.gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    mask = batch["completion_mask"][:, 1:].float()
    return (tok_logp * mask).sum(1), mask.sum(1)


@pytest.mark.parametrize("loss", ["dpo", "ipo"])
def test_trl_loss_matches_hand_computation_with_the_starting_model_as_reference(tmp_path, loss):
    import torch
    import torch.nn.functional as F

    from safeselect.selfplay.solve import build_trainer

    model, start, tok = _perturbed_tiny()
    cfg = loading.build({"model.name": "tiny-llama", "model.lora.enabled": False, "eva.loss": loss,
                        "eva.beta": 0.5, "eva.batch_size": 2})
    trainer, trained = build_trainer(model, tok, PAIRS, cfg, str(tmp_path), seed=0)
    # the reference is a frozen copy of the iteration's starting weights, not the policy object
    assert trainer.ref_model is not trained
    assert all(torch.equal(a, b) for a, b in zip(trainer.ref_model.parameters(), model.parameters(), strict=True))
    assert not any(p.requires_grad for p in trainer.ref_model.parameters())

    batch = next(iter(trainer.get_train_dataloader()))
    trained.eval()
    pc, pr = _hand_logps(trained, batch)[0].chunk(2)
    nc, nr = batch["completion_mask"].sum(1).float().chunk(2)
    # policy == reference: the loss is its value at zero margin
    with torch.no_grad():
        got0 = float(trainer.compute_loss(trained, dict(batch)))
    expected0 = float(torch.log(torch.tensor(2.0))) if loss == "dpo" else (1 / (2 * 0.5)) ** 2
    assert got0 == pytest.approx(expected0, abs=1e-5)

    # now a reference different from the policy: the unperturbed starting model
    trainer.ref_model.load_state_dict(start.state_dict())  # in place: TRL wrapped the reference's forward
    sc, sr = _hand_logps(start, batch)[0].chunk(2)
    with torch.no_grad():
        got = float(trainer.compute_loss(trained, dict(batch)))
    if loss == "dpo":
        want = float((-F.logsigmoid(0.5 * ((pc - sc) - (pr - sr)))).mean())
    else:
        want = float((((pc - sc) / nc - (pr - sr) / nr - 1 / (2 * 0.5)) ** 2).mean())
    assert got == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_lora_reference_is_the_adapter_free_starting_model(tmp_path):
    import torch

    from safeselect.models import load_model
    from safeselect.selfplay.solve import build_trainer, preference_step

    model, tok = load_model("tiny-llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = loading.build({"model.name": "tiny-llama", "eva.lr": 0.02, "eva.batch_size": 2, "model.lora.r": 4})
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated trainer argument
        trainer, trained = build_trainer(copy.deepcopy(model), tok, PAIRS, cfg, str(tmp_path), seed=0)
    assert trainer.ref_model is None and hasattr(trained, "disable_adapter")  # TRL: adapter off = reference
    # model.gradient_checkpointing (off) decides, not TRL's default (on)
    assert not trainer.args.gradient_checkpointing
    assert not getattr(trainer.args, "activation_checkpointing", False)
    new, metrics = preference_step(model, tok, PAIRS * 2, cfg, seed=0)
    after = new.state_dict()
    assert set(after) == set(before)  # merged back: plain weights, no adapter keys
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert metrics["steps"] == 2 and metrics["pairs"] == 4 and len(metrics["losses"]) == 2
    assert metrics["losses"][0] == pytest.approx(0.693147, abs=1e-4)  # policy == reference at step 1


def test_simpo_runs_without_reference(tmp_path):
    from safeselect.models import load_model
    from safeselect.selfplay.solve import build_trainer

    model, tok = load_model("tiny-llama")
    cfg = loading.build({"model.name": "tiny-llama", "eva.loss": "simpo", "model.lora.enabled": False})
    trainer, _ = build_trainer(model, tok, PAIRS, cfg, str(tmp_path), seed=0)
    assert trainer.loss_type == "simpo" and trainer.cpo_alpha == 0.0 and trainer.simpo_gamma == 0.5


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory):
    """A tiny seeded sequence-classification reward model saved by path (continuous scores: few ties)."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from safeselect.models.tiny import tokenizer

    tok = tokenizer()
    c = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=1, num_labels=1, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("rm")
    LlamaForSequenceClassification(c).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _overrides(rm, creator: str) -> list[str]:
    return ["model.name=tiny-llama", "device=cpu", "data.n_task=20", "data.n_eval_task=2", "data.n_eval_harmful=2",
            "data.n_eval_overrefusal=2", "align.n_refusals=4", "align.n_benign=4", "data.safety_ref.n=4",
            "eva.iterations=2", "eva.n_prompts=6", "eva.responses_per_prompt=3", "eva.sample_ratio=0.34",
            "eva.evolutions=2", "eva.max_new_tokens=6", "eva.creator_max_new_tokens=12", "eva.n_heldout=3",
            "eva.min_prompt_chars=1", "eva.reward=reward_model", f"eva.reward_model={rm}", "eva.eval_rewards=[rule]",
            "eva.lr=0.02", "eval.bootstrap=20", f"eva.creator={creator}", "eva.creator_model=tiny-llama"]


def _check_run(out, creator: str) -> dict:
    import torch
    from safetensors.torch import load_file

    from safeselect.models import load_model

    for k in (1, 2):
        it = out / f"iter_{k}"
        for name in ("prompts.jsonl", "pairs.jsonl", "informativeness.json", "solver.json"):
            assert (it / name).exists(), it / name
        solver = json.loads((it / "solver.json").read_text())
        assert solver["steps"] >= 1 and solver["pairs"] >= 1
        istats = json.loads((it / "informativeness.json").read_text())
        assert istats["metric"] == "gap" and set(istats["cleaning"]) >= {"generated", "kept", "duplicate", "empty"}
        prompts = [json.loads(x) for x in (it / "prompts.jsonl").read_text().splitlines()]
        assert all(len(p["rewards"]) == 3 for p in prompts)
        n_current = sum(p["role"] == "current" for p in prompts)
        assert n_current == 6 or k == 2
        assert sum(p.get("sampled", False) for p in prompts) == max(1, int(0.34 * n_current))
        pairs = [json.loads(x) for x in (it / "pairs.jsonl").read_text().splitlines()]
        assert all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)
    pool = [json.loads(x) for x in (out / "pool.jsonl").read_text().splitlines()]
    evolved = [p for p in pool if p["origin"] == "evolved"]
    ids = {p["prompt_id"] for p in pool}
    assert evolved and all(p["parent"] in ids and p["depth"] >= 1 for p in evolved)
    assert any(p["depth"] == 2 for p in evolved)  # the chain of two evolutions
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eva"]["prompts"]["human"] == 6 and metrics["eva"]["reward"]["mean_n"] == 3
    assert "rule" in metrics["eva"]["win_rate"] and "rule" in metrics["eva"]["eval"]
    # the solver's parameters changed
    fresh, _ = load_model("tiny-llama")
    saved = load_file(str(out / "model" / "model.safetensors"))
    ref = fresh.state_dict()
    assert any(not torch.equal(saved[k], ref[k]) for k in saved if k in ref)
    return metrics


def test_eva_end_to_end_shared_creator_via_cli(tmp_path, tiny_rm, capsys):
    out = tmp_path / "shared"
    assert main(["eva", "eva", *_overrides(tiny_rm, "shared"), "--out", str(out), "--quiet"]) == 0
    assert "held-out reward" in capsys.readouterr().out
    m = _check_run(out, "shared")
    solver = json.loads((out / "iter_1" / "solver.json").read_text())
    assert solver["creator"].startswith("shared")
    # rerun of a complete directory is skipped and gives the same metrics
    from safeselect.selfplay.run import run_eva

    flat = run_eva(loading.load("eva", _overrides(tiny_rm, "shared")), out, show_progress=False)
    assert flat["eva.pairs.total"] == m["eva"]["pairs"]["total"]


def test_eva_end_to_end_independent_creator(tmp_path, tiny_rm):
    from safeselect.selfplay.run import run_eva

    cfg = loading.load("eva", _overrides(tiny_rm, "independent"))
    flat = run_eva(cfg, tmp_path / "independent", show_progress=False)
    _check_run(tmp_path / "independent", "independent")
    solver = json.loads((tmp_path / "independent" / "iter_2" / "solver.json").read_text())
    assert solver["creator"] == "model:tiny-llama"
    assert flat["eva.pairs.total"] >= 2 and flat["eva.clean.generated"] >= flat["eva.clean.kept"] > 0


def test_eva_cli_bad_input(tmp_path, capsys):
    assert main(["eva", "eva", "eva.creator=independent", "--out", str(tmp_path)]) == 2
    assert "creator_model" in capsys.readouterr().err
    assert main(["eva", "eva", "eva.reward=rules", "--out", str(tmp_path)]) == 2
    assert main(["eva", "eva", "eva.informativeness=gapp", "--out", str(tmp_path)]) == 2
    assert main(["validate", "eva"]) == 0


def test_orpo_runs_and_changes_the_model(tmp_path):
    import torch

    from safeselect.models import load_model
    from safeselect.selfplay.solve import preference_step

    model, tok = load_model("tiny-llama")
    before = [p.detach().clone() for p in model.parameters()]
    cfg = loading.build({"model.name": "tiny-llama", "eva.loss": "orpo", "model.lora.enabled": False,
                        "eva.lr": 0.01, "eva.batch_size": 2})
    new, metrics = preference_step(model, tok, PAIRS, cfg, seed=0)
    assert metrics["steps"] == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, new.parameters(), strict=True))
