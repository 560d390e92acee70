"""Alignment benchmarks from the files users bring, scored through the ``llm`` judge (METHODS.md section 6).

- AlpacaEval: a JSON list (or JSONL) of ``{instruction, output, ...}`` where
  ``output`` is the reference model's answer. Pairwise preference of our
  answer against the reference (helpfulness, both orders; disagreement = tie)
  -> ``win_rate.alpacaeval.<judge>``. Length-controlled variant
  ``win_rate.alpacaeval_lc.<judge>``: a logistic regression of the preference
  on tanh of the length difference in characters over its standard deviation
  on the set (AlpacaEval 2.0's length feature), reported as the win rate at
  zero length difference. AlpacaEval 2.0's GLM also has an instruction
  difficulty term fitted across its leaderboard's models, which one model's
  annotations cannot estimate: it is left out, so this is the length control alone.
- Arena-Hard: questions JSONL (v0.1 ``{question_id, turns: [{content}]}`` or
  v2 ``{uid, prompt}``) and the baseline model's answers JSONL (v0.1
  ``{question_id, choices: [{turns: [{content}]}]}`` or v2 ``{uid, messages}``).
  Pairwise against the baseline, both orders -> ``win_rate.arenahard.<judge>``.
  (Arena-Hard's own 5-level verdicts and Bradley-Terry fit are replaced by our
  3-level pairwise verdict and the plain win rate.)
- MT-Bench: ``question.jsonl`` (``{question_id, category, turns: [q1, q2]}``)
  and optional reference answers (``{question_id, choices: [{turns: [r1, r2]}]}``,
  or a ``reference`` list inside the question). Both turns are generated in one
  conversation; each answer is graded 1-10 on its own, with the reference
  answers for the maths, reasoning and coding questions (the categories
  FastChat gives references for) -> ``mtbench.turn1``, ``mtbench.turn2`` and
  ``mtbench.score`` (mean over all graded turns).

Every figure has ``_ci`` (95% bootstrap), ``_n`` and ``_invalid`` (judge
replies that stayed malformed) siblings.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from safeselect.core import stats as M
from safeselect.core.io import read_jsonl, write_jsonl
from safeselect.errors import UserError
from safeselect.evaluation.generate import make_generate
from safeselect.judges.base import make_judge

NEED_REFERENCE = {"math", "reasoning", "coding"}


# ----------------------------------------------------------------------------- loaders


def _read_json_or_jsonl(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        raise UserError(f"file not found: {p}")
    if p.suffix in (".jsonl", ".gz"):
        return read_jsonl(p)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{p}:{e.lineno}: malformed JSON ({e.msg})") from None
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise UserError(f"{p}: expected a JSON list of objects")
    return data


def load_alpacaeval(path: str | Path) -> list[dict[str, Any]]:
    """[{id, prompt, reference}] from an AlpacaEval file (``instruction`` + reference ``output``)."""
    out = []
    for i, item in enumerate(_read_json_or_jsonl(path)):
        if "instruction" not in item or "output" not in item:
            raise UserError(f"{path}: item {i} needs 'instruction' and 'output' (the reference answer)")
        out.append({"id": str(i), "prompt": str(item["instruction"]), "reference": str(item["output"])})
    return out


def _arena_id(item: dict[str, Any]) -> str | None:
    v = item.get("question_id", item.get("uid"))
    return None if v is None else str(v)


def _arena_question(item: dict[str, Any]) -> str | None:
    if "prompt" in item:
        return str(item["prompt"])
    turns = item.get("turns")
    if turns:
        t = turns[0]
        return str(t["content"] if isinstance(t, dict) else t)
    return None


def _arena_answer(item: dict[str, Any]) -> str | None:
    if item.get("choices"):  # v0.1: choices[0].turns[0].content
        t = item["choices"][0]["turns"][0]
        return str(t["content"] if isinstance(t, dict) else t)
    for m in reversed(item.get("messages") or []):  # v2: the last assistant message
        if m.get("role") == "assistant":
            c = m.get("content")
            return str(c.get("answer", "") if isinstance(c, dict) else c)
    return None


def load_arenahard(questions: str | Path, baseline: str | Path) -> list[dict[str, Any]]:
    """[{id, prompt, reference}]: each question with the baseline model's answer (questions without one are skipped
    and counted in the error if none remain)."""
    answers = {}
    for i, item in enumerate(read_jsonl(baseline), 1):
        qid, ans = _arena_id(item), _arena_answer(item)
        if qid is None or ans is None:
            raise UserError(f"{baseline}:{i}: not an Arena-Hard answer (needs question_id/uid and choices/messages)")
        answers[qid] = ans
    out = []
    for i, item in enumerate(read_jsonl(questions), 1):
        qid, q = _arena_id(item), _arena_question(item)
        if qid is None or q is None:
            raise UserError(f"{questions}:{i}: not an Arena-Hard question (needs question_id/uid and turns/prompt)")
        if qid in answers:
            out.append({"id": qid, "prompt": q, "reference": answers[qid]})
    if not out:
        raise UserError(f"{baseline}: no baseline answer matches a question of {questions}")
    return out


def load_mtbench(questions: str | Path, reference: str | Path | None = None) -> list[dict[str, Any]]:
    """[{id, category, turns, reference (list or None)}] from FastChat's MT-Bench files."""
    refs: dict[str, list[str]] = {}
    if reference:
        for i, item in enumerate(read_jsonl(reference), 1):
            try:
                refs[str(item["question_id"])] = [str(t) for t in item["choices"][0]["turns"]]
            except (KeyError, IndexError, TypeError):
                raise UserError(f"{reference}:{i}: not an MT-Bench reference answer "
                                "(needs question_id and choices[0].turns)") from None
    out = []
    for i, item in enumerate(read_jsonl(questions), 1):
        turns = item.get("turns")
        if "question_id" not in item or not isinstance(turns, list) or not turns:
            raise UserError(f"{questions}:{i}: not an MT-Bench question (needs question_id and turns)")
        qid = str(item["question_id"])
        ref = refs.get(qid) or item.get("reference")
        out.append({"id": qid, "category": item.get("category", ""), "turns": [str(t) for t in turns],
                    "reference": [str(r) for r in ref] if ref else None})
    return out


# ----------------------------------------------------------------------------- length control


def _fit_logistic(y: np.ndarray, d: np.ndarray, l2: float = 1e-3) -> tuple[float, float]:
    """(b0, b1) minimising mean soft-label cross-entropy of sigmoid(b0 + b1 d) + l2/2 b1^2; |b| <= 20."""
    from scipy.optimize import minimize

    def loss(b: np.ndarray) -> tuple[float, np.ndarray]:
        z = b[0] + b[1] * d
        # log(1 + e^z) computed stably; soft labels y in [0, 1]
        lse = np.logaddexp(0.0, z)
        val = float(np.mean(lse - y * z)) + 0.5 * l2 * b[1] ** 2
        p = 1.0 / (1.0 + np.exp(-z))
        g = np.array([np.mean(p - y), np.mean((p - y) * d) + l2 * b[1]])
        return val, g

    res = minimize(loss, np.zeros(2), jac=True, method="L-BFGS-B", bounds=[(-20, 20), (-20, 20)])
    return float(res.x[0]), float(res.x[1])


def length_controlled_win_rate(outcomes: list[float | None], len_a: list[int], len_b: list[int],
                               n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Win rate 0..100 of A at zero length difference: 100 * sigmoid(b0) of a logistic fit y ~ b0 + b1 * d.

    ``d`` = tanh((len_a - len_b) / std(len_a - len_b)) (0 when all differences are equal: the tanh
    bounds the pull of a few very long answers, as in AlpacaEval 2.0); ``y`` = outcome
    (1, 0.5, 0). None outcomes are excluded and counted in ``invalid``. The interval refits on bootstrap
    resamples of the items.
    """
    keep = [i for i, o in enumerate(outcomes) if o is not None]
    invalid = len(outcomes) - len(keep)
    if not keep:
        return {"value": None, "n": 0, "ci": None, "invalid": invalid, "slope": None}
    y = np.asarray([float(outcomes[i]) for i in keep])
    diff = np.asarray([len_a[i] - len_b[i] for i in keep], dtype=float)
    sd = diff.std()
    d = np.tanh(diff / sd) if sd > 0 else np.zeros_like(diff)
    b0, b1 = _fit_logistic(y, d)
    ci = None
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        vals = []
        for _ in range(n_boot):
            idx = rng.integers(0, len(y), size=len(y))
            vals.append(100.0 / (1.0 + np.exp(-_fit_logistic(y[idx], d[idx])[0])))
        lo, hi = np.percentile(vals, [2.5, 97.5])
        ci = [float(lo), float(hi)]
    return {"value": 100.0 / (1.0 + np.exp(-b0)), "n": len(keep), "ci": ci, "invalid": invalid, "slope": b1}


# ----------------------------------------------------------------------------- runs


def _generate(generate_fn: Callable[..., list[str]], model: Any, tok: Any, prompts: list[Any], cfg: Any,
              desc: str, show_progress: bool) -> list[str]:
    out = generate_fn(model, tok, prompts, max_new_tokens=cfg.eval.benchmarks.max_new_tokens,
                      batch_size=cfg.eval.batch_size, desc=desc, seed=cfg.seed, show_progress=show_progress)
    if len(out) != len(prompts):
        raise RuntimeError(f"generator returned {len(out)} responses for {len(prompts)} prompts")
    return out


def _limit(items: list[dict[str, Any]], cfg: Any) -> list[dict[str, Any]]:
    n = cfg.eval.benchmarks.limit
    return items[:n] if n > 0 else items


def pairwise_benchmark(name: str, items: list[dict[str, Any]], responses: list[str], judge: Any, cfg: Any,
                       length_control: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Our responses against the items' reference answers (helpfulness, both orders)."""
    prompts = [it["prompt"] for it in items]
    refs = [it["reference"] for it in items]
    outcomes = judge.compare(prompts, responses, refs, rows=None, criterion="helpfulness")
    flat: dict[str, Any] = {}
    nb, seed = cfg.eval.bootstrap, cfg.seed
    M.add_figure(flat, f"win_rate.{name}.{judge.name}", M.win_rate(outcomes, nb, seed), invalid=True)
    if length_control:
        lc = length_controlled_win_rate(outcomes, [len(r) for r in responses], [len(r) for r in refs], nb, seed)
        M.add_figure(flat, f"win_rate.{name}_lc.{judge.name}", lc, invalid=True)
    records = [{"benchmark": name, "id": it["id"], "prompt": it["prompt"], "response": r, "reference": it["reference"],
                "outcome": o} for it, r, o in zip(items, responses, outcomes, strict=True)]
    return flat, records


def mtbench(items: list[dict[str, Any]], answers: list[list[str]], judge: Any, cfg: Any
            ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Grade every turn's answer 1-10 (turn k sees the conversation up to k, and references when needed)."""
    convs, where = [], []
    for qi, (it, ans) in enumerate(zip(items, answers, strict=True)):
        ref = it["reference"] if it["category"] in NEED_REFERENCE else None
        for k in range(len(ans)):
            convs.append((it["turns"][:k + 1], ans[:k + 1], ref[:k + 1] if ref else None))
            where.append((qi, k))
    grades = judge.grade(convs)
    per_q: list[list[int | None]] = [[None] * len(a) for a in answers]
    for (qi, k), g in zip(where, grades, strict=True):
        per_q[qi][k] = g
    nb, seed = cfg.eval.bootstrap, cfg.seed
    flat: dict[str, Any] = {}
    M.add_figure(flat, "mtbench.score", M.mean_ci(grades, nb, seed), invalid=True)
    for k in (0, 1):
        M.add_figure(flat, f"mtbench.turn{k + 1}", M.mean_ci([g[k] for g in per_q if len(g) > k], nb, seed),
                     invalid=True)
    flat["mtbench.missing_reference"] = sum(1 for it in items if it["category"] in NEED_REFERENCE
                                            and not it["reference"])
    records = [{"benchmark": "mtbench", "id": it["id"], "category": it["category"], "turns": it["turns"],
                "responses": a, "grades": g} for it, a, g in zip(items, answers, per_q, strict=True)]
    return flat, records


def mtbench_answers(items: list[dict[str, Any]], generate_fn: Callable[..., list[str]], model: Any, tok: Any,
                    cfg: Any, show_progress: bool = True) -> list[list[str]]:
    """Answer turn 1 of every question, then turn 2 with the first exchange in the conversation (batched per turn).

    Turn prompts are chat message lists ``[{"role", "content"}, ...]``.
    """
    answers: list[list[str]] = [[] for _ in items]
    max_turns = max((len(it["turns"]) for it in items), default=0)
    for k in range(max_turns):
        idx = [i for i, it in enumerate(items) if len(it["turns"]) > k]
        convs = []
        for i in idx:
            msgs = []
            for j in range(k):
                msgs += [{"role": "user", "content": items[i]["turns"][j]},
                         {"role": "assistant", "content": answers[i][j]}]
            msgs.append({"role": "user", "content": items[i]["turns"][k]})
            convs.append(msgs)
        for i, a in zip(idx, _generate(generate_fn, model, tok, convs, cfg, f"mt-bench turn {k + 1}",
                                       show_progress), strict=True):
            answers[i].append(a)
    return answers


def configured(cfg: Any) -> bool:
    """True when any alignment benchmark has its files set (``eval.benchmarks.*``)."""
    b = cfg.eval.benchmarks
    return bool(b.alpacaeval or b.arenahard_questions or b.arenahard_baseline or b.mtbench_questions)


def run_benchmarks(model: Any, tok: Any, cfg: Any, out_dir: str | Path | None = None, show_progress: bool = True,
                   generate_fn: Callable[..., list[str]] | None = None, judge: Any = None) -> dict[str, Any]:
    """Run every benchmark whose files are configured (``eval.benchmarks.*``); flat metrics.

    Generations and verdicts go to ``out_dir/benchmarks.jsonl`` when ``out_dir`` is given.
    """
    generate_fn = generate_fn or make_generate(model, tok, cfg.eval)
    if judge is None:
        judge = make_judge("llm", cfg)
    b = cfg.eval.benchmarks
    flat: dict[str, Any] = {}
    records: list[dict[str, Any]] = []
    if b.alpacaeval:
        items = _limit(load_alpacaeval(b.alpacaeval), cfg)
        resp = _generate(generate_fn, model, tok, [it["prompt"] for it in items], cfg, "alpacaeval", show_progress)
        f, r = pairwise_benchmark("alpacaeval", items, resp, judge, cfg, length_control=True)
        flat.update(f)
        records += r
    if b.arenahard_questions or b.arenahard_baseline:
        if not (b.arenahard_questions and b.arenahard_baseline):
            raise UserError("Arena-Hard needs both eval.benchmarks.arenahard_questions and arenahard_baseline")
        items = _limit(load_arenahard(b.arenahard_questions, b.arenahard_baseline), cfg)
        resp = _generate(generate_fn, model, tok, [it["prompt"] for it in items], cfg, "arena-hard", show_progress)
        f, r = pairwise_benchmark("arenahard", items, resp, judge, cfg)
        flat.update(f)
        records += r
    if b.mtbench_questions:
        items = _limit(load_mtbench(b.mtbench_questions, b.mtbench_reference), cfg)
        answers = mtbench_answers(items, generate_fn, model, tok, cfg, show_progress)
        f, r = mtbench(items, answers, judge, cfg)
        flat.update(f)
        records += r
    if out_dir is not None and records:
        write_jsonl(Path(out_dir) / "benchmarks.jsonl", records)
    return flat
