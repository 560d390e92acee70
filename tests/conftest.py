"""Shared fixtures: an isolated cache, the tiny model, seeded everything. Tests never touch the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # One cache per test session: aligned tiny models are reused across tests, never written to ~/.cache.
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("SAFESELECT_CACHE", str(cache))


@pytest.fixture(autouse=True)
def _threads() -> None:
    import torch

    # One thread: tiny models gain nothing from more, and OpenMP spin-waiting across
    # concurrent processes (torchrun tests, parallel jobs) slows everything by an order of magnitude.
    torch.set_num_threads(1)


@pytest.fixture
def tiny():
    """(model, tokenizer) of the seeded tiny Llama."""
    from safeselect.models import load_model

    return load_model("tiny-llama")


@pytest.fixture
def tiny_lora(tiny):
    """(model, tokenizer): the tiny Llama with a LoRA adapter as if trained (seeded non-zero B), so that
    every path through the adapters matters."""
    import torch

    from safeselect.config.schema import LoraConfig
    from safeselect.models import add_lora

    model, tok = tiny
    model = add_lora(model, LoraConfig(r=8, alpha=16))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 0.1)
    return model, tok


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is missing")
    return SHARED_DATA


# Overrides that keep a pipeline run on tiny-llama to seconds.
TINY = [
    "model.name=tiny-llama", "model.max_length=96", "data.n_task=24", "data.n_eval_harmful=6",
    "data.n_eval_overrefusal=4", "data.n_eval_task=6", "align.n_refusals=8", "align.n_benign=8",
    "align.train.epochs=1", "finetune.epochs=1", "eval.max_new_tokens=6", "eval.bootstrap=50",
    "data.safety_ref.n=12",
]
