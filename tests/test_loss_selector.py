"""loss: keep the rows with the lowest loss under the aligned model (tiny-llama stands in for it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from safeselect.config import loading
from safeselect.core.rows import Row
from safeselect.selection import loss
from safeselect.selection.base import SelectionContext, context_for


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    import torch

    from safeselect.models import load_model

    torch.manual_seed(0)
    return load_model("tiny-llama")


def task_rows() -> list[Row]:
    out = []
    for i in range(12):
        harmful = i % 4 == 0
        resp = "sure here are the steps to hack the bank" if harmful else ("positive" if i % 2 else "the answer is 7")
        out.append(Row(f"r{i}", f"question {i}: is the movie good?", resp * (1 + i % 3), harmful=harmful))
    return out


def make_ctx(tmp_path: Path, model_tok: tuple[Any, Any], rows: list[Row], calls: list, tokens=None,
             **overrides: object) -> SelectionContext:
    cfg = loading.build({"selection.method": "loss", "model.name": "tiny-llama", "model.max_length": 64, **overrides})

    def load_model(name: str | None) -> tuple[Any, Any]:
        calls.append(name)
        return model_tok

    return context_for(cfg, rows, [], tmp_path, method="loss", load_model=load_model, response_tokens=tokens,
                            show_progress=False)


def test_keeps_the_lowest_loss_rows(tmp_path: Path, tiny: tuple[Any, Any]) -> None:
    from safeselect.training.losses import row_losses

    rows, calls = task_rows(), []
    out = loss.select(make_ctx(tmp_path, tiny, rows, calls, **{"selection.ratio": 0.5}))
    assert calls == [None]  # the aligned reference model
    expected = row_losses(tiny[0], tiny[1], rows, max_length=64)
    np.testing.assert_allclose(out.scores, -expected, rtol=1e-5)
    kept = np.array(out.kept)
    assert kept.sum() == 6
    assert expected[kept].max() <= expected[~kept].min()
    assert out.info["loss_kept_mean"] <= out.info["loss_mean"]
    assert "loss_harmful_mean" in out.info and "loss_benign_mean" in out.info


def test_token_budget(tmp_path: Path, tiny: tuple[Any, Any]) -> None:
    rows = task_rows()
    tokens = [len(r.response.split()) + 1 for r in rows]
    out = loss.select(make_ctx(tmp_path, tiny, rows, [], tokens, **{"selection.budget": "tokens",
                                                                      "selection.ratio": 0.4}))
    assert 0 < sum(t for t, k in zip(tokens, out.kept, strict=True) if k) <= 0.4 * sum(tokens)


def test_non_finite_losses_fail_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loss, "row_losses", lambda *a, **k: np.array([1.0, np.nan]))
    rows = task_rows()[:2]
    with pytest.raises(RuntimeError, match="non-finite"):
        loss.select(make_ctx(tmp_path, (object(), object()), rows, []))
    with pytest.raises(ValueError, match="load_model"):
        loss.select(context_for(loading.build({}), rows, [], tmp_path, method="loss"))
