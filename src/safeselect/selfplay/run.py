"""The eva loop (METHODS.md section 5), top to bottom: creator step, then solver step, ``eva.iterations`` times.

Each iteration k, on the current prompt set X (the human prompts at first):

1. estimate: K = ``responses_per_prompt`` sampled responses per prompt from the
   current solver (temperature / top-p), scored by ``eva.reward``; per-prompt
   informativeness (``eva.informativeness``);
2. sample: ``sample_ratio`` of X by ``eva.sampler``;
3. evolve: the creator rewrites them (``evolve_method``, ``evolutions``), the
   output is cleaned and enters the pool with its lineage;
4. mix: K fresh responses of the current solver on the evolved prompts,
   scored; pairs on original prompts (``mix_ratio``) + pairs on evolved ones;
5. solve: best-vs-worst pairs (ties dropped), one round of DPO / IPO / SimPO
   (TRL) with the reference reset to the iteration's starting model.

The next prompt set is the evolved prompts plus the original prompts whose
pairs were mixed in. With ``evolutions: 0`` an iteration is a plain online
preference round on X (the "DPO on human prompts" baseline).

Writes ``OUT/config.yaml``, ``OUT/iter_<k>/{prompts.jsonl, pairs.jsonl,
informativeness.json, solver.json}``, ``OUT/pool.jsonl`` (every prompt with
lineage), ``OUT/heldout.jsonl`` (start and final responses with rewards),
``OUT/model/`` (the final solver, when ``eva.save_model``) and
``OUT/metrics.json`` (last, with the completion marker of
:class:`~safeselect.core.rundir.RunDir`). A finished directory of the same
config is not run again; one of another config is an error.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from safeselect.config import loading
from safeselect.config.paths import data_dir
from safeselect.config.schema import ExperimentConfig
from safeselect.core.io import read_jsonl, write_json, write_jsonl
from safeselect.core.rows import Row
from safeselect.core.rundir import RunDir
from safeselect.core.stats import add_figure, mean_ci, win_rate
from safeselect.errors import UserError
from safeselect.evaluation.benchmarks import configured as benchmarks_configured
from safeselect.evaluation.benchmarks import run_benchmarks
from safeselect.evaluation.generate import generate
from safeselect.evaluation.resources import Meter
from safeselect.judges.http import ChatClient
from safeselect.judges.rule import RuleJudge
from safeselect.models import load_model, resolve_device
from safeselect.models.saved import save_model
from safeselect.registry import registry
from safeselect.selfplay.evolve import CLEAN_COUNTS, evolve
from safeselect.selfplay.informativeness import informativeness, stats
from safeselect.selfplay.pairs import build_pairs, mix_pairs
from safeselect.selfplay.pool import PromptEntry, PromptPool
from safeselect.selfplay.rewards import make_reward
from safeselect.selfplay.sampler import n_to_sample, sample
from safeselect.selfplay.solve import preference_step

ALPACA_FILE = "alpaca_instructions_harmless.json"


# ----------------------------------------------------------------------------- prompts


def _builtin_bundle(cfg: ExperimentConfig) -> Any:
    return registry("data").get("builtin")(cfg)


def human_prompts(cfg: ExperimentConfig, bundle: Any | None = None) -> list[Row]:
    """``eva.n_prompts`` starting prompts from ``eva.prompts`` (builtin task rows, alpaca, or a JSONL path)."""
    src = cfg.eva.prompts
    n = cfg.eva.n_prompts
    rng = np.random.default_rng(cfg.seed)
    if src == "builtin":
        rows = list((bundle or _builtin_bundle(cfg)).task)
    elif src == "alpaca":
        d = data_dir(cfg.data.data_dir)
        if d is None or not (d / ALPACA_FILE).exists():
            raise UserError(f"eva.prompts=alpaca needs {ALPACA_FILE} in the data folder (data.data_dir or "
                            "SAFESELECT_DATA_DIR)")
        items = json.loads((d / ALPACA_FILE).read_text(encoding="utf-8"))
        rows = [Row(row_id=f"alpaca-{i:05d}", prompt=str(x["instruction"]), harmful=False, task="open",
                    category=x.get("category"), source="alpaca") for i, x in enumerate(items) if x.get("instruction")]
    else:
        raw = read_jsonl(src)
        rows = []
        for i, d in enumerate(raw):
            if not isinstance(d.get("prompt"), str):
                raise UserError(f"{src}:{i + 1}: a prompt row needs a string field 'prompt'")
            rows.append(Row.from_dict({"row_id": d.get("row_id", f"p-{i:05d}"), **d}))
    if len(rows) < n:
        raise UserError(f"eva.n_prompts={n} but the prompt source '{src}' has only {len(rows)} prompts"
                        + (" (raise data.n_task)" if src == "builtin" else ""))
    order = rng.permutation(len(rows))[:n]
    return [rows[i] for i in sorted(order)]


def heldout_rows(cfg: ExperimentConfig, bundle: Any | None = None) -> list[Row]:
    """``eva.n_heldout`` rows with ground truth, round-robin over the built-in evaluation sets.

    Task rows (with answers), harmful prompts and benign look-alikes: none of them is ever a training prompt.
    """
    n = cfg.eva.n_heldout
    if n <= 0:
        return []
    b = bundle or _builtin_bundle(cfg)
    sets = [list(v) for v in b.eval_task.values()] + [list(v) for v in b.eval_harmful.values()] \
        + [list(v) for v in b.eval_overrefusal.values()]
    sets = [s for s in sets if s]
    out: list[Row] = []
    i = 0
    while len(out) < n and any(i < len(s) for s in sets):
        out += [s[i] for s in sets if i < len(s)]
        i += 1
    return out[:n]


# ----------------------------------------------------------------------------- creators


def model_creator(model: Any, tok: Any, cfg: ExperimentConfig, seed: int, show_progress: bool) -> Any:
    """A creator that samples rewrites from ``model`` (the solver itself when shared)."""

    calls = [0]
    eva = cfg.eva

    def create(requests: list[str]) -> list[str]:
        calls[0] += 1  # a new seed per call, so chained steps do not repeat one sampling stream
        return generate(model, tok, requests, max_new_tokens=eva.creator_max_new_tokens,
                        batch_size=cfg.eval.batch_size, do_sample=eva.creator_temperature > 0,
                        temperature=max(eva.creator_temperature, 1e-5), top_p=eva.creator_top_p,
                        desc="evolve", seed=seed * 1000 + calls[0], show_progress=show_progress)

    return create


def independent_creator(cfg: ExperimentConfig, device: str, seed: int, show_progress: bool) -> tuple[Any, str]:
    """(creator, description) for ``creator: independent``: a frozen model by name, or 'llm' (HTTP endpoint)."""
    name = cfg.eva.creator_model
    if not name:
        raise UserError("eva.creator=independent needs eva.creator_model: a model name/path, or 'llm' for the "
                        "OpenAI-compatible endpoint of judges.llm")
    if name == "llm":
        client = ChatClient(cfg.judges.llm, sampling={"temperature": cfg.eva.creator_temperature,
                                                      "max_tokens": cfg.eva.creator_max_new_tokens,
                                                      "top_p": cfg.eva.creator_top_p})

        def create(requests: list[str]) -> list[str]:
            msgs = [[{"role": "user", "content": m}] for m in requests]
            out = client.run(msgs, lambda reply: reply or None, tag="eva-creator", desc="creator",
                             show_progress=show_progress)
            return [text or "" for text, _ in out]

        return create, f"llm:{cfg.judges.llm.model}"

    model, tok = load_model(name, cfg.model, device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model_creator(model, tok, cfg, seed, show_progress), f"model:{name}"


# ----------------------------------------------------------------------------- the loop


def _score(reward: Any, entries: list[PromptEntry], responses: list[str], k: int) -> np.ndarray:
    """Rewards of ``k`` consecutive responses per entry, as an (entries x k) array."""
    rep = [e for e in entries for _ in range(k)]
    return np.asarray(reward(rep, responses), dtype=np.float64).reshape(len(entries), k)


def _sample_responses(model: Any, tok: Any, entries: list[PromptEntry], cfg: ExperimentConfig, seed: int,
                      show_progress: bool, desc: str) -> list[list[str]]:
    eva = cfg.eva
    k = eva.responses_per_prompt
    flat = generate(model, tok, [e.text for e in entries], max_new_tokens=eva.max_new_tokens,
                    batch_size=cfg.eval.batch_size, do_sample=True, temperature=max(eva.temperature, 1e-5),
                    top_p=eva.top_p, num_return_sequences=k, desc=desc, seed=seed, show_progress=show_progress)
    return [flat[i * k:(i + 1) * k] for i in range(len(entries))]


def _nan_to_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def run_eva(cfg: ExperimentConfig, out_dir: str | Path, show_progress: bool = True) -> dict[str, Any]:
    """Run eva; return the flat metrics (also nested in ``OUT/metrics.json``)."""
    import torch

    run = RunDir(out_dir)
    out = run.path
    if run.check_reusable(loading.to_dict(cfg), ("name", "compare")):
        flat = run.read_metrics()
        flat.pop("complete", None)
        return flat
    eva = cfg.eva
    if eva.creator == "independent" and not eva.creator_model:
        raise UserError("eva.creator=independent needs eva.creator_model (a model name/path, or 'llm')")
    run.create().write_config(loading.to_yaml(cfg))
    meter = Meter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = resolve_device(cfg.device)

    with meter.stage("setup"):
        model, tok = load_model(eva.init_from or cfg.model.name, cfg.model, device)
        reward = make_reward(eva.reward, cfg)
        extra_rewards = {name: make_reward(name, cfg) for name in eva.eval_rewards if name != eva.reward}
        bundle = _builtin_bundle(cfg) if (eva.prompts == "builtin" or eva.n_heldout > 0) else None
        humans = human_prompts(cfg, bundle)
        held = heldout_rows(cfg, bundle)
        creator_desc = "shared (the current solver)"
        fixed_creator = None
        if eva.creator == "independent" and eva.evolutions > 0:
            fixed_creator, creator_desc = independent_creator(cfg, device, cfg.seed, show_progress)

    pool = PromptPool()
    current: list[PromptEntry] = []
    for r in humans:
        e = PromptEntry.from_row(r)
        pool.add(e)
        current.append(e)

    # the starting model's held-out answers, before any training changes it
    held_prompts = [r.prompt for r in held]
    with meter.stage("eval"):
        start_resp = generate(model, tok, held_prompts, max_new_tokens=eva.max_new_tokens,
                              batch_size=cfg.eval.batch_size, desc="held-out (start)",
                              show_progress=show_progress) if held else []

    totals: dict[str, Any] = {"pairs": 0, "pairs_original": 0, "pairs_evolved": 0, "ties": 0, "evolved_kept": 0,
                              "fallback_original": 0, "clean": dict.fromkeys(CLEAN_COUNTS, 0)}
    per_iter: dict[str, Any] = {}
    for k in range(1, eva.iterations + 1):
        it = out / f"iter_{k}"
        seed_k = cfg.seed * 100 + k
        # 1. estimate
        with meter.stage("generate"):
            resp = _sample_responses(model, tok, current, cfg, seed_k, show_progress, f"iter {k}: estimate")
        with meter.stage("reward"):
            R = _score(reward, current, [x for g in resp for x in g], eva.responses_per_prompt)
        info = informativeness(R, eva.informativeness)
        # 2. sample
        n = n_to_sample(len(current), eva.sample_ratio) if eva.evolutions > 0 else 0
        picked, sinfo = sample(info, n, eva.sampler, rng)
        picked_set = {int(i) for i in picked}
        # 3. evolve
        counts = dict.fromkeys(CLEAN_COUNTS, 0)
        new: list[PromptEntry] = []
        if n > 0:
            creator = fixed_creator or model_creator(model, tok, cfg, seed_k, show_progress)
            with meter.stage("evolve"):
                new, counts = evolve(pool, [current[int(i)] for i in picked], creator, method=eva.evolve_method,
                                     evolutions=eva.evolutions, iteration=k, rng=rng,
                                     min_chars=eva.min_prompt_chars, max_chars=eva.max_prompt_chars,
                                     context=current, n_examples=eva.self_instruct_examples)
        # 4. mix: the current solver answers the evolved prompts too
        evo_resp: list[list[str]] = []
        R_new = np.zeros((0, eva.responses_per_prompt))
        if new:
            with meter.stage("generate"):
                evo_resp = _sample_responses(model, tok, new, cfg, seed_k + 50, show_progress, f"iter {k}: evolved")
            with meter.stage("reward"):
                R_new = _score(reward, new, [x for g in evo_resp for x in g], eva.responses_per_prompt)
        orig_pairs, orig_counts = build_pairs([e.prompt_id for e in current], [e.text for e in current], resp, R)
        evo_pairs, evo_counts = build_pairs([e.prompt_id for e in new], [e.text for e in new], evo_resp, R_new)
        if eva.evolutions == 0:
            train_pairs = [dict(p, source="original") for p in orig_pairs]
            mix_info: dict[str, Any] = {"mix_ratio": None, "original": len(train_pairs), "evolved": 0,
                                        "fallback_original": False, "note": "evolutions=0: plain preference round"}
        else:
            train_pairs, mix_info = mix_pairs(orig_pairs, evo_pairs, eva.mix_ratio, rng)

        prompt_records = []
        for i, e in enumerate(current):
            prompt_records.append({**e.to_dict(), "role": "current", "informativeness": _nan_to_none(info[i]),
                                   "sampled": i in picked_set, "rewards": [_nan_to_none(x) for x in R[i]]})
        for i, e in enumerate(new):
            prompt_records.append({**e.to_dict(), "role": "evolved", "rewards": [_nan_to_none(x) for x in R_new[i]]})
        write_jsonl(it / "prompts.jsonl", prompt_records)
        write_jsonl(it / "pairs.jsonl", train_pairs)
        istats = stats(R, info)
        istats.update(metric=eva.informativeness, sampler=sinfo, sampled=int(len(picked)),
                      evolved_reward_mean=_nan_to_none(float(np.nanmean(R_new))) if np.isfinite(R_new).any()
                      else None, cleaning=counts, pairs_original=orig_counts, pairs_evolved=evo_counts, mix=mix_info)
        write_json(it / "informativeness.json", istats)

        # 5. solve
        with meter.stage("train"):
            model, smetrics = preference_step(model, tok, train_pairs, cfg, seed=seed_k, show_progress=show_progress,
                                              device=device)
        smetrics["creator"] = creator_desc if eva.creator == "independent" else "shared (the current solver)"
        write_json(it / "solver.json", smetrics)

        totals["pairs"] += len(train_pairs)
        totals["pairs_original"] += int(mix_info["original"])
        totals["pairs_evolved"] += int(mix_info["evolved"])
        totals["ties"] += orig_counts["ties"] + evo_counts["ties"]
        totals["evolved_kept"] += len(new)
        totals["fallback_original"] += int(bool(mix_info.get("fallback_original")))
        for c in CLEAN_COUNTS:
            totals["clean"][c] += counts[c]
        per_iter[f"iter_{k}"] = {"pairs": len(train_pairs), "evolved": len(new), "prompts": len(current),
                                 "reward_mean": _nan_to_none(istats["reward_mean"]),
                                 "informativeness_mean": _nan_to_none(istats["informativeness_mean"]),
                                 "final_loss": smetrics.get("final_loss")}
        # the next prompt set: the evolved prompts and the originals that were mixed in
        if new:
            mixed_ids = {p["prompt_id"] for p in train_pairs if p["source"] == "original"}
            current = new + [e for e in current if e.prompt_id in mixed_ids]

    write_jsonl(out / "pool.jsonl", pool.records())

    # held-out: start vs final solver
    flat: dict[str, Any] = {}
    with meter.stage("eval"):
        final_resp = generate(model, tok, held_prompts, max_new_tokens=eva.max_new_tokens,
                              batch_size=cfg.eval.batch_size, desc="held-out (final)",
                              show_progress=show_progress) if held else []
        held_entries = [PromptEntry.from_row(r) for r in held]
        records = [{"row_id": r.row_id, "prompt": r.prompt, "harmful": r.harmful, "answer": r.answer,
                    "start": s, "final": f} for r, s, f in zip(held, start_resp, final_resp, strict=True)]
        for name, fn in [(eva.reward, reward), *extra_rewards.items()]:
            s_r = np.asarray(fn(held_entries, start_resp), dtype=np.float64) if held else np.zeros(0)
            f_r = np.asarray(fn(held_entries, final_resp), dtype=np.float64) if held else np.zeros(0)
            prefix = "eva.reward" if name == eva.reward else f"eva.eval.{name}"
            s_stat = mean_ci([_nan_to_none(x) for x in s_r], n_boot=cfg.eval.bootstrap, seed=cfg.seed)
            f_stat = mean_ci([_nan_to_none(x) for x in f_r], n_boot=cfg.eval.bootstrap, seed=cfg.seed)
            add_figure(flat, f"{prefix}.mean", f_stat)
            add_figure(flat, f"{prefix}.start_mean", s_stat)
            d = [_nan_to_none(b - a) for a, b in zip(s_r, f_r, strict=True)]
            add_figure(flat, f"{prefix}.delta", mean_ci(d, n_boot=cfg.eval.bootstrap, seed=cfg.seed))
            for rec, a, b in zip(records, s_r, f_r, strict=True):
                rec[f"{name}_start"] = _nan_to_none(a)
                rec[f"{name}_final"] = _nan_to_none(b)
        if held:
            outcomes = RuleJudge(cfg).compare(held_prompts, final_resp, start_resp, rows=held)
            add_figure(flat, "eva.win_rate.rule", win_rate(outcomes, n_boot=cfg.eval.bootstrap, seed=cfg.seed),
                       invalid=True)
            for rec, o in zip(records, outcomes, strict=True):
                rec["rule_final_vs_start"] = o
        if benchmarks_configured(cfg):  # the alignment benchmarks eva reports, on the final solver
            flat.update(run_benchmarks(model, tok, cfg, out, show_progress=show_progress))
    write_jsonl(out / "heldout.jsonl", records)

    if eva.save_model:
        with meter.stage("save"):
            save_model(model, tok, run.model)

    flat.update({
        "eva.pairs.total": totals["pairs"], "eva.pairs.original": totals["pairs_original"],
        "eva.pairs.evolved": totals["pairs_evolved"], "eva.pairs.ties": totals["ties"],
        "eva.pairs.fallback_original": totals["fallback_original"], "eva.prompts.evolved": totals["evolved_kept"],
        "eva.prompts.human": len(humans), "eva.prompts.pool": len(pool),
    })
    for c, v in totals["clean"].items():
        flat[f"eva.clean.{c}"] = v
    for key, d in per_iter.items():
        for m, v in d.items():
            flat[f"eva.iterations.{key}.{m}"] = v
    flat.update(meter.metrics())
    run.write_metrics(flat)  # last: the completion marker
    return flat
