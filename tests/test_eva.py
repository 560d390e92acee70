"""eva's pure parts, exactly: informativeness and its guards, samplers, pairs, mix, cleaning, lineage, rewards."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from safeselect.errors import UserError
from safeselect.selfplay.evolve import (
    CLEAN_COUNTS,
    MUTATIONS,
    clean_prompt,
    evol_request,
    evolve,
    reject_reason,
    self_instruct_request,
)
from safeselect.selfplay.informativeness import informativeness, normalised_weights, stats
from safeselect.selfplay.pairs import build_pairs, mix_counts, mix_pairs
from safeselect.selfplay.pool import PromptEntry, PromptPool
from safeselect.selfplay.sampler import inclusion_probabilities, n_to_sample, sample

NAN = np.nan
R = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [5.0, NAN, 1.0], [NAN, NAN, NAN]])


# ----------------------------------------------------------------------------- informativeness


@pytest.mark.parametrize("metric, expected", [
    ("gap", [2.0, 0.0, 4.0, NAN]),
    ("maxmean", [1.0, 0.0, 2.0, NAN]),
    ("variance", [2.0 / 3.0, 0.0, 4.0, NAN]),
    ("mean", [2.0, 0.0, 3.0, NAN]),
    ("gap_inverse", [-2.0, 0.0, -4.0, NAN]),
    ("mean_inverse", [-2.0, 0.0, -3.0, NAN]),
])
def test_informativeness_exact(metric, expected):
    np.testing.assert_allclose(informativeness(R, metric), expected, rtol=0, atol=1e-12)


def test_informativeness_rejects_unknown_metric_and_bad_shape():
    with pytest.raises(UserError, match="did you mean 'gap'"):
        informativeness(R, "gapp")
    with pytest.raises(ValueError):
        informativeness(np.zeros(3), "gap")


def test_normalised_weights_and_guards():
    np.testing.assert_allclose(normalised_weights(np.array([2.0, 0.0, 4.0, NAN])), [0.5, 0.0, 1.0, 0.0])
    # all equal: min-max would divide by zero -> uniform over the scored prompts
    np.testing.assert_array_equal(normalised_weights(np.array([3.0, 3.0, NAN])), [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(normalised_weights(np.array([NAN, NAN])), [0.0, 0.0])
    np.testing.assert_array_equal(normalised_weights(np.array([7.0])), [1.0])
    # an inverse metric weighs 1 - normalised(x): the official code's "sample where the solver is weak"
    g = informativeness(R[:3], "gap")
    np.testing.assert_allclose(normalised_weights(informativeness(R[:3], "gap_inverse")), 1 - normalised_weights(g))


def test_stats_counts():
    s = stats(R, informativeness(R, "gap"))
    assert s["prompts"] == 4 and s["responses_per_prompt"] == 3
    assert s["rewards_scored"] == 8 and s["rewards_missing"] == 4
    assert s["prompts_unscored"] == 1 and s["prompts_all_equal"] == 1
    assert s["informativeness_max"] == 4.0 and s["informativeness_min"] == 0.0


# ----------------------------------------------------------------------------- samplers


def test_n_to_sample():
    assert n_to_sample(64, 0.25) == 16
    assert n_to_sample(3, 0.25) == 1  # at least one when the ratio is positive
    assert n_to_sample(4, 1.0) == 4
    assert n_to_sample(0, 0.5) == 0 and n_to_sample(10, 0.0) == 0
    assert n_to_sample(10, 0.3) == 3


def test_inclusion_probabilities_by_hand():
    # weights 1, 1, 2; two successive draws: P(c) = 1/2 + 2 * (1/4 * 2/3) = 5/6; P(a) = P(b) = 7/12
    np.testing.assert_allclose(inclusion_probabilities(np.array([1.0, 1.0, 2.0]), 1), [0.25, 0.25, 0.5])
    np.testing.assert_allclose(inclusion_probabilities(np.array([1.0, 1.0, 2.0]), 2), [7 / 12, 7 / 12, 5 / 6])


def _frequencies(values: np.ndarray, n: int, method: str, draws: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    counts = np.zeros(len(values))
    for _ in range(draws):
        idx, _ = sample(values, n, method, rng)
        assert len(set(idx.tolist())) == n  # without replacement
        counts[idx] += 1
    return counts / draws


def test_weighted_sampler_matches_exact_inclusion_probabilities():
    values = np.array([0.0, 1.0, 2.0, 3.0, 6.0])  # normalised weights 0, 1/6, 1/3, 1/2, 1
    exact = inclusion_probabilities(normalised_weights(values), 2)
    freq = _frequencies(values, 2, "weighted", draws=20000, seed=7)
    assert freq[0] == 0.0  # the least informative prompt has weight 0 and is never drawn
    assert np.max(np.abs(freq - exact)) < 0.015, (freq, exact)


def test_weighted_sampler_all_equal_is_uniform():
    freq = _frequencies(np.full(4, 5.0), 2, "weighted", draws=20000, seed=3)
    assert np.max(np.abs(freq - 0.5)) < 0.015


def test_weighted_sampler_fewer_nonzero_weights_than_samples():
    rng = np.random.default_rng(0)
    idx, info = sample(np.array([1.0, 0.0, 0.0, 0.0]), 3, "weighted", rng)
    assert 0 in idx.tolist() and len(set(idx.tolist())) == 3
    assert info["fallback_uniform"] == 2
    idx, info = sample(np.array([NAN, 2.0, NAN]), 2, "weighted", rng)  # one scored prompt (weight 1 by the guard)
    assert 1 in idx.tolist() and info["fallback_uniform"] == 1


def test_greedy_and_uniform_samplers():
    rng = np.random.default_rng(0)
    idx, _ = sample(np.array([0.1, NAN, 3.0, 2.0]), 2, "greedy", rng)
    assert idx.tolist() == [2, 3]
    idx, _ = sample(np.array([0.1, NAN, 3.0, 2.0]), 4, "greedy", rng)
    assert idx.tolist()[-1] == 1  # unscored last
    freq = _frequencies(np.array([0.0, 0.0, 9.0, 1.0]), 1, "uniform", draws=8000, seed=1)
    assert np.max(np.abs(freq - 0.25)) < 0.02
    with pytest.raises(UserError):
        sample(np.ones(3), 1, "weighted-ish", rng)


# ----------------------------------------------------------------------------- pairs and mix


def test_build_pairs_best_vs_worst_and_drops_ties():
    rewards = np.array([[0.2, 0.9, 0.1], [0.5, 0.5, 0.5], [1.0, NAN, NAN], [0.0, 1.0, 1.0], [0.3, 0.7, 0.1]])
    responses = [["a", "b", "c"], ["d", "e", "f"], ["g", "h", "i"], ["j", "k", "k"], ["same", "same", "same"]]
    pairs, counts = build_pairs(["p0", "p1", "p2", "p3", "p4"], ["q0", "q1", "q2", "q3", "q4"], responses, rewards)
    assert [(p["prompt_id"], p["chosen"], p["rejected"]) for p in pairs] == [("p0", "b", "c"), ("p3", "k", "j")]
    assert pairs[0]["margin"] == pytest.approx(0.8)
    assert counts == {"prompts": 5, "pairs": 2, "ties": 1, "unscored": 1, "same_text": 1}


def test_mix_counts():
    assert mix_counts(10, 20, 0.2) == (5, 20)  # 5 / 25 = 0.2
    assert mix_counts(2, 20, 0.2) == (2, 8)  # too few originals: keep the ratio with fewer evolved pairs
    assert mix_counts(10, 20, 0.0) == (0, 20)
    assert mix_counts(10, 20, 1.0) == (10, 0)
    assert mix_counts(10, 0, 0.2) == (0, 0)


def test_mix_pairs_ratio_and_fallback():
    orig = [{"prompt_id": f"o{i}"} for i in range(10)]
    evo = [{"prompt_id": f"e{i}"} for i in range(20)]
    out, info = mix_pairs(orig, evo, 0.2, np.random.default_rng(0))
    n_o = sum(p["source"] == "original" for p in out)
    assert (n_o, len(out)) == (5, 25) and n_o / len(out) == 0.2
    assert len({p["prompt_id"] for p in out}) == 25
    out, info = mix_pairs(orig, [], 0.2, np.random.default_rng(0))
    assert info["fallback_original"] and len(out) == 10


# ----------------------------------------------------------------------------- evolution, cleaning, lineage


def test_clean_prompt():
    assert clean_prompt("#Rewritten Prompt#:\nWrite a poem about cats.") == ("Write a poem about cats.", True)
    assert clean_prompt("**New request:** Explain tides to a child.") == ("Explain tides to a child.", True)
    assert clean_prompt('Here is the rewritten request: "How do plants grow?"') == ("How do plants grow?", True)
    assert clean_prompt("<|im_start|>assistant\nList three fruits.<|im_end|>") == ("List three fruits.", True)
    assert clean_prompt("1. List three fruits.\n\nAnswer: apples") == ("List three fruits.", True)
    assert clean_prompt("Question the data you are given.") == ("Question the data you are given.", False)
    assert clean_prompt("  plain  text ") == ("plain text", False)


def test_reject_reason():
    pool = PromptPool()
    pool.add(PromptEntry("h0", "Existing prompt here"))
    seen = {"already in this batch"}
    assert reject_reason("", pool, seen, 5, 30) == "empty"
    assert reject_reason("tiny", pool, seen, 5, 30) == "too_short"
    assert reject_reason("x" * 31, pool, seen, 5, 30) == "too_long"
    assert reject_reason("existing   PROMPT here", pool, seen, 5, 30) == "duplicate"
    assert reject_reason("Already in this batch", pool, seen, 5, 30) == "duplicate"
    assert reject_reason("A fine new prompt", pool, seen, 5, 30) is None


def test_requests_name_the_prompt_and_mutation():
    assert "Tell me a joke" in evol_request("Tell me a joke", "deepen")
    assert len({evol_request("x", m) for m in MUTATIONS}) == len(MUTATIONS)
    with pytest.raises(ValueError):
        evol_request("x", "sideways")
    assert "1. one\n2. two" in self_instruct_request(["one", "two"])


def _pool(n: int = 2) -> tuple[PromptPool, list[PromptEntry]]:
    pool = PromptPool()
    ents = [PromptEntry(f"h{i}", f"Human prompt number {i}", harmful=(i == 0), answer=str(i), task="t")
            for i in range(n)]
    for e in ents:
        pool.add(e)
    return pool, ents


def test_evol_instruct_chain_lineage_and_counts():
    pool, ents = _pool(2)
    calls = []

    def creator(requests: list[str]) -> list[str]:
        calls.append(len(requests))
        step = len(calls)
        # prompt 0 gets a fresh rewrite each step; prompt 1's step 2 is empty (cleaned away), step 3 duplicates
        out = [f"New prompt: version {step} of A"]
        out.append({1: "B one is here", 2: "   ", 3: "Human prompt number 0"}[step])
        return out

    new, counts = evolve(pool, ents, creator, method="evol-instruct", evolutions=3, iteration=1,
                         rng=np.random.default_rng(0), min_chars=5, max_chars=100)
    assert calls == [2, 2, 2]
    assert counts == {"generated": 6, "markers_stripped": 3, "empty": 1, "too_short": 0, "too_long": 0,
                      "duplicate": 1, "kept": 4}
    assert set(counts) == set(CLEAN_COUNTS)
    chain_a = [e for e in new if e.text.endswith("of A")]
    assert [e.depth for e in chain_a] == [1, 2, 3]
    assert chain_a[0].parent == "h0" and chain_a[1].parent == chain_a[0].prompt_id
    assert chain_a[2].parent == chain_a[1].prompt_id
    assert all(e.harmful is True and e.answer is None and e.origin == "evolved" for e in chain_a)
    assert all(e.mutation in MUTATIONS for e in new)
    b = [e for e in new if e.text == "B one is here"]
    assert len(b) == 1 and b[0].parent == "h1" and b[0].harmful is False
    assert len(pool) == 2 + 4


def test_self_instruct_fresh_prompts():
    pool, ents = _pool(3)
    seen_requests: list[str] = []

    def creator(requests: list[str]) -> list[str]:
        seen_requests.extend(requests)
        return [f"A fresh request {i}" for i in range(len(requests))]

    new, counts = evolve(pool, ents[:1], creator, method="self-instruct", evolutions=2, iteration=2,
                         rng=np.random.default_rng(0), min_chars=5, max_chars=100, context=ents, n_examples=2)
    assert len(seen_requests) == 2 and all("Human prompt number 0" in r for r in seen_requests)
    assert [(e.parent, e.depth, e.mutation, e.iteration) for e in new] == [("h0", 1, "self-instruct", 2)] * 2
    assert counts["kept"] == 2
    with pytest.raises(UserError):
        evolve(pool, ents, creator, method="wizard", evolutions=1, iteration=1, rng=np.random.default_rng(0),
               min_chars=1, max_chars=10)


# ----------------------------------------------------------------------------- rewards


def test_rule_reward():
    from safeselect.selfplay.rewards import RuleReward

    ents = [PromptEntry("a", "How do I make a bomb?", harmful=True),
            PromptEntry("b", "How do I make a bomb?", harmful=True),
            PromptEntry("c", "2 + 3?", harmful=False, answer="5", task="arithmetic"),
            PromptEntry("d", "2 + 3?", harmful=False, answer="5", task="arithmetic"),
            PromptEntry("e", "How do I kill a Python process?", harmful=False),
            PromptEntry("f", "How do I kill a Python process?", harmful=False),
            PromptEntry("g", "no ground truth")]
    resp = ["I'm sorry, I can't help with that.", "Step 1: get the materials.", "The answer is 5.",
            "The answer is 6.", "Run kill -9 with the process id.", "I'm sorry, I cannot help with that.", "ok"]
    out = RuleReward()(ents, resp)
    np.testing.assert_array_equal(out[:6], [1, 0, 1, 0, 1, 0])
    assert np.isnan(out[6])


def test_parse_rating():
    from safeselect.selfplay.rewards import parse_score as parse_rating

    assert parse_rating("Good answer.\nScore: 10") == 1.0
    assert parse_rating("Score: 3/10 ... actually Score: 1") == 0.0
    assert parse_rating("**Score:** 7") == pytest.approx(6 / 9)
    assert parse_rating("no number") is None and parse_rating(None) is None


class _Handler(BaseHTTPRequestHandler):
    hits: list[dict] = []
    fail_first = True

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).hits.append({"body": body, "auth": self.headers.get("Authorization")})
        if type(self).fail_first:
            type(self).fail_first = False
            self.send_response(503)
            self.end_headers()
            return
        msg = body["messages"][0]["content"]
        data = json.dumps({"choices": [{"message": {"content": f"echo {msg} Score: 8"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def test_llm_reward_over_http_retries_and_reads_key_from_env(monkeypatch):
    from safeselect.config import loading
    from safeselect.selfplay.rewards import LlmReward

    server = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("EVA_TEST_KEY", "sk-test")
        cfg = loading.build({"judges.llm.base_url": f"http://127.0.0.1:{server.server_port}/v1",
                            "judges.llm.api_key_env": "EVA_TEST_KEY", "judges.llm.backoff_s": 0.01,
                            "judges.llm.concurrency": 1, "judges.llm.model": "m"})
        out = LlmReward(cfg)([PromptEntry("a", "hi")], ["hello"])
        assert out.tolist() == [pytest.approx(7 / 9)]
        assert len(_Handler.hits) == 2  # one 503, one retry
        assert _Handler.hits[-1]["auth"] == "Bearer sk-test" and _Handler.hits[-1]["body"]["model"] == "m"
    finally:
        server.shutdown()


def test_llm_reward_needs_base_url():
    from safeselect.selfplay.rewards import LlmReward

    with pytest.raises(UserError, match="base_url"):
        LlmReward(None)


def test_independent_creator_over_http():
    from safeselect.config import loading
    from safeselect.selfplay.run import independent_creator

    _Handler.fail_first = False
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = loading.build({"judges.llm.base_url": f"http://127.0.0.1:{server.server_port}/v1",
                            "eva.creator": "independent", "eva.creator_model": "llm", "judges.llm.model": "m",
                            "eva.creator_temperature": 0.9, "eva.creator_max_new_tokens": 77})
        create, desc = independent_creator(cfg, "cpu", 0, False)
        assert desc == "llm:m"
        assert create(["rewrite this"]) == ["echo rewrite this Score: 8"]
        body = _Handler.hits[-1]["body"]
        assert body["temperature"] == 0.9 and body["max_tokens"] == 77
    finally:
        server.shutdown()
    with pytest.raises(UserError, match="creator_model"):
        independent_creator(loading.build({"eva.creator": "independent"}), "cpu", 0, False)
