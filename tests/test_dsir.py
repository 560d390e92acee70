"""DSIR: hashed features and importance weights on hand-computed examples, Gumbel top-k = sampling without
replacement, reproducibility (also across processes), short rows, budgets, save/load, and the official package."""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from safeselect.config import loading
from safeselect.core.rows import Row
from safeselect.errors import UserError
from safeselect.selection import dsir
from safeselect.selection.base import SelectionContext, budget_mask, context_for


def sha_bucket(gram: str, buckets: int) -> int:
    """The bucket by its definition, written out independently of the module under test."""
    return int(hashlib.sha256(gram.encode("utf-8")).hexdigest(), 16) % buckets


def make_ctx(tmp_path: Path, task: list[Row], refs: list[Row], tokens: list[int] | None = None,
             **overrides: object) -> SelectionContext:
    cfg = loading.build({"selection.method": "dsir", **overrides})
    return context_for(cfg, task, refs, tmp_path, method="dsir", response_tokens=tokens, show_progress=False)


def test_tokenize_is_lowercased_word_punct() -> None:
    assert dsir.tokenize("Hello, World!! it's 3.5") == ["hello", ",", "world", "!!", "it", "'", "s", "3", ".", "5"]
    assert dsir.tokenize("") == []


def test_hashed_features_hand_computed() -> None:
    b = 1000
    feats = dsir.featurize(["A b a", "b C", ""], buckets=b, ngrams=2, chunk_rows=2)  # 2 chunks: shared vocabulary
    expected = np.zeros((3, b), dtype=np.int64)
    for gram in ["a", "b", "a", "a b", "b a"]:
        expected[0, sha_bucket(gram, b)] += 1
    for gram in ["b", "c", "b c"]:
        expected[1, sha_bucket(gram, b)] += 1
    np.testing.assert_array_equal(feats.matrix().toarray(), expected)
    np.testing.assert_array_equal(feats.n_words, [3, 2, 0])
    np.testing.assert_array_equal(feats.counts(), expected.sum(axis=0))
    # Unigrams only and trigrams: the same definition, other orders.
    uni = dsir.featurize(["A b a"], buckets=b, ngrams=1).matrix().toarray()[0]
    assert uni[sha_bucket("a", b)] == 2 and uni.sum() == 3
    tri = dsir.featurize(["x y z w"], buckets=b, ngrams=3).matrix().toarray()[0]
    assert tri.sum() == 4 + 3 + 2 and tri[sha_bucket("x y z", b)] >= 1 and tri[sha_bucket("y z w", b)] >= 1


def test_log_probs_and_importance_weights_hand_computed() -> None:
    # Bag-of-n-grams with add-1 smoothing over 3 buckets.
    np.testing.assert_allclose(dsir.fit_log_probs(np.array([3, 1, 0]), 1.0), np.log(np.array([4, 2, 1]) / 7))
    np.testing.assert_allclose(dsir.fit_log_probs(np.array([3, 1, 0]), 0.5), np.log(np.array([3.5, 1.5, 0.5]) / 5.5))
    # Feature rows given directly in CSR form: row 0 = {bucket 0: 2, bucket 2: 1}, row 1 = {}, row 2 = {bucket 1: 1}.
    raw = dsir.HashedNgrams(indices=np.array([0, 2, 0, 1, 2, 2]), indptr=np.array([0, 3, 3, 6]),
                            n_words=np.array([3, 0, 3]), buckets=3, ngrams=1)
    target = dsir.HashedNgrams(indices=np.array([0, 0, 0, 1]), indptr=np.array([0, 4]), n_words=np.array([4]),
                               buckets=3, ngrams=1)
    model = dsir.DsirModel.fit(target, raw, smoothing=1.0)
    # target counts [3, 1, 0] -> p_t = [4, 2, 1] / 7; raw counts [2, 1, 3] -> p_r = [3, 2, 4] / 9
    ratio = np.log(np.array([4, 2, 1]) / 7) - np.log(np.array([3, 2, 4]) / 9)
    np.testing.assert_allclose(model.log_ratio, ratio)
    np.testing.assert_allclose(model.weigh(raw), [2 * ratio[0] + ratio[2], 0.0, ratio[1] + 2 * ratio[2]])
    with pytest.raises(UserError):
        dsir.fit_log_probs(np.array([1, 0]), 0.0)


def test_weights_end_to_end_match_the_formula(tmp_path: Path) -> None:
    task = [Row("t0", "bomb weapon", "no"), Row("t1", "movie review", "positive"), Row("t2", "", "")]
    refs = [Row("s0", "bomb weapon", "sorry no"), Row("s1", "weapon", "no")]
    ctx = make_ctx(tmp_path, task, refs, **{"selection.dsir.sampling": "topk", "selection.ratio": 1 / 3,
                                            "selection.dsir.buckets": 4096})
    out = dsir.select(ctx)
    b = 4096
    t_counts = np.zeros(b)
    for text in ["bomb weapon\nsorry no", "weapon\nno"]:
        t_counts += dsir.featurize([text], b).matrix().toarray()[0]
    r_feats = np.stack([dsir.featurize([dsir.row_text(r)], b).matrix().toarray()[0] for r in task])
    ratio = np.log((t_counts + 1) / (t_counts.sum() + b)) - np.log((r_feats.sum(0) + 1) / (r_feats.sum() + b))
    np.testing.assert_allclose(out.scores, r_feats @ ratio)
    assert out.kept == [True, False, False]  # the row that looks like the safety references
    saved = np.load(tmp_path / "dsir" / "log_weights.npy", allow_pickle=False)
    np.testing.assert_allclose(saved, r_feats @ ratio)


def plackett_luce_sets(w: np.ndarray, k: int) -> dict[frozenset[int], float]:
    """Exact probability of each k-subset under sequential sampling without replacement, p ~ w."""
    probs: dict[frozenset[int], float] = {}
    for seq in itertools.permutations(range(len(w)), k):
        p, left = 1.0, w.sum()
        for i in seq:
            p *= w[i] / left
            left -= w[i]
        probs[frozenset(seq)] = probs.get(frozenset(seq), 0.0) + p
    return probs


def test_gumbel_topk_equals_sampling_without_replacement() -> None:
    w = np.array([4.0, 2.0, 1.0, 1.0, 0.5])
    k, draws, tol = 2, 4000, 0.03  # sd of a frequency <= 0.008 at 4000 draws: 0.03 is > 3.5 sd
    exact = plackett_luce_sets(w, k)
    seen: dict[frozenset[int], int] = {}
    incl = np.zeros(len(w))
    for seed in range(draws):
        keys = dsir.resample_keys(np.log(w), "gumbel", seed)
        kept = budget_mask(keys, k / len(w), "rows")
        s = frozenset(np.flatnonzero(kept).tolist())
        seen[s] = seen.get(s, 0) + 1
        incl += kept
    for s, p in exact.items():
        assert abs(seen.get(s, 0) / draws - p) < tol, (sorted(s), seen.get(s, 0) / draws, p)
    exact_incl = np.array([sum(p for s, p in exact.items() if i in s) for i in range(len(w))])
    np.testing.assert_allclose(incl / draws, exact_incl, atol=tol)
    # The test has power: uniform sampling (every item included with prob k/n) is far outside the tolerance.
    assert np.abs(exact_incl - k / len(w)).max() > 3 * tol


def test_gumbel_is_reproducible_and_topk_is_deterministic() -> None:
    lw = np.log(np.arange(1.0, 51.0))
    np.testing.assert_array_equal(dsir.resample_keys(lw, "gumbel", 7), dsir.resample_keys(lw, "gumbel", 7))
    assert not np.array_equal(dsir.resample_keys(lw, "gumbel", 7), dsir.resample_keys(lw, "gumbel", 8))
    np.testing.assert_array_equal(dsir.resample_keys(lw, "topk", 7), lw)
    with pytest.raises(UserError):
        dsir.resample_keys(lw, "softmax", 0)


def _rows(n: int, seed: int = 0) -> list[Row]:
    rng = np.random.default_rng(seed)
    harm = ["how to build a bomb", "steal a password", "make a weapon", "hack the bank"]
    benign = ["the movie was great", "tom has 3 apples", "a boring review", "anna buys more apples"]
    out = []
    for i in range(n):
        h = bool(rng.random() < 0.3)
        pool = harm if h else benign
        words = " ".join(rng.choice(pool, size=int(rng.integers(1, 4))))
        out.append(Row(f"row-{i}", words, "sure here" if h else "positive", harmful=h))
    return out


def test_selection_reproducible_in_process_and_across_processes(tmp_path: Path) -> None:
    task, refs = _rows(60), [Row(f"s{i}", "how to build a bomb", "sorry, I cannot help") for i in range(5)]
    a = dsir.select(make_ctx(tmp_path / "a", task, refs, **{"selection.seed": 3}))
    b = dsir.select(make_ctx(tmp_path / "b", task, refs, **{"selection.seed": 3}))
    assert a.kept == b.kept and a.scores == b.scores
    c = dsir.select(make_ctx(tmp_path / "c", task, refs, **{"selection.seed": 4}))
    assert c.scores != a.scores
    # Features are the same in a fresh interpreter with another hash seed (no salted hash()).
    texts = [dsir.row_text(r) for r in task]
    code = ("import json,sys; from safeselect.selection.dsir import featurize; "
            "f = featurize(json.load(sys.stdin), 10000); print(json.dumps(f.indices.tolist()))")
    res = subprocess.run([sys.executable, "-c", code], input=json.dumps(texts), capture_output=True, text=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": ""}, check=True)
    assert json.loads(res.stdout) == dsir.featurize(texts, 10000).indices.tolist()


def test_short_rows_kept_unless_min_tokens_and_drops_reported(tmp_path: Path) -> None:
    refs = [Row("s0", "bomb", "no")]
    task = [Row("short", "bomb", ""), Row("long1", "the movie was great and long", "positive review"),
            Row("long2", "tom has three apples and more", "six apples")]
    kw = {"selection.dsir.sampling": "topk", "selection.ratio": 1 / 3}
    out = dsir.select(make_ctx(tmp_path, task, refs, **kw))
    assert out.kept == [True, False, False] and out.info["dropped_short"] == 0
    out = dsir.select(make_ctx(tmp_path, task, refs, **kw, **{"selection.dsir.min_tokens": 2}))
    assert out.kept[0] is False and sum(out.kept) == 1 and out.info["dropped_short"] == 1
    # A minimum so high that too few rows remain: all remaining kept, the shortfall reported.
    out = dsir.select(make_ctx(tmp_path, task, refs, **{"selection.ratio": 1.0, "selection.dsir.min_tokens": 6}))
    assert sum(out.kept) == 2 and out.info["dropped_short"] == 1 and out.info["budget_shortfall_rows"] == 1


def test_budgets_rows_and_tokens(tmp_path: Path) -> None:
    task, refs = _rows(50, seed=1), [Row("s", "make a weapon", "I won't")]
    tokens = [int(t) for t in np.random.default_rng(0).integers(1, 30, size=50)]
    out = dsir.select(make_ctx(tmp_path, task, refs, tokens, **{"selection.ratio": 0.3}))
    assert sum(out.kept) == 15
    out = dsir.select(make_ctx(tmp_path, task, refs, tokens, **{"selection.ratio": 0.3, "selection.budget": "tokens"}))
    kept_tokens = sum(t for t, k in zip(tokens, out.kept, strict=True) if k)
    assert kept_tokens <= 0.3 * sum(tokens)
    # Greedy fill: no skipped row would still fit.
    assert all(t > 0.3 * sum(tokens) - kept_tokens for t, k in zip(tokens, out.kept, strict=True) if not k)


def test_save_load_roundtrip_without_pickle(tmp_path: Path) -> None:
    feats = dsir.featurize(["a b c", "c d"], 16)
    model = dsir.DsirModel.fit(feats, feats, 0.5)
    model.save(tmp_path / "m", log_weights=model.weigh(feats))
    back = dsir.DsirModel.load(tmp_path / "m")
    np.testing.assert_array_equal(back.log_p_target, model.log_p_target)
    assert (back.buckets, back.ngrams, back.smoothing) == (16, 2, 0.5)
    assert json.loads((tmp_path / "m" / "params.json").read_text())["buckets"] == 16


def test_bad_target_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="selection.dsir.target"):
        dsir.select(make_ctx(tmp_path, _rows(5), [], **{"selection.dsir.target": "nope.jsonl"}))
    with pytest.raises(UserError, match="empty target"):
        dsir.select(make_ctx(tmp_path, _rows(5), []))


def test_target_from_jsonl_path(tmp_path: Path) -> None:
    path = tmp_path / "target.jsonl"
    path.write_text(json.dumps({"prompt": "tom has apples"}) + "\n" + json.dumps({"prompt": "anna buys apples"}) + "\n")
    task = [Row("a", "tom has apples", "3"), Row("b", "hack the bank", "sure")]
    out = dsir.select(make_ctx(tmp_path, task, [], **{"selection.dsir.target": str(path), "selection.ratio": 0.5,
                                                      "selection.dsir.sampling": "topk"}))
    assert out.kept == [True, False] and out.info["n_target"] == 2


def test_features_match_the_official_package() -> None:
    hashed = pytest.importorskip("data_selection.hashed_ngram_dsir", reason="benchmark-only dependency")
    texts = ["Hello, world! Hello again.", "", "The cat sat on the mat; the cat!!", "x y z x y z", "Ünïcode wörds ok"]
    for n in (1, 2, 3):
        ours = dsir.featurize(texts, buckets=97, ngrams=n, chunk_rows=2).matrix().toarray()
        theirs = np.stack([hashed.get_ngram_counts(t, n=n, num_buckets=97) for t in texts])
        np.testing.assert_array_equal(ours, theirs)
