"""SEAL's training loop on tiny-llama: exact steps, Algorithm 1's cost term, row ids, saved files, behaviour."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from safeselect.config import loading
from safeselect.config.schema import GammaConfig, LoraConfig, SealConfig, TrainConfig
from safeselect.core.rows import Row
from safeselect.errors import UserError
from safeselect.models import load_model
from safeselect.selection import seal
from safeselect.selection.base import budget_mask, context_for
from safeselect.training.encode import collate
from safeselect.training.losses import per_row_loss, row_losses

SAFE_WORDS = ["sorry", "i", "cannot", "help", "with", "that", "request", "here", "is", "a", "good",
              "answer", "instead"]
HARM_WORDS = ["hack", "steal", "weapon", "bomb", "drug", "scam", "password", "kill"]
PROMPT_WORDS = ["how", "do", "i", "make", "this", "work", "what", "is", "the", "answer"]


def make_rows(n_task: int, n_safe: int, harmful_every: int, seed: int = 0, length: int = 6):
    """Safe rows answer with refusal-style words; planted harmful task rows use words found nowhere else."""
    rng = np.random.default_rng(seed)
    safe = [Row(f"s{k}", " ".join(rng.choice(PROMPT_WORDS, 5)), " ".join(rng.choice(SAFE_WORDS, length)))
            for k in range(n_safe)]
    task = []
    for k in range(n_task):
        h = k % harmful_every == 0
        task.append(Row(f"t{k}", " ".join(rng.choice(PROMPT_WORDS, 5)),
                        " ".join(rng.choice(HARM_WORDS if h else SAFE_WORDS, length)), harmful=h))
    return task, safe


def _losses(module, items, pad_id):
    with torch.no_grad():
        return per_row_loss(module, collate(items, pad_id)).float()


# ----------------------------------------------------------------------------- exact steps


def test_model_step_is_the_whole_batch_objective_with_accumulation():
    task, safe = make_rows(6, 4, 3)
    model, tok = load_model("tiny-llama")
    cfg = SealConfig(batch_size=4, micro_batch_size=3, lr=1e-3)  # 8 rows per step in micro-batches of 3
    tr = seal.SealTrainer(model, tok, task, safe, cfg, lora_cfg=LoraConfig(r=4, alpha=8), max_length=48,
                          max_grad_norm=0.0)
    with torch.no_grad():  # non-uniform weights so the weighting is tested too
        tr.logits.copy_(torch.tensor([0.5, -0.5, 0.2, 0.0, 1.0, -1.0]))
    ref = copy.deepcopy(tr.core)
    grads = {}
    step = tr.opt.step

    def capture(*a, **k):
        grads["g"] = torch.cat([p.grad.reshape(-1).clone() for p in tr.main_params])
        return step(*a, **k)

    tr.opt.step = capture
    ti, si = np.array([5, 0, 3, 1]), np.array([2, 0, 3, 1])
    w = tr.weights()[torch.as_tensor(ti)]
    tr.iteration(ti, si, gamma=0.25)
    ls = per_row_loss(ref, collate([tr.safe_items[i] for i in si], tok.pad_token_id))
    lt = per_row_loss(ref, collate([tr.task_items[i] for i in ti], tok.pad_token_id))
    seal.model_objective(ls, lt, w, 0.8).backward()
    expected = torch.cat([p.grad.reshape(-1) for p in ref.parameters() if p.requires_grad])
    torch.testing.assert_close(grads["g"], expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("lora", [True, False])
def test_algorithm_1_cost_is_theta_loss_minus_theta_hat_loss(lora):
    task, safe = make_rows(6, 4, 3)
    model, tok = load_model("tiny-llama")
    # One micro-batch: the hand-made steps below then run the very same float operations (accumulation over
    # micro-batches is tested above and, for theta_hat, in test_seal_distributed.py).
    cfg = SealConfig(algorithm="auxiliary", aux_steps=2, lr=1e-2, batch_size=4, micro_batch_size=4)
    tr = seal.SealTrainer(model, tok, task, safe, cfg, lora_cfg=LoraConfig(enabled=lora, r=4, alpha=8),
                          max_length=48, max_grad_norm=0.0)
    start = copy.deepcopy(tr.core)
    ti, si = np.array([4, 1, 0, 3]), np.array([0, 1, 2, 3])
    items = [tr.task_items[i] for i in ti]
    out = tr.iteration(ti, si, gamma=1.0)

    # theta_hat by hand: it starts at theta and takes aux_steps AdamW steps on mean_B w_i l_i (w = 1 at the start).
    hand = copy.deepcopy(start)
    if lora:
        hand.set_adapter(seal.AUX_ADAPTER)
        params = [p for n, p in hand.named_parameters() if f".{seal.AUX_ADAPTER}." in n]
    else:
        params = list(hand.parameters())
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    for _ in range(2):
        opt.zero_grad()
        per_row_loss(hand, collate(items, tok.pad_token_id)).mean().backward()
        opt.step()
    torch.testing.assert_close(torch.cat([p.reshape(-1) for p in tr.aux_params]),
                               torch.cat([p.detach().reshape(-1) for p in params]), atol=1e-6, rtol=1e-5)

    if lora:
        start.set_adapter("default")
    l_theta = _losses(start, items, tok.pad_token_id)  # theta at the start of the iteration
    l_hat = _losses(hand, items, tok.pad_token_id)  # theta_hat after its steps
    torch.testing.assert_close(out["task_losses"], l_theta, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out["aux_losses"], l_hat, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out["costs"], l_theta - l_hat, atol=1e-6, rtol=1e-5)
    assert (out["costs"] > 0).all()  # theta_hat fits the task batch, theta mostly the safe rows

    if lora:  # one frozen base shared by both adapters; each optimiser moved only its own adapter
        before = dict(start.named_parameters())
        for n, p in tr.core.named_parameters():
            moved = not torch.equal(p, before[n])
            # base frozen; theta took one step (A gets no gradient while B = 0), theta_hat two (A moves on the 2nd)
            assert moved == (".lora_B." in n or f".lora_A.{seal.AUX_ADAPTER}." in n), n
        assert tr.core.active_adapter == "default"


# ----------------------------------------------------------------------------- ids, files, transfer


def _marker_loss(tok):
    """A stand-in l_i: 2 for rows whose response has a harm word, else 1 (the model still gets a graph)."""
    marks = {t for w in HARM_WORDS for t in tok(" " + w, add_special_tokens=False)["input_ids"]}

    def loss(model, batch):
        base = per_row_loss(model, batch) * 0.0
        has = torch.tensor([bool(marks & set(r[lab != -100].tolist()))
                            for r, lab in zip(batch["input_ids"], batch["labels"], strict=True)])
        return base + 1.0 + has.float().to(base.device)

    return loss


def _counting_loader(monkeypatch):
    """(names asked, load_model stand-in): SEAL's row loss is the marker loss, each model load is recorded."""
    _, tok = load_model("tiny-llama")
    monkeypatch.setattr("safeselect.selection.seal.per_row_loss", _marker_loss(tok))
    asked: list = []

    def load(name):
        asked.append(name)
        return load_model("tiny-llama")

    return asked, load


def test_row_ids_survive_shuffle_and_filter(tmp_path, monkeypatch):
    task, safe = make_rows(12, 6, 3)
    order = np.random.default_rng(3).permutation(len(task))
    task = [task[i] for i in order if task[i].row_id not in ("t3", "t4")]  # shuffled, then filtered
    asked, load = _counting_loader(monkeypatch)
    n_benign = sum(not r.harmful for r in task)
    cfg = loading.build({"device": "cpu", "model.name": "smollm2-135m", "model.max_length": 48,
                        "model.lora.r": 4, "model.lora.alpha": 8, "selection.method": "seal",
                        "selection.ratio": n_benign / len(task), "selection.seal.selector_model": "tiny-llama",
                        "selection.seal.batch_size": 16, "selection.seal.epochs": 2,
                        "selection.seal.selector_lr": 0.05})
    ctx = context_for(cfg, task, safe, tmp_path, method="seal", load_model=load, show_progress=False)
    sel = seal.select(ctx)

    assert asked == ["tiny-llama"]  # the ranking is trained with selector_model (transfer)
    assert sel.row_ids == [r.row_id for r in task]
    by_id = dict(zip(sel.row_ids, sel.scores, strict=True))
    harmful = {r.row_id for r in task if r.harmful}
    assert max(by_id[i] for i in harmful) < min(s for i, s in by_id.items() if i not in harmful)
    assert {i for i, k in zip(sel.row_ids, sel.kept, strict=True) if k} == {r.row_id for r in task} - harmful
    assert [r.row_id for r in sel.kept_rows(task)] == [r.row_id for r in task if not r.harmful]

    meta = json.loads((tmp_path / seal.META_FILE).read_text())
    assert meta["row_ids"] == sel.row_ids
    assert sum(meta["gamma_per_epoch"], []) == pytest.approx([0.0, 0.0, 0.03, 0.03])
    assert meta["selector_model"] == "tiny-llama" and meta["model"] == "smollm2-135m"
    last = meta["history"][-1]
    assert last["mean_weight_harmful"] < 1.0 < last["mean_weight_benign"]

    # Rebuilt from the files, by id, in another order and at another budget.
    rev = sel.row_ids[::-1]
    again = seal.load_selection(tmp_path, cfg.selection.ratio, row_ids=rev)
    assert again.row_ids == rev
    assert again.scores == pytest.approx([by_id[i] for i in rev])
    assert set(np.array(rev)[again.kept]) == set(np.array(sel.row_ids)[sel.kept])
    tokens = list(range(1, len(task) + 1))
    half = seal.load_selection(tmp_path, 0.5, "tokens", tokens)
    assert half.kept == budget_mask(sel.scores, 0.5, "tokens", tokens).tolist()
    with pytest.raises(UserError, match="no SEAL logit"):
        seal.load_selection(tmp_path, 0.5, row_ids=["t3"])  # filtered out before selection
    with pytest.raises(UserError, match="no SEAL selector"):
        seal.load_selection(tmp_path / "nowhere", 0.5)

    # `selection.seal.logits_from`: the selector step reuses the saved logits (no model is even offered).
    reuse = loading.build({"selection.method": "seal", "selection.ratio": 0.5, "selection.seal.logits_from": str(tmp_path)})
    shuffled = task[::-1]
    out = seal.select(context_for(reuse, shuffled, safe, tmp_path / "reuse", method="seal", load_model=None, show_progress=False))
    assert out.row_ids == [r.row_id for r in shuffled]
    assert out.kept == budget_mask([by_id[r.row_id] for r in shuffled], 0.5, "rows", None).tolist()
    assert out.info["logits_from"] == str(tmp_path)


def test_the_same_selector_training_is_reused_at_another_ratio_and_retrained_when_an_input_changes(
        tmp_path, monkeypatch):
    task, safe = make_rows(10, 6, 3)
    trained, load = _counting_loader(monkeypatch)

    def run(out: str, model_id: str = "aligned-A", rows=task, **over):
        cfg = loading.build({"device": "cpu", "model.name": "tiny-llama", "model.max_length": 48, "model.lora.r": 4,
                             "model.lora.alpha": 8, "selection.method": "seal", "selection.seal.batch_size": 16,
                             "selection.seal.epochs": 1, "selection.ratio": 0.5, **over})
        ctx = context_for(cfg, rows, safe, tmp_path / out, method="seal", load_model=load,
                          model_id=lambda name=None: model_id, show_progress=False)
        return seal.select(ctx)

    first = run("a")
    assert len(trained) == 1 and "selector_reused" not in first.info
    other_ratio = run("b", **{"selection.ratio": 0.8, "selection.budget": "rows"})
    assert len(trained) == 1, "another cut of the same training: no model loaded, no training"
    assert other_ratio.scores == first.scores
    assert other_ratio.kept == budget_mask(first.scores, 0.8, "rows").tolist()
    assert other_ratio.info["selector_reused"] and (tmp_path / "b" / seal.LOGITS_FILE).exists()
    assert other_ratio.info["history"] == first.info["history"]

    run("c", **{"selection.seal.selector_lr": 0.05})  # a knob of the training
    run("d", model_id="aligned-B")  # another starting model
    run("e", rows=[*task[:-1], dataclasses.replace(task[-1], response=task[-1].response + " more")])  # one row
    run("f", **{"selection.seed": 7})
    run("g", **{"selection.seal.reuse": False})
    assert len(trained) == 6
    run("h", **{"selection.seal.selector_lr": 0.05, "selection.ratio": 0.3})
    assert len(trained) == 6, "the changed training, once stored, is reused too"


def test_empty_safe_set_is_a_user_error():
    task, _ = make_rows(4, 0, 2)
    model, tok = load_model("tiny-llama")
    with pytest.raises(UserError, match="safety reference"):
        seal.SealTrainer(model, tok, task, [], SealConfig(), lora_cfg=LoraConfig(r=4), max_length=32)


# ----------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
def test_planted_harmful_rows_lose_weight_and_mostly_fall_outside_the_kept_set(mixed_precision, monkeypatch):
    from safeselect.training.sft import train_sft

    task, safe = make_rows(40, 24, 5, length=8)
    model, tok = load_model("tiny-llama")
    # The "aligned" start: a model trained on the safe set, under which the planted rows' loss is higher.
    train_sft(model, tok, safe, TrainConfig(epochs=5, lr=1e-2, batch_size=8, micro_batch_size=8), 64,
              show_progress=False)
    harm = np.array([r.harmful for r in task])
    start = row_losses(model, tok, task, 64)
    assert start[harm].mean() > start[~harm].mean()

    cfg = SealConfig(epochs=3, lr=3e-3, batch_size=8, micro_batch_size=8, selector_lr=5e-2,
                     gamma=GammaConfig())  # linear 0, 0.03, 0.06
    dtypes: set[torch.dtype] = set()
    linear = torch.nn.functional.linear

    def spy(*args, **kwargs):
        out = linear(*args, **kwargs)
        dtypes.add(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.functional, "linear", spy)  # finetune.mixed_precision reaches SEAL's model passes
    run = seal.train_selector(model, tok, task, safe, cfg, lora_cfg=LoraConfig(r=8, alpha=16), max_length=64,
                              show_progress=False, mixed_precision=mixed_precision)
    assert torch.bfloat16 in dtypes if mixed_precision == "bf16" else dtypes == {torch.float32}
    assert [h["gamma_start"] for h in run.history] == pytest.approx([0.0, 0.03, 0.06])
    assert run.weights[harm].mean() < run.weights[~harm].mean()
    assert run.history[-1]["mean_weight_harmful"] < run.history[0]["mean_weight_harmful"]
    kept = budget_mask(run.logits, 0.8, "rows")
    assert (kept & harm).sum() <= harm.sum() // 2  # most planted rows are dropped (random keeps ~80%)


def test_seal_with_safeinstr_on_top_or_another_ratio_reuses_the_selector_through_the_pipeline(tmp_path):
    from conftest import TINY

    from safeselect.cli.main import main
    from safeselect.core.rundir import RunDir

    base = ["select", "quickstart", *TINY, "selection.method=seal", "selection.seal.epochs=1", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "selection.safeinstr.count=2", "selection.ratio=0.5", "--out", str(tmp_path / "b")]) == 0
    first, again = (RunDir(tmp_path / d).read_metrics() for d in ("a", "b"))
    assert "selection.info.selector_reused" not in first
    assert again["selection.info.selector_reused"]
    assert again["selection.added"] == 2 and again["selection.kept"] < first["selection.kept"]
    # what the reuse stands for: training again gives these very logits
    assert main([*base, "selection.seal.reuse=false", "selection.ratio=0.5", "--out", str(tmp_path / "c")]) == 0
    assert "selection.info.selector_reused" not in RunDir(tmp_path / "c").read_metrics()
    logits = [(tmp_path / d / seal.LOGITS_FILE).read_bytes() for d in "abc"]
    assert logits[0] == logits[1] == logits[2]


def test_parallel_runs_of_the_same_selector_train_it_once(tmp_path, monkeypatch):
    """Two runs that need the same training at once (an ablation's workers cutting one selector at two
    ratios): one trains under the cache's lock, the other waits for it and reuses the stored logits."""
    import threading

    task, safe = make_rows(10, 6, 3)
    trained, load = _counting_loader(monkeypatch)
    results: dict[str, seal.Selection] = {}

    def run(out: str, ratio: float) -> None:
        cfg = loading.build({"device": "cpu", "model.name": "tiny-llama", "model.max_length": 48, "model.lora.r": 4,
                             "model.lora.alpha": 8, "selection.method": "seal", "selection.seal.batch_size": 16,
                             "selection.seal.epochs": 1, "selection.ratio": ratio})
        ctx = context_for(cfg, task, safe, tmp_path / out, method="seal", load_model=load,
                          model_id=lambda name=None: "aligned-P", show_progress=False)
        results[out] = seal.select(ctx)

    threads = [threading.Thread(target=run, args=(out, ratio)) for out, ratio in (("a", 0.5), ("b", 0.8))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(trained) == 1, "the second run waited for the first one's training instead of repeating it"
    assert results["a"].scores == results["b"].scores
    assert sum("selector_reused" in r.info for r in results.values()) == 1
