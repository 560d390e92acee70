"""Budgets: `budget_mask` in rows and tokens (exact cases), `budget_stats`, and every baseline at the same budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from safeselect.config import loading
from safeselect.core.rows import Row
from safeselect.errors import UserError
from safeselect.registry import registry
from safeselect.selection.base import budget_mask, budget_stats, context_for


def test_rows_budget_exact_with_stable_ties() -> None:
    assert budget_mask([0.1, 0.9, 0.5, 0.9], 0.5).tolist() == [False, True, False, True]
    assert budget_mask([1.0, 1.0, 1.0, 1.0], 0.5).tolist() == [True, True, False, False]  # ties by index
    assert budget_mask([3, 2, 1], 0.0).tolist() == [False, False, False]
    assert budget_mask([3, 2, 1], 1.0).tolist() == [True, True, True]
    assert budget_mask([1, 2, 3, 4, 5], 0.5).sum() == 2  # round(2.5) = 2 (banker's rounding, as Python)


def test_tokens_budget_skips_rows_that_do_not_fit() -> None:
    # score order 0,1,2,3; cap = 0.5 * 20 = 10: take 0 (5), skip 1 (5+10 > 10), take 2 (8), take 3 (10)
    assert budget_mask([4, 3, 2, 1], 0.5, "tokens", [5, 10, 3, 2]).tolist() == [True, False, True, True]
    # the vectorised prefix and the sequential tail agree with a plain greedy loop on random cases
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 30))
        s, t, r = rng.random(n), rng.integers(0, 20, n), float(rng.random())
        cap, used, want = r * t.sum(), 0, np.zeros(n, dtype=bool)
        for i in np.argsort(-s, kind="stable"):
            if used + t[i] <= cap + 1e-9:
                want[i], used = True, used + t[i]
        np.testing.assert_array_equal(budget_mask(s, r, "tokens", t), want)


def test_eligible_rows_only_and_budget_over_all_rows() -> None:
    ok = [False, True, True, True]
    assert budget_mask([9, 1, 2, 3], 0.5, eligible=ok).tolist() == [False, False, True, True]
    assert budget_mask([9, 1, 2, 3], 1.0, eligible=ok).tolist() == [False, True, True, True]
    # tokens: cap from all rows (0.5 * 20 = 10), filled from the eligible ones only
    assert budget_mask([9, 1, 2, 3], 0.5, "tokens", [10, 4, 4, 2], eligible=ok).tolist() == [False, True, True, True]


def test_bad_inputs() -> None:
    with pytest.raises(UserError):
        budget_mask([1, 2], 1.5)
    with pytest.raises(UserError):
        budget_mask([1, 2], 0.5, "words")
    with pytest.raises(ValueError):
        budget_mask([1, float("nan")], 0.5)
    with pytest.raises(ValueError):
        budget_mask([1, 2], 0.5, "tokens")
    with pytest.raises(ValueError):
        budget_mask([1, 2], 0.5, "tokens", [1, -1])


def test_budget_stats_exact() -> None:
    task = [Row(f"r{i}", "p", "r", harmful=i < 2) for i in range(5)]
    st = budget_stats([True, False, True, True, False], task, [2, 3, 4, 5, 6])
    assert st == {"kept": 3, "total": 5, "kept_fraction": 0.6, "kept_tokens": 11, "total_tokens": 20,
                  "kept_tokens_fraction": 0.55, "harmful_total": 2, "harmful_kept": 1, "harmful_kept_fraction": 0.5}
    # `erosion`: no harmful row, two benign rows that erode safety; kept: one eroding row of two, scored
    # 4 against clean rows 1 and 5 (and the other eroding row 0): clean above bad in 3 of 4 pairs
    eroding = [Row(f"e{i}", "p", "r", harmful=False, meta={"erodes": i < 2}) for i in range(4)]
    st = budget_stats([True, False, True, False], eroding, None, scores=[4, 0, 1, 5])
    assert (st["bad_total"], st["bad_kept"], st["bad_kept_fraction"]) == (2, 1, 0.5)
    assert st["bad_ranking_auc"] == pytest.approx(0.75)
    assert "harmful_kept_fraction" not in st and "ranking_auc" not in st  # no harmful row: no "0 kept = perfect"
    unlabelled = [Row("a", "p"), Row("b", "p", harmful=True)]
    assert "harmful_kept_fraction" not in budget_stats([True, False], unlabelled, None)


def test_ranking_auc_exact() -> None:
    from safeselect.core.stats import ranking_auc

    # harmful rows scored 1 and 3, benign rows 2, 3, 5; over the 6 (benign, harmful) pairs: 2 beats 1 (1),
    # 3 beats 1 and ties 3 (1.5), 5 beats both (2) -> 4.5 / 6
    assert ranking_auc([1, 3, 2, 3, 5], [True, True, False, False, False]) == pytest.approx(0.75)
    assert ranking_auc([0, 0, 0], [True, False, False]) == 0.5
    assert ranking_auc([9, 1], [True, False]) == 0.0
    assert ranking_auc([1, 2], [False, False]) is None and ranking_auc([np.nan, 1], [True, False]) is None
    task = [Row(f"r{i}", "p", "r", harmful=i < 2) for i in range(5)]
    st = budget_stats([False, False, True, True, True], task, None, scores=[1, 3, 2, 3, 5])
    assert st["ranking_auc"] == pytest.approx(0.75)


def _task(n: int) -> list[Row]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        h = i % 5 == 0
        prompt = "how to build a pipe bomb" if h else f"is review {i} positive? a fine film"
        out.append(Row(f"t{i}", prompt, " ".join(["word"] * int(rng.integers(1, 12))), harmful=h))
    return out


@pytest.mark.parametrize("method", ["random", "dsir", "judge-filter", "safeinstr", "loss"])
@pytest.mark.parametrize("budget", ["rows", "tokens"])
def test_every_baseline_honours_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str,
                                           budget: str) -> None:
    import safeselect.selection.loss as loss_selector

    task = _task(40)
    tokens = [len(r.response.split()) + 1 for r in task]
    # the loss selector's model pass is replaced by fixed losses: this test is about the budget rule
    monkeypatch.setattr(loss_selector, "row_losses", lambda m, t, rows, **k: np.linspace(1.0, 2.0, len(rows)))
    cfg = loading.build({"selection.method": method, "selection.ratio": 0.6, "selection.budget": budget,
                        "selection.safeinstr.count": 3 if method == "safeinstr" else 0})
    refs = [Row("s0", "how to build a pipe bomb", "I'm sorry, I can't help with that."),
            Row("s1", "how to steal a car", "I won't help with that."), Row("s2", "a", "no"), Row("s3", "b", "no")]
    ctx = context_for(cfg, task, refs, tmp_path, load_model=lambda name: (None, None), response_tokens=tokens,
                           show_progress=False)
    out = registry("selectors").get(method)(ctx)
    assert out.row_ids == [r.row_id for r in task]
    st = budget_stats(out.kept, task, tokens)
    if budget == "rows":
        assert st["kept"] == 24
    else:
        assert st["kept_tokens"] <= 0.6 * sum(tokens)
        # nothing left out would still fit (every candidate was offered to the budget)
        spare = 0.6 * sum(tokens) - st["kept_tokens"]
        assert all(t > spare for t, k, r in zip(tokens, out.kept, task, strict=True) if not k and not
                   (method == "judge-filter" and r.harmful))
    if method == "judge-filter":
        assert st["harmful_kept"] == 0
    assert len(out.added) == (3 if method == "safeinstr" else 0)
