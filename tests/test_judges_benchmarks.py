"""AlpacaEval / Arena-Hard / MT-Bench in their published file formats, judged by the llm judge over local HTTP."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_llm_judge import JudgeServer, default_reply, llm_cfg

from safeselect.errors import UserError
from safeselect.evaluation import benchmarks as B
from safeselect.judges.llm import LlmJudge


def reply(user: str) -> str:
    """default_reply, with MT-Bench grades one lower on the second turn so the turns can be told apart."""
    out = default_reply(user)
    if out.startswith("Rating:") and "(the last one)" in user:
        return f"Rating: {int(out.split(':')[1]) - 1}"
    return out


class FakeModel:
    """Answers from a table; records what it was asked (strings, or chat message lists for later turns)."""

    def __init__(self, table):
        self.table = table
        self.asked = []

    def __call__(self, model, tok, prompts, **kw):
        self.asked.append(prompts)
        out = []
        for p in prompts:
            key = p if isinstance(p, str) else p[-1]["content"]
            out.append(self.table[key])
        return out


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_length_controlled_win_rate_exact_when_lengths_equal():
    out = B.length_controlled_win_rate([1.0, 1.0, 0.0, 0.5], [5, 7, 9, 3], [5, 7, 9, 3], n_boot=0)
    assert out["value"] == pytest.approx(100 * 2.5 / 4, abs=1e-4)  # intercept-only fit = plain win rate
    assert out["n"] == 4 and out["ci"] is None
    assert B.length_controlled_win_rate([None], [1], [2])["value"] is None


def test_length_controlled_removes_a_pure_length_preference():
    rng = np.random.default_rng(0)
    n = 400
    len_b = rng.integers(50, 150, n)
    len_a = len_b + rng.integers(-40, 80, n)  # ours mostly longer
    d = np.tanh((len_a - len_b) / (len_a - len_b).std())  # AlpacaEval 2.0's length feature
    # A judge that only likes length, with no preference at equal length.
    y = (rng.random(n) < 1 / (1 + np.exp(-3.0 * d))).astype(float)
    raw = 100 * y.mean()
    lc = B.length_controlled_win_rate(list(y), list(len_a), list(len_b), n_boot=30, seed=0)
    assert raw > 60
    assert abs(lc["value"] - 50) < 8 and 2 < lc["slope"] < 4
    assert lc["ci"][0] < lc["value"] < lc["ci"][1]


def test_alpacaeval_arenahard_mtbench_over_http(tmp_path):
    alpaca = tmp_path / "alpaca_eval.json"
    alpaca.write_text(json.dumps([
        {"instruction": "Name a fruit.", "output": "Apple.", "generator": "gpt4_turbo", "dataset": "helpful_base"},
        {"instruction": "Say hi.", "output": "Hello there, how are you doing today?", "generator": "g", "dataset": "d"},
        {"instruction": "Count to 3.", "output": "1 2 3", "generator": "g", "dataset": "d"},
    ]))
    # Arena-Hard v0.1: questions and the baseline's answers; q3 has no baseline answer and is skipped.
    questions = _write_jsonl(tmp_path / "question.jsonl", [
        {"question_id": "q1", "category": "arena-hard-v0.1", "cluster": "c", "turns": [{"content": "Explain TCP."}]},
        {"question_id": "q2", "category": "arena-hard-v0.1", "cluster": "c", "turns": [{"content": "Sort a list."}]},
        {"question_id": "q3", "category": "arena-hard-v0.1", "cluster": "c", "turns": [{"content": "Unused."}]},
    ])
    baseline = _write_jsonl(tmp_path / "gpt-4-0314.jsonl", [
        {"question_id": "q1", "answer_id": "a", "model_id": "gpt-4-0314", "tstamp": 0,
         "choices": [{"index": 0, "turns": [{"content": "TCP is a transport protocol.", "token_len": 7}]}]},
        {"question_id": "q2", "answer_id": "b", "model_id": "gpt-4-0314", "tstamp": 0,
         "choices": [{"index": 0, "turns": [{"content": "Use sorted(xs) in Python, it returns a list.",
                                             "token_len": 9}]}]},
    ])
    mt_q = _write_jsonl(tmp_path / "mt_question.jsonl", [
        {"question_id": 111, "category": "math", "turns": ["What is 2+2?", "And times 3?"]},
        {"question_id": 81, "category": "writing", "turns": ["Write a haiku.", "Now make it sad."]},
    ])
    mt_ref = _write_jsonl(tmp_path / "gpt-4.jsonl", [
        {"question_id": 111, "answer_id": "r", "model_id": "gpt-4", "tstamp": 0,
         "choices": [{"index": 0, "turns": ["4", "12"]}]},
    ])
    gen = FakeModel({
        "Name a fruit.": "A banana is a fruit.",          # longer than the reference: win
        "Say hi.": "Hi.",                                  # shorter: loss
        "Count to 3.": "1, 2, 3 and done.",                # longer: win
        "Explain TCP.": "TCP gives reliable ordered byte streams over IP.",  # longer: win
        "Sort a list.": "sorted()",                        # shorter: loss
        "What is 2+2?": "4", "And times 3?": "12", "Write a haiku.": "Leaves fall", "Now make it sad.": "Alone",
    })
    with JudgeServer(reply=reply) as s:
        cfg = llm_cfg(s.url, tmp_path / "cache", f"eval.benchmarks.alpacaeval={alpaca}",
                      f"eval.benchmarks.arenahard_questions={questions}", f"eval.benchmarks.arenahard_baseline={baseline}",
                      f"eval.benchmarks.mtbench_questions={mt_q}", f"eval.benchmarks.mtbench_reference={mt_ref}",
                      "eval.benchmarks.max_new_tokens=32")
        judge = LlmJudge(cfg, show_progress=False)
        flat = B.run_benchmarks(None, None, cfg, out_dir=tmp_path / "out", show_progress=False, generate_fn=gen,
                                judge=judge)
        pair_requests = [r for r in s.requests if "Verdict: tie" in r["body"]["messages"][-1]["content"]]
    assert flat["win_rate.alpacaeval.llm"] == pytest.approx(100 * 2 / 3)
    assert (flat["win_rate.alpacaeval.llm_n"], flat["win_rate.alpacaeval.llm_invalid"]) == (3, 0)
    assert 0 <= flat["win_rate.alpacaeval_lc.llm"] <= 100 and flat["win_rate.alpacaeval_lc.llm_n"] == 3
    assert flat["win_rate.arenahard.llm"] == 50.0 and flat["win_rate.arenahard.llm_n"] == 2
    assert len(pair_requests) == 2 * (3 + 2)  # both orders for every pair
    assert all("more helpful" in r["body"]["messages"][-1]["content"] for r in pair_requests)
    # MT-Bench: math uses references (8, then 7), writing does not (6, then 5).
    assert flat["mtbench.turn1"] == 7.0 and flat["mtbench.turn2"] == 6.0 and flat["mtbench.score"] == 6.5
    assert flat["mtbench.score_n"] == 4 and flat["mtbench.missing_reference"] == 0
    # Turn 2 was generated inside the conversation, with the model's own first answer.
    turn2 = gen.asked[-1]
    assert turn2[0] == [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"},
                        {"role": "user", "content": "And times 3?"}]
    recs = [json.loads(x) for x in (tmp_path / "out" / "benchmarks.jsonl").read_text().splitlines()]
    assert [r["benchmark"] for r in recs].count("mtbench") == 2
    assert next(r for r in recs if r["benchmark"] == "mtbench" and r["id"] == "111")["grades"] == [8, 7]


def test_arenahard_v2_format_and_bad_files(tmp_path):
    q = _write_jsonl(tmp_path / "q.jsonl", [{"uid": "u1", "category": "hard_prompt", "subcategory": "x",
                                             "prompt": "Prove it."}])
    a = _write_jsonl(tmp_path / "a.jsonl", [{"uid": "u1", "ans_id": "z", "model": "o3-mini", "messages": [
        {"role": "user", "content": "Prove it."}, {"role": "assistant", "content": {"answer": "Proof: trivial."}}]}])
    assert B.load_arenahard(q, a) == [{"id": "u1", "prompt": "Prove it.", "reference": "Proof: trivial."}]
    with pytest.raises(UserError, match="no baseline answer"):
        B.load_arenahard(q, _write_jsonl(tmp_path / "other.jsonl", [{"uid": "u9", "messages": [
            {"role": "assistant", "content": "x"}]}]))
    with pytest.raises(UserError, match=r"bad\.jsonl:1"):
        B.load_arenahard(q, _write_jsonl(tmp_path / "bad.jsonl", [{"foo": 1}]))
    bad = tmp_path / "alpaca.json"
    bad.write_text(json.dumps([{"instruction": "x"}]))
    with pytest.raises(UserError, match="'output'"):
        B.load_alpacaeval(bad)
    with pytest.raises(UserError, match="MT-Bench question"):
        B.load_mtbench(_write_jsonl(tmp_path / "m.jsonl", [{"question_id": 1}]))
    with pytest.raises(UserError, match="file not found"):
        B.load_alpacaeval(tmp_path / "missing.json")
