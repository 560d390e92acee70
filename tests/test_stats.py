"""Exact values of the comparison statistics: Wilson intervals, the two-level bootstrap, paired differences,
verdicts and the smallest detectable difference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safeselect.core import stats as S

Z2 = S.Z95 ** 2


def test_wilson_matches_the_closed_form_and_known_values():
    assert S.wilson_interval(0, 10) == pytest.approx([0.0, 0.277532], abs=1e-6)  # textbook: 0/10 -> [0, 0.2775]
    assert S.wilson_interval(10, 10) == pytest.approx([0.722468, 1.0], abs=1e-6)
    assert S.wilson_interval(0, 120)[1] == pytest.approx(Z2 / (120 + Z2))
    lo, hi = S.wilson_interval(30, 120)
    p, n = 0.25, 120
    centre = (p + Z2 / (2 * n)) / (1 + Z2 / n)
    half = S.Z95 / (1 + Z2 / n) * math.sqrt(p * (1 - p) / n + Z2 / (4 * n * n))
    assert (lo, hi) == pytest.approx((centre - half, centre + half), rel=1e-6)
    assert S.wilson_interval(0, 0) is None


def test_detectable_difference_is_z_sum_times_se():
    assert pytest.approx(2.801585, abs=1e-6) == S.Z95 + S.Z80
    assert S.detectable_difference(0.05) == pytest.approx(0.05 * 2.801585, abs=1e-6)


def test_standard_error_takes_the_larger_of_prompt_and_seed_level():
    g = [np.array([1.0, 0.0, 1.0, 0.0]), np.array([1.0, 1.0, 1.0, 1.0])]
    within = (np.var(g[0], ddof=1) / 4 + 0.0) / 4  # (1/3)/4 / k^2
    between = np.var([0.5, 1.0], ddof=1) / 2
    assert S.standard_error(g) == pytest.approx(math.sqrt(max(within, between)))
    assert S.standard_error([np.array([1.0, 0.0, 1.0, 0.0])]) == pytest.approx(math.sqrt((1 / 3) / 4))
    # Seeds that agree exactly still carry their prompt-level error.
    same = [np.array([1.0, 0.0]), np.array([1.0, 0.0])]
    assert S.standard_error(same) == pytest.approx(math.sqrt((0.5 / 2 + 0.5 / 2) / 4))


def test_seeds_mean_weighs_seeds_equally_and_keeps_seed_spread_in_the_interval():
    out = S.seeds_mean([[1.0] * 10, [0.0] * 90], n_boot=2000, seed=0)
    assert out["value"] == 0.5 and out["n"] == 100 and out["seeds"] == 2  # not the pooled 0.1
    # Two seeds that disagree completely: a pooled prompt bootstrap would say 0.5 +- 0.1; resampling seeds
    # first puts both extremes inside the interval.
    assert out["ci"] == [0.0, 1.0]
    # A constant figure has a point interval; None values are left out.
    assert S.seeds_mean([[0.25, 0.25, None], [0.25]], n_boot=100)["ci"] == [0.25, 0.25]
    assert S.seeds_mean([[], [None]]) == {"value": None, "n": 0, "seeds": 0, "ci": None}
    # Seeded: the same call gives the same interval.
    g = [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    assert S.seeds_mean(g, seed=4) == S.seeds_mean(g, seed=4)


def test_seeds_mean_of_a_rate_never_collapses_to_a_point():
    none = [[0.0] * 120] * 3
    assert S.seeds_mean(none)["ci"] == [0.0, 0.0]  # the bootstrap alone: certain, wrongly
    out = S.seeds_mean(none, binary=True)
    assert out["value"] == 0.0 and out["ci"] == [0.0, S.wilson_interval(0, 360)[1]]
    assert out["ci"][1] == pytest.approx(0.010558, abs=1e-6)
    every = S.seeds_mean([[1.0] * 120] * 3, binary=True)["ci"]
    assert every == [S.wilson_interval(360, 360)[0], 1.0] and every[0] == pytest.approx(0.989442, abs=1e-6)
    # Seeds that disagree: the bootstrap's seed spread is wider than the pooled Wilson interval and is kept.
    assert S.seeds_mean([[1.0] * 10, [0.0] * 90], n_boot=2000, seed=0, binary=True)["ci"] == [0.0, 1.0]


def test_verdicts():
    assert S.verdict(-0.3, -0.1, lower_is_better=True) == "better"
    assert S.verdict(-0.3, -0.1, lower_is_better=False) == "worse"
    assert S.verdict(0.1, 0.3, lower_is_better=True) == "worse"
    assert S.verdict(0.1, 0.3, lower_is_better=False) == "better"
    assert S.verdict(-0.1, 0.0, lower_is_better=True) == "no detectable difference"
    assert S.verdict(None, None, lower_is_better=True) == "no detectable difference"


def test_paired_difference_pairs_by_prompt_within_each_seed():
    base = [{"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}, {"a": 1.0, "b": 0.0, "c": 1.0}]
    row = [{"a": 0.0, "b": 0.0, "c": 0.0, "d": 0.0, "extra": 1.0}, {"a": 0.0, "b": 0.0, "c": 0.0, "z": None}]
    out = S.paired_difference(row, base, lower_is_better=True, n_boot=500, seed=0)
    # seed 0: four prompts, each -1; seed 1: a -1, b 0, c -1 (extra / z have no partner): mean of (-1, -2/3)
    assert out["value"] == pytest.approx((-1.0 - 2 / 3) / 2)
    assert out["n"] == 7 and out["seeds"] == 2
    d = [np.array([-1.0] * 4), np.array([-1.0, 0.0, -1.0])]
    assert out["se"] == pytest.approx(S.standard_error(d))
    # 0/1 outcomes on 7 prompt pairs: the matched-pairs floor (z + z)^2 / 7 exceeds (z + z) * SE here
    assert out["detectable"] == pytest.approx(max((S.Z95 + S.Z80) * out["se"], (S.Z95 + S.Z80) ** 2 / 7))
    assert out["detectable"] == pytest.approx(2.801585 ** 2 / 7, abs=1e-5)
    assert out["ci"][1] < 0 and out["verdict"] == "better"
    same = S.paired_difference(base, base, lower_is_better=True)
    assert same["value"] == 0.0 and same["ci"] == [0.0, 0.0] and same["verdict"] == "no detectable difference"
    assert same["se"] == 0.0 and same["detectable"] == pytest.approx(2.801585 ** 2 / 7, abs=1e-5)  # never 0
    zeros = [{str(i): 0.0 for i in range(120)}] * 2  # 2 seeds x 120 prompts, no verdict changed
    assert S.paired_difference(zeros, zeros, True)["detectable"] == pytest.approx(7.848879 / 240, abs=1e-6)
    means = S.paired_difference([{"a": 0.5, "b": 0.25}], [{"a": 0.5, "b": 0.5}], True)  # not 0/1: no floor
    assert means["detectable"] == pytest.approx((S.Z95 + S.Z80) * means["se"])
    assert S.paired_difference(row, base, lower_is_better=False, n_boot=500)["verdict"] == "worse"
    with pytest.raises(ValueError, match="same seeds"):
        S.paired_difference(row[:1], base, lower_is_better=True)
    assert S.paired_difference([{}], [{"a": 1.0}], lower_is_better=True)["value"] is None
