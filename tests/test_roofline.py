"""The FLOP accounting of benchmarks/bench_roofline.py, exact on a tiny Llama: the bound it prints in
docs/results.md is only as good as these counts."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_roofline as R  # noqa: E402

from safeselect.models import tiny  # noqa: E402
from safeselect.training.encode import prompt_ids  # noqa: E402


def _dims(cfg):
    d, h, kv, layers = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.num_hidden_layers
    dh = d // h
    linear = 2 * layers * (2 * d * d + 2 * d * kv * dh + 3 * d * cfg.intermediate_size)  # per token
    head = 2 * d * cfg.vocab_size  # per token whose logits are computed

    def attention(n: int) -> int:  # Q K^T and P V over n x n positions, every layer
        return layers * 2 * (2 * h * n * n * dh)

    return linear, head, attention


def test_forward_counts_every_product_and_cpu_attention() -> None:
    model, _ = tiny.load(0)
    linear, head, attention = _dims(model.config)
    x = torch.randint(3, 100, (1, 10))
    with torch.no_grad():
        _, one = R.counted(lambda: model(input_ids=x, logits_to_keep=1))
        _, every = R.counted(lambda: model(input_ids=x))
    assert one == 10 * linear + attention(10) + head
    assert every == 10 * (linear + head) + attention(10)
    with torch.no_grad():
        _, parts = R.counted(lambda: model(input_ids=x), by_part=True)
    assert parts == {"products": 10 * (linear + head), "attention": attention(10), "other": 0}


def test_backward_counts_twice_the_forward() -> None:
    model, _ = tiny.load(0)
    x = torch.randint(3, 100, (2, 12))
    out, fwd = R.counted(lambda: model(input_ids=x))
    _, bwd = R.counted(lambda: out.logits.float().pow(2).mean().backward())
    # each linear product gives two of its size backward (input and weight gradients), attention four of two
    assert bwd == 2 * fwd


def test_decode_flops_counts_the_shared_prefix_once() -> None:
    model, tok = tiny.load(0)
    linear, head, attention = _dims(model.config)
    prompts, replies = ["how many apples", "write code for a bank"], ["tom has apples", "sorry"]
    ids = [prompt_ids(tok, p) for p in prompts]
    shared = next(i for i, (a, b) in enumerate(zip(*ids, strict=False)) if a != b)
    assert shared > 0
    expect = shared * linear + attention(shared) + head  # the prefix once, one logit (the first reply token's)
    for p, r in zip(ids, replies, strict=True):
        n = len(tok(r, add_special_tokens=False)["input_ids"]) + 1  # the reply and its end token
        length = len(p) + n
        expect += (length - shared) * linear + attention(length) - attention(shared) + n * head
    assert R.decode_flops(model, tok, prompts, replies) == expect


def test_profiled_groups_the_operators() -> None:
    model, _ = tiny.load(0)
    x = torch.randint(3, 100, (2, 12))
    parts = R.profiled(lambda: model(input_ids=x).logits.sum().backward())
    assert set(parts) == {"products", "attention", "other"} and all(v > 0 for v in parts.values())
    assert [R._group(op) for op in ("aten::mm", "aten.addmm", "aten::_scaled_dot_product_flash_attention_for_cpu",
                                    "aten.mul")] == ["products", "products", "attention", "other"]


def test_gemm_rate_is_positive_and_finite() -> None:
    rate = R.gemm_rate(32, 32, 32, torch.float32, seconds=0.05)
    assert 0 < rate < float("inf")
