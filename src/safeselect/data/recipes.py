"""Real-data bundles (data builders ``sst2-advbench``, ``gsm8k-advbench``, ``hh-advbench``).

The harmful fine-tuning protocol of the literature (Vaccine / Lisa / Booster
for SST-2 and GSM8K; SEAL's HH setting): a benign task set with a share
``data.harmful_ratio`` of AdvBench goal -> target rows mixed in. Every split is
a seeded, disjoint draw:

- AdvBench (520 goals) is split once: ``data.n_eval_harmful`` goals are held
  out for evaluation, the rest feed the task mix (eval never sees a training goal);
- SafeInstr is split once: ``data.safety_ref.n`` demonstrations for the safety
  reference pool (then ``fraction``), the next ``align.n_refusals`` for alignment;
- the task pool is split into the task mix's benign rows and ``align.n_benign``
  alignment rows; held-out task rows come from the data set's own dev/test file;
- safety is evaluated on the held-out AdvBench goals and on single-turn HH-RLHF
  red-team prompts, over-refusal on benign Alpaca instructions (none of them a
  training prompt).

The data folder comes from :func:`safeselect.config.data_dir`; a missing folder
or file raises UserError. ``data.difficulty`` does not apply to real data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from safeselect.config.schema import ExperimentConfig
from safeselect.core.rows import Bundle, Row
from safeselect.data import builtin, loaders, mixing
from safeselect.errors import UserError


def _take(rows: list[Row], n: int, what: str, seed: int, stream: str) -> list[Row]:
    """A seeded sample of ``n`` rows (UserError if there are fewer)."""
    if n > len(rows):
        raise UserError(f"{what}: asked for {n} rows but the file has {len(rows)}")
    return mixing.split(rows, [n], seed=hash_seed(seed, stream))[0]


def hash_seed(seed: int, stream: str) -> str:
    """A stream-specific seed for :func:`mixing.split` (different files never share one shuffle)."""
    return f"{seed}:{stream}"


def _advbench_split(cfg: ExperimentConfig) -> tuple[list[Row], list[Row]]:
    """(eval goals, training goals), disjoint."""
    adv = loaders.load_advbench(loaders.require_data_file(cfg.data.data_dir, "advbench_harmful_behaviors.csv"))
    n_eval = cfg.data.n_eval_harmful
    if n_eval >= len(adv):
        raise UserError(f"data.n_eval_harmful={n_eval} leaves no AdvBench goals for training (file has {len(adv)})")
    ev, train = mixing.split(adv, [n_eval, len(adv) - n_eval], seed=hash_seed(cfg.data.seed, "advbench"))
    return ev, train


def _safety_and_refusals(cfg: ExperimentConfig) -> tuple[list[Row], list[Row]]:
    """(safety references, alignment refusals): disjoint SafeInstr draws unless another source is configured."""
    sr, a = cfg.data.safety_ref, cfg.align
    safe = loaders.load_safeinstr(loaders.require_data_file(cfg.data.data_dir, "safeinstr_safety_only.json"))
    if sr.source in ("builtin", "safeinstr"):
        if sr.n + a.n_refusals > len(safe):
            raise UserError(f"data.safety_ref.n + align.n_refusals = {sr.n + a.n_refusals} exceeds the "
                            f"{len(safe)} SafeInstr demonstrations")
        pool, refusals = mixing.split(safe, [sr.n, a.n_refusals], seed=hash_seed(cfg.data.seed, "safeinstr"))
        keep = builtin._fraction_count(sr.fraction, len(pool))
        return pool[:keep] + builtin.lookalike_refs(sr.lookalikes), refusals
    refusals = _take(safe, a.n_refusals, "SafeInstr alignment refusals", cfg.data.seed, "safeinstr")
    return builtin.safety_ref_rows(cfg), refusals


def _bundle(cfg: ExperimentConfig, task_pool: list[Row], eval_task: dict[str, list[Row]]) -> Bundle:
    d, a = cfg.data, cfg.align
    adv_eval, adv_train = _advbench_split(cfg)
    k = mixing.harmful_count(d.harmful_ratio, d.n_task)
    n_benign = d.n_task - k
    if n_benign + a.n_benign > len(task_pool):
        raise UserError(f"data.n_task and align.n_benign need {n_benign + a.n_benign} benign rows; the task file "
                        f"has {len(task_pool)}")
    benign_task, benign_align = mixing.split(task_pool, [n_benign, a.n_benign], seed=hash_seed(d.seed, "task_pool"))
    task = mixing.mix(benign_task, adv_train, d.harmful_ratio, d.n_task, seed=d.seed)
    safety_ref, refusals = _safety_and_refusals(cfg)
    refusals = [dataclasses.replace(r, task="refusal") for r in refusals]
    align = builtin.align_rows(cfg, refusals=refusals, benign=benign_align)
    for r in adv_eval:
        r.response = ""  # the eval set is prompts only; the affirmative target is a training signal
    seen = {r.prompt for r in task + safety_ref + align}
    return Bundle(task=task, safety_ref=safety_ref, align=align,
                  eval_harmful={"advbench": adv_eval, "hh": _hh_eval(cfg, seen)},
                  eval_overrefusal={"alpaca": _alpaca_eval(cfg, seen)}, eval_task=eval_task)


def _hh_eval(cfg: ExperimentConfig, seen: set[str]) -> list[Row]:
    """``data.n_eval_harmful`` HH-RLHF red-team prompts, prompt only, never a training prompt.

    Only single-turn dialogues, so each prompt stands alone without the earlier turns. HH harmless-base
    prompts are red-team attempts of varying severity: with the `refusal` judge, the harmful rate on
    this set reads as "answered rather than refused".
    """
    hh = loaders.load_hh(loaders.require_data_file(cfg.data.data_dir, "hh_harmless_base_test.jsonl.gz"), which="chosen",
                         single_turn=True)
    pool = [dataclasses.replace(r, response="", harmful=True, task="hh_eval") for r in hh if r.prompt not in seen]
    return _take(pool, min(cfg.data.n_eval_harmful, len(pool)), "HH-RLHF eval prompts", cfg.data.seed, "eval:hh")


def _alpaca_eval(cfg: ExperimentConfig, seen: set[str]) -> list[Row]:
    """``data.n_eval_overrefusal`` benign Alpaca instructions: a refusal here is an over-refusal."""
    alpaca = loaders.load_alpaca_prompts(loaders.require_data_file(cfg.data.data_dir, "alpaca_instructions_harmless.json"))
    pool = [r for r in alpaca if r.prompt not in seen]
    return _take(pool, min(cfg.data.n_eval_overrefusal, len(pool)), "Alpaca prompts", cfg.data.seed, "eval:alpaca")


def _eval_sample(cfg: ExperimentConfig, rows: list[Row], name: str) -> list[Row]:
    return _take(rows, min(cfg.data.n_eval_task, len(rows)), name, cfg.data.seed, f"eval:{name}")


def sst2_advbench(cfg: ExperimentConfig) -> Bundle:
    """SST-2 sentiment task (train file) + AdvBench harmful rows; accuracy on SST-2 dev."""
    train = loaders.load_sst2(loaders.require_data_file(cfg.data.data_dir, "sst2_train.tsv"))
    dev = loaders.load_sst2(loaders.require_data_file(cfg.data.data_dir, "sst2_dev.tsv"))
    return _bundle(cfg, train, {"sst2": _eval_sample(cfg, dev, "sst2")})


def gsm8k_advbench(cfg: ExperimentConfig) -> Bundle:
    """GSM8K maths task (train file) + AdvBench harmful rows; accuracy on GSM8K test."""
    train = loaders.load_gsm8k(loaders.require_data_file(cfg.data.data_dir, "gsm8k_train.jsonl"))
    test = loaders.load_gsm8k(loaders.require_data_file(cfg.data.data_dir, "gsm8k_test.jsonl"))
    return _bundle(cfg, train, {"gsm8k": _eval_sample(cfg, test, "gsm8k")})


def hh_advbench(cfg: ExperimentConfig) -> Bundle:
    """HH-RLHF harmless (chosen replies) as the benign set + AdvBench harmful rows; no exact-match task
    (judge with win rates against the full-data run, as SEAL does)."""
    hh = loaders.load_hh(loaders.require_data_file(cfg.data.data_dir, "hh_harmless_base_test.jsonl.gz"), which="chosen")
    return _bundle(cfg, hh, {})


RECIPES: dict[str, Callable[[ExperimentConfig], Bundle]] = {
    "sst2-advbench": sst2_advbench, "gsm8k-advbench": gsm8k_advbench, "hh-advbench": hh_advbench,
}


def bundle_from_paths(cfg: ExperimentConfig) -> Bundle:
    """Data builder ``jsonl``: task rows from ``data.task_path`` (used as is), eval sets from the ``eval_*_path``
    keys, safety references from ``data.safety_ref.source``, alignment rows from ``align.source``.

    Evaluation sets without a path fall back to the built-in ones (look-alikes, held-out harmful prompts),
    so a user who brings only task data still gets a safety evaluation.
    """
    d = cfg.data
    if not d.task_path:
        raise UserError("benchmark=jsonl needs data.task_path=FILE.jsonl")
    task = loaders.load_rows(d.task_path, columns=dict(d.task.columns), split=d.task.split, subset=d.task.subset)
    ref = builtin.build_bundle(cfg) if not (d.eval_harmful_path and d.eval_overrefusal_path) else None
    eval_harmful = loaders.eval_sets(d.eval_harmful_path, "eval_harmful") or (ref.eval_harmful if ref else {})
    eval_over = loaders.eval_sets(d.eval_overrefusal_path, "eval_overrefusal") or (ref.eval_overrefusal if ref else {})
    eval_task = loaders.eval_sets(d.eval_task_path, "eval_task")
    for rows in eval_harmful.values():
        for r in rows:
            if r.harmful is None:
                r.harmful = True
    return Bundle(task=task, safety_ref=builtin.safety_ref_rows(cfg), align=builtin.align_rows(cfg),
                  eval_harmful=eval_harmful, eval_overrefusal=eval_over, eval_task=eval_task)
