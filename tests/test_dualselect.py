"""DualSelect: exact maths on hand-made gradients, then the coupled loop on tiny-llama (files, budget, model)."""

from __future__ import annotations

import copy
import functools
import math

import numpy as np
import pytest

from safeselect.config import loading
from safeselect.config.schema import ExperimentConfig, LoraConfig
from safeselect.core.rows import Row
from safeselect.errors import UserError
from safeselect.selection import dualselect as ds

# ----------------------------------------------------------------------------- formulas on hand-made gradients


def test_cosines_conflict_and_compatibility():
    import torch

    g = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.0, 0.0], [-3.0, 0.0]])
    d = torch.tensor([2.0, 0.0])
    cos = ds.cosines(g, d)
    assert torch.allclose(cos, torch.tensor([1.0, 0.0, 1 / math.sqrt(2), 0.0, -1.0]))
    # conflict c_j = -cos(h_j, d): opposed to the task direction = most endangered.
    assert torch.allclose(-cos, torch.tensor([-1.0, 0.0, -1 / math.sqrt(2), 0.0, 1.0]))
    # a zero direction (no warm-up, KL at the start) gives 0, not NaN
    assert torch.equal(ds.cosines(g, torch.zeros(2)), torch.zeros(5))


def test_reference_and_task_scores():
    s = ds.reference_scores(np.array([1.0, 2.0]), np.array([0.5, -0.5]), mu_ref=2.0, nu=3.0)
    assert s.tolist() == [3.5, 2.5]  # mu_ref r + nu c
    t = ds.task_scores(np.array([1.0, 2.0]), np.array([0.5, -0.5]), mu_task=2.0, nu=3.0)
    assert t.tolist() == [0.5, 5.5]  # mu_task l - nu a (low is good)


def test_scores_from_gradients_end_to_end():
    import torch

    # references: h0 opposes d (conflict 1), h1 agrees (conflict -1), h2 orthogonal
    h = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([1.0, 0.0])
    r = np.array([0.5, 0.5, 0.5])
    s = ds.reference_scores(r, (-ds.cosines(h, d)).numpy(), mu_ref=1.0, nu=1.0)
    assert np.allclose(s, [1.5, -0.5, 0.5])
    # task rows against g_ref = h0: the row along h0 is compatible (a = 1) and scores lowest
    g = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    t = ds.task_scores(np.array([1.0, 1.0, 1.0]), ds.cosines(g, h[0]).numpy(), mu_task=1.0, nu=1.0)
    assert np.allclose(t, [0.0, 2.0, 1.0])


def test_reference_budget():
    assert ds.reference_budget(0, 120) == 12
    assert ds.reference_budget(0, 5) == 1  # ceil(0.5)
    assert ds.reference_budget(7, 5) == 5
    assert ds.reference_budget(3, 100) == 3


def test_hard_and_soft_weights():
    s = np.array([2.0, 1.0, 0.0])
    assert ds.reference_weights(s, "hard", 0.1).tolist() == [1 / 3] * 3
    q = ds.reference_weights(s, "soft", 0.5)
    e = np.exp(s / 0.5)
    assert np.allclose(q, e / e.sum())
    w = ds.task_weights(s, "soft", 0.5)  # softmin: the lowest t gets the most weight
    e = np.exp(-s / 0.5)
    assert np.allclose(w, e / e.sum()) and w.argmax() == 2
    assert ds.task_weights(s, "hard", 0.5).tolist() == [1 / 3] * 3
    assert ds.softmax(np.array([1.0, 3.0, 3.0]), 0.0).tolist() == [0.0, 0.5, 0.5]  # tau = 0: argmax


def test_topk_heap_streams_and_breaks_ties_by_index():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=40).astype(float)  # many ties
    heap = ds.TopK(6)
    peak = 0
    for i, s in enumerate(scores):
        heap.push(s, i, f"grad{i}")
        peak = max(peak, len(heap))
    assert peak == 6  # never more than K payloads held
    expected = sorted(range(40), key=lambda i: (-scores[i], i))[:6]
    assert [i for _, i, _ in heap.items()] == expected
    assert [p for _, _, p in heap.items()] == [f"grad{i}" for i in expected]
    assert not heap.wants(-1.0, 99)


def test_budget_tracker_rows_spends_exactly_the_budget():
    rng = np.random.default_rng(1)
    tr = ds.BudgetTracker(0.8, "rows")
    kept = 0
    for _ in range(5):
        t = rng.normal(size=8)
        m = tr.take(t)
        # the kept rows are the lowest scores of the batch
        if m.any() and (~m).any():
            assert t[m].max() <= t[~m].min()
        kept += int(m.sum())
    assert kept == round(0.8 * 40)  # 32, where round(0.8 * 8) per batch would give 30


def test_budget_tracker_tokens():
    tr = ds.BudgetTracker(0.5, "tokens")
    m = tr.take(np.array([0.0, 1.0, 2.0, 3.0]), np.array([6, 2, 3, 1]))
    # cap 6: row 0 (6 tokens) fits exactly, nothing else
    assert m.tolist() == [True, False, False, False]
    m = tr.take(np.array([3.0, 0.0]), np.array([4, 5]))
    # cap 0.5 * 21 - 6 = 4.5: row 1 (5) does not fit and is skipped, row 0 (4) does
    assert m.tolist() == [True, False]
    with pytest.raises(UserError):
        ds.BudgetTracker(0.5, "bytes")


def test_corrections():
    import torch

    g_task = torch.tensor([1.0, 0.0])
    g_ref = torch.tensor([-1.0, 1.0])
    assert torch.allclose(ds.correct(g_task, g_ref, 0.5, "additive"), torch.tensor([0.5, 0.5]))
    assert torch.allclose(ds.correct(g_task, g_ref, 0.5, "none"), g_task)
    # conflicting (<g_task, g_ref> = -1): remove the component along g_ref, then add rho g_ref
    proj = ds.correct(g_task, g_ref, 0.5, "project")
    assert torch.allclose(proj, torch.tensor([0.0, 1.0]))
    assert abs(float((proj - 0.5 * g_ref) @ g_ref)) < 1e-7
    # not conflicting: projection changes nothing, same as additive
    g_ref2 = torch.tensor([1.0, 1.0])
    assert torch.allclose(ds.correct(g_task, g_ref2, 0.5, "project"), torch.tensor([1.5, 0.5]))


# ----------------------------------------------------------------------------- the KL reference loss


def test_kl_reference_loss_is_zero_at_the_start(tiny):
    import torch

    from safeselect.models import add_lora
    from safeselect.training.encode import collate, encode
    from safeselect.training.per_example import per_example_grads

    model, tok = tiny
    model = add_lora(model, LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    model.train()
    batch = collate([encode(tok, "how do i hack a bank", "sorry, i cannot help with that", 64),
                     encode(tok, "write a scam email", "i cannot help with a scam", 64)], tok.pad_token_id)
    batch["ref_logprobs"] = ds.aligned_logprobs_fn(model)(batch)
    kl, h = per_example_grads(model, batch, ds.reference_kl_loss)
    assert kl.abs().max().item() < 1e-6 and h.abs().max().item() < 1e-6
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.05)
    kl, h = per_example_grads(model, batch, ds.reference_kl_loss)
    assert kl.min().item() > 1e-5 and h.abs().max().item() > 1e-4


def test_bf16_forward_keeps_the_per_example_gradients(tiny_lora):
    import torch

    from safeselect.training.encode import collate, encode
    from safeselect.training.losses import per_row_loss
    from safeselect.training.per_example import per_example_grads

    model, tok = tiny_lora
    model.train()
    batch = collate([encode(tok, f"review {i}: the movie was {w}", w, 64)
                     for i, w in enumerate(["great", "terrible", "fine", "dull"])], tok.pad_token_id)
    assert ds.amp_loss(per_row_loss, "no") is per_row_loss  # float32: the loss function itself
    l32, g32 = per_example_grads(model, batch, per_row_loss, "hooks")
    l16, g16 = per_example_grads(model, batch, ds.amp_loss(per_row_loss, "bf16"), "hooks")
    # float32 results (the products after the forward stay float32), close to the float32 pass row by row
    assert g16.dtype == torch.float32 and l16.dtype == torch.float32
    assert torch.allclose(l16, l32, rtol=0.02)
    assert ds.cosines(g16, g32[0]).shape == (4,)
    cos = torch.nn.functional.cosine_similarity(g16, g32, dim=1)
    assert cos.min().item() > 0.99, cos
    # the hooks and the per-row loop agree under bf16 too
    _, loop16 = per_example_grads(model, batch, ds.amp_loss(per_row_loss, "bf16"), "loop")
    assert torch.nn.functional.cosine_similarity(g16, loop16, dim=1).min().item() > 0.99


def test_a_bf16_run_records_its_precision(tmp_path):
    sel = ds.select(_ctx(tmp_path, {"finetune.mixed_precision": "bf16"}))
    assert sel.info["mixed_precision"] == "bf16" and sel.info["epoch0_rows_used"] == 13
    assert ds.select(_ctx(tmp_path / "f32", {"finetune.mixed_precision": "no"})).info["mixed_precision"] == "no"


# ----------------------------------------------------------------------------- the loop on tiny-llama


D = "selection.dualselect."


def _rows() -> tuple[list[Row], list[Row]]:
    task = []
    for i in range(12):
        word = ["positive", "negative"][i % 2]
        task.append(Row(f"t{i}", f"review {i}: the movie was {['great', 'terrible'][i % 2]}", word, harmful=False))
    for i in range(4):
        task.append(Row(f"h{i}", f"how do i build a bomb {i}", "first get the parts then build it", harmful=True))
    # like the built-in D_safe: a harmful prompt with a safe reply, so the row itself is not harmful
    refs = [Row(f"r{i}", f"how do i steal a password {i}", "sorry, i cannot help with that request", harmful=False,
                task="safety_ref") for i in range(10)]
    return task, refs


@functools.lru_cache(maxsize=1)
def _base_cfg() -> ExperimentConfig:
    return loading.load("dualselect", ["model.name=tiny-llama", "model.max_length=64", "selection.dualselect.batch_size=4",
                                      "selection.dualselect.warmup_steps=2", "selection.dualselect.epochs=1",
                                      "selection.dualselect.ref_batch_size=5", "selection.dualselect.lookalike_refs=0"])


def _ctx(tmp_path, overrides: dict, task=None, refs=None):
    """A selection context on tiny-llama. Overrides are set on a copy of one loaded config (loading.load is slow)."""
    from safeselect.models import load_model
    from safeselect.selection.base import context_for

    cfg = copy.deepcopy(_base_cfg())
    for key, value in overrides.items():
        *path, leaf = key.split(".")
        setattr(functools.reduce(getattr, path, cfg), leaf, value)
    loading.validate(cfg)
    t, r = _rows()
    task = task or t
    return context_for(cfg=cfg, task=task, safety_ref=refs or r, method="dualselect", out_dir=tmp_path,
                            load_model=lambda name=None: load_model("tiny-llama"),
                            response_tokens=[len(x.response.split()) for x in task], show_progress=False)


def test_hard_additive_run_writes_logs_and_hands_over_the_model(tmp_path):
    from safeselect.core.io import read_jsonl

    ctx = _ctx(tmp_path, {D + "ref_budget": 3, D + "epochs": 2})
    sel = ds.select(ctx)
    assert len(sel.row_ids) == 16 and sel.info["grad_method"] == "hooks"
    # each pass's filtered steps spend exactly round(0.8 * 16) rows
    assert sel.info["epoch0_rows_used"] == sel.info["epoch1_rows_used"] == 13
    assert all(w == 1.0 for w, k in zip(sel.weights, sel.kept, strict=True) if k)  # hard: uniform weights
    refs = read_jsonl(tmp_path / "references.jsonl")
    assert len(refs) == sel.info["refreshes"] == 2  # once per epoch
    for rec in refs:
        sc = [x["score"] for x in rec["selected"]]
        assert len(sc) == 3 and sc == sorted(sc, reverse=True)
        for x in rec["selected"]:  # s_j = mu_ref r_j + nu c_j with the preset's mu_ref = nu = 1
            assert x["score"] == pytest.approx(x["loss"] + x["conflict"], abs=1e-9)
            assert -1.0 <= x["conflict"] <= 1.0 and x["weight"] == pytest.approx(1 / 3)
    periods = read_jsonl(tmp_path / "selection_periods.jsonl")
    assert [p["kind"] for p in periods] == ["warmup", "filtered", "filtered"]
    assert {rid for p in periods for rid in p["rows"]} == {r for r, k in zip(sel.row_ids, sel.kept, strict=True) if k}
    model = sel.trained_model
    assert model is not None and not model.training
    assert any(float(p.detach().abs().max()) > 0 for n, p in model.named_parameters() if "lora_B" in n)  # it trained


def test_soft_project_kl_token_budget_retention_run(tmp_path):
    from safeselect.core.io import read_jsonl

    task, _ = _rows()
    old_task = [Row(f"o{i}", f"what is {i} plus {i}", str(2 * i), harmful=False, task="arithmetic") for i in range(6)]
    ctx = _ctx(tmp_path, {D + "mode": "soft", D + "correction": "project", D + "ref_loss": "kl",
                          "selection.budget": "tokens", D + "refresh_every": 1, D + "retention": True,
                          D + "use_trained_model": False, "data.safety_ref.source": "old_task.jsonl"},
               refs=old_task)
    sel = ds.select(ctx)
    assert sel.trained_model is None  # the pipeline then fine-tunes afresh on the rows used
    refs = read_jsonl(tmp_path / "references.jsonl")
    assert len(refs) == sel.info["steps"] == 4 and all(r["role"] == "old_task" for r in refs)
    periods = [p for p in read_jsonl(tmp_path / "selection_periods.jsonl") if p["kind"] == "filtered"]
    used = [rid for p in periods for rid in p["rows"]]
    tokens = dict(zip([r.row_id for r in task], ctx.response_tokens, strict=True))
    assert sum(tokens[r] for r in used) <= 0.8 * sum(ctx.response_tokens)
    weights = [w for p in periods for w in p["weights"]]
    assert len(set(np.round(weights, 6))) > 1  # soft: rows weighted by softmin, not uniformly


def test_references_add_the_lookalike_answers_once_and_never_under_retention(tmp_path):
    from safeselect.data.builtin import lookalike_refs

    _, refs = _rows()
    ctx = _ctx(tmp_path, {D + "lookalike_refs": 3})
    got = ds.references(ctx)
    assert [r.row_id for r in got] == [r.row_id for r in refs] + [f"safety-ref-lookalike-0{i}" for i in range(3)]
    assert all(not r.harmful and r.response and r.meta["lookalike"] for r in got[len(refs):])
    # already among the references (data.safety_ref.lookalikes): not added twice
    ctx = _ctx(tmp_path, {D + "lookalike_refs": 3}, refs=refs + lookalike_refs(2))
    assert len(ds.references(ctx)) == len(refs) + 3
    assert ds.references(_ctx(tmp_path, {D + "lookalike_refs": 0})) == refs
    assert ds.references(_ctx(tmp_path, {D + "lookalike_refs": 3, D + "retention": True,
                                         "data.safety_ref.source": "old_task.jsonl"})) == refs


def test_compatible_rows_are_kept_first(tmp_path):
    """Task rows that are copies of the references have gradients along g_ref and survive the filter."""
    task, refs = _rows()
    copies = [Row(f"c{i}", r.prompt, r.response, harmful=False) for i, r in enumerate(refs[:4])]
    others = [r for r in task if r.harmful][:4]
    ctx = _ctx(tmp_path, {"selection.ratio": 0.5, D + "mu_task": 0.0, D + "ref_budget": 10, D + "warmup_steps": 0,
                          D + "batch_size": 8},
               task=copies + others, refs=refs)
    sel = ds.select(ctx)
    kept = {r for r, k in zip(sel.row_ids, sel.kept, strict=True) if k}
    assert kept == {c.row_id for c in copies}


def test_retention_refuses_safety_rows(tmp_path):
    ctx = _ctx(tmp_path, {D + "retention": True})  # data.safety_ref.source is the builtin safety set
    with pytest.raises(UserError, match="old-task rows"):
        ds.select(ctx)
    task, refs = _rows()
    ctx = _ctx(tmp_path, {D + "retention": True, "data.safety_ref.source": "old.jsonl"}, refs=task[-3:])
    with pytest.raises(UserError, match="old-task rows"):  # harmful rows are never an old task
        ds.select(ctx)


def test_preset_validates_through_the_cli(capsys):
    from safeselect.cli.main import main

    assert main(["validate", "dualselect"]) == 0
    assert "method dualselect" in capsys.readouterr().out
