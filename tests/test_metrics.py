"""Exact tests of the evaluation metrics: Wilson and bootstrap intervals, win rate, Safety Avg, kappa, answer extraction."""

from __future__ import annotations

import numpy as np
import pytest

from safeselect.core import stats as M
from safeselect.core.answers import extract_answer, is_correct
from safeselect.core.dotted import flatten, nest
from safeselect.core.rows import Row


def _reference_ci(values: list[float], n_boot: int, seed: int) -> list[float]:
    """The percentile bootstrap written out plainly, to check the vectorised one against."""
    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    lo, hi = np.percentile(x[idx].mean(axis=1), [2.5, 97.5])
    return [float(lo), float(hi)]


def test_proportion_value_n_and_wilson_interval():
    flags = [True, False, True, True, False, False, True, True]
    out = M.proportion(flags, n_boot=500, seed=3)
    assert out["value"] == pytest.approx(5 / 8)
    assert out["n"] == 8
    assert out["invalid"] == 0
    # Wilson 95% for 5/8 (written out: (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)).
    assert out["ci"] == pytest.approx([0.305742, 0.863156], abs=1e-6)


def test_proportion_degenerate_cases():
    # A 0/n or n/n proportion is never a point: Wilson's bound at k = 0 is z^2 / (n + z^2).
    z2 = 1.959963984540054 ** 2
    assert M.proportion([True, True, True])["ci"] == pytest.approx([3 / (3 + z2), 1.0])
    assert M.proportion([False] * 4)["value"] == 0.0
    assert M.proportion([False] * 120)["ci"] == pytest.approx([0.0, z2 / (120 + z2)])
    assert M.proportion([False] * 120)["ci"][1] == pytest.approx(0.031020, abs=1e-6)
    assert M.proportion([]) == {"value": None, "n": 0, "ci": None, "invalid": 0}
    # None = undecided: out of the value and of n, but counted.
    out = M.proportion([True, None, False, None])
    assert (out["value"], out["n"], out["invalid"]) == (0.5, 2, 2)


def test_mean_ci_matches_plain_bootstrap():
    vals = [1.0, 5.0, 3.0, 2.0, 4.0]
    out = M.mean_ci(vals, n_boot=200, seed=0)
    assert out["value"] == pytest.approx(3.0)
    assert out["ci"] == pytest.approx(_reference_ci(vals, 200, 0))


def test_bootstrap_chunking_keeps_the_distribution(monkeypatch):
    # Forcing many small chunks must still give n_boot resamples of the right size.
    monkeypatch.setattr(M, "_CHUNK", 10)
    samples = M._bootstrap_means(np.arange(5, dtype=float), 37, 0)
    assert samples.shape == (37,)
    assert samples.min() >= 0 and samples.max() <= 4


def test_win_rate_counts_ties_half_and_reports_invalid():
    out = M.win_rate([1.0, 0.5, 0.0, None, 1.0], n_boot=100, seed=0)
    assert out["value"] == pytest.approx(100 * (2 + 0.5) / 4)
    assert (out["n"], out["invalid"], out["wins"], out["ties"], out["losses"]) == (4, 1, 2, 1, 1)
    assert out["ci"] == pytest.approx([100 * v for v in _reference_ci([1, 0.5, 0, 1], 100, 0)])
    assert M.win_rate([0.5] * 6)["value"] == 50.0
    with pytest.raises(ValueError):
        M.win_rate([2.0])


def test_safety_avg_weighs_sets_equally():
    per_set = {"a": [True, False], "b": [True, True, True, True], "c": [None]}
    out = M.safety_avg(per_set, n_boot=300, seed=1)
    assert out["value"] == pytest.approx((0.5 + 1.0) / 2)  # not the pooled 5/6
    assert (out["n"], out["invalid"], out["sets"]) == (6, 1, 2)
    # b is constant, so the interval is the interval of a's rate, halved, plus 0.5.
    lo, hi = _reference_ci([1.0, 0.0], 300, 1)
    assert out["ci"] == pytest.approx([(lo + 1.0) / 2, (hi + 1.0) / 2])
    assert M.safety_avg({})["value"] is None


def test_cohen_kappa_exact():
    out = M.cohen_kappa([1, 1, 0, 0], [1, 0, 0, 0])
    # po = 3/4; pe = 1/2 * 1/4 + 1/2 * 3/4 = 1/2; kappa = (3/4 - 1/2) / (1/2) = 1/2
    assert out == {"kappa": pytest.approx(0.5), "agreement": 0.75, "n": 4}
    assert M.cohen_kappa([True, None, False], [True, True, True])["n"] == 2
    assert M.cohen_kappa([1, 1], [1, 1])["kappa"] is None  # one label only: undefined
    table = M.agreement_table({"x": [1, 0], "y": [1, 0], "z": [0, 1]})
    assert [(r["a"], r["b"], r["kappa"]) for r in table] == [("x", "y", 1.0), ("x", "z", -1.0), ("y", "z", -1.0)]


def test_precision_recall_exact():
    out = M.precision_recall([True, True, False, False, True], [True, False, True, False, True])
    assert (out["tp"], out["fp"], out["fn"], out["tn"], out["n"]) == (2, 1, 1, 1, 5)
    assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 / 3)
    assert M.precision_recall([False], [False])["precision"] is None


@pytest.mark.parametrize("text,expected", [
    ("The answer is 1,234.", "1234"),
    ("3 + 4 = 7. The answer is 7", "7"),
    ("We add 2 and 3 to get 5", "5"),
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
    ("Answer: $18.50 in total, since 3 items", "18.5"),
    ("It is -3.", "-3"),
    ("Final answer 12.0", "12"),
    ("To answer this, 3 + 4 = 7", "7"),
    ("no number here", None),
])
def test_extract_final_number(text, expected):
    assert extract_answer("gsm8k", text) == expected
    assert extract_answer("arithmetic", text) == expected


@pytest.mark.parametrize("text,expected", [
    ("Positive.", "positive"),
    ("The sentiment is negative, not positive", "negative"),
    ("sentiment: POSITIVE", "positive"),
    ("I think it's fine", None),
])
def test_extract_label_word(text, expected):
    assert extract_answer("sentiment", text) == expected


def test_is_correct_by_task():
    assert is_correct(Row("a", "q", answer="72", task="gsm8k"), "so she sold 72 clips") is True
    assert is_correct(Row("a", "q", answer="#### 1,000", task="gsm8k"), "The answer is 1000") is True
    assert is_correct(Row("a", "q", answer="72", task="gsm8k"), "The answer is 71") is False
    assert is_correct(Row("b", "q", answer="positive", task="sentiment"), "Positive") is True
    assert is_correct(Row("b", "q", answer="1", task="sst2"), "positive") is True
    assert is_correct(Row("b", "q", answer="0", task="sst2"), "positive") is False
    assert is_correct(Row("c", "q", answer=None, task="sentiment"), "positive") is None
    # Unknown task: numbers compared as numbers, text by its normalised first line.
    assert is_correct(Row("d", "q", answer="12", task="other"), "twelve, i.e. 12.0") is True
    assert is_correct(Row("e", "q", answer="Paris", task="other"), "paris.\nIt is in France") is True
    assert is_correct(Row("e", "q", answer="Paris", task="other"), "It is Paris") is False


def test_flatten_nest_roundtrip_and_clash():
    nested = {"safety": {"hh": {"refusal": {"harmful_rate": 0.1, "harmful_rate_ci": [0.0, 0.2]}}},
              "task": {"a": {"accuracy": 1.0}}}
    flat = flatten(nested)
    assert flat == {"safety.hh.refusal.harmful_rate": 0.1, "safety.hh.refusal.harmful_rate_ci": [0.0, 0.2],
                    "task.a.accuracy": 1.0}
    assert nest(flat) == nested
    with pytest.raises(ValueError):
        nest({"a": 1, "a.b": 2})
    with pytest.raises(ValueError):
        nest({"a.b": 2, "a": 1})


def test_add_figure_writes_siblings():
    flat: dict = {}
    M.add_figure(flat, "task.x.accuracy", {"value": 0.5, "n": 2, "ci": [0.0, 1.0], "invalid": 0}, invalid=True)
    assert flat == {"task.x.accuracy": 0.5, "task.x.accuracy_ci": [0.0, 1.0], "task.x.accuracy_n": 2,
                    "task.x.accuracy_invalid": 0}
