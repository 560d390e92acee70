"""Ablation plans for SEAL and eva in the house styles of different planners, with what each section should map to.

Written for the mapper's tests and its measured figure (docs/results.md): the
``tune`` half was used while adjusting the matcher, the ``heldout`` half only to
report. ``expected`` maps a word of a section's heading to (config key, values)
or to None when the section cannot map (its knob does not exist here); values
None means "do not check the values".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PlanFixture:
    name: str
    split: str  # tune | heldout
    text: str
    expected: dict[str, tuple[str, list[Any] | None] | None]


PLANS: list[PlanFixture] = [
    # 1. ATX headings, bold labels, bulleted values: knobs named by description
    PlanFixture("seal_atx_description", "tune", """# SEAL ablations

## Ablation 1: Selector weighting function
- **Ablated Part**: the function that maps selector logits to weights
- **Action**: REPLACE
- **Replacement**:
  - Sigmoid
  - Tanh
  - ReLU
- **Metrics**: win rate, harmful rate

## Ablation 2: Safety data size
- **Ablated Part**: the size of the safety data used in the upper level
- **Action**: REPLACE
- **Replacement**:
  - 25%
  - 50%
  - 75%
- **Metrics**: safety score

## Ablation 3: Selector optimiser
- **Ablated Part**: optimiser used for the selector (Adam vs plain SGD)
- **Action**: REPLACE
- **Replacement**:
  - SGD
  - RMSProp
- **Metrics**: win rate
""", {"weighting function": ("selection.seal.activation", ["sigmoid", "tanh", "relu"]),
      "safety data size": ("data.safety_ref.fraction", [0.25, 0.5, 0.75]),
      "optimiser": None}),

    # 2. setext headings, italic labels, inline "X / Y / Z"
    PlanFixture("seal_setext_italic", "heldout", """SEAL: what else to ablate
=========================

Penalty schedule
----------------
*Ablated part:* how the penalty gamma grows during selector training
*Action:* REPLACE
*Replacement:* fixed 0.1 / linear / exponential
*Metrics:* win rate, Safety Avg

Selector learning rate
----------------------
*Ablated part:* learning rate of the data selector
*Action:* REPLACE
*Replacement:* 1e-3 / 5e-3 / 2e-2
*Metrics:* win rate
""", {"penalty schedule": ("selection.seal.gamma.schedule", ["constant", "linear", "exponential"]),
      "learning rate": ("selection.seal.selector_lr", [1e-3, 5e-3, 2e-2])}),

    # 3. numbered list of ablations with nested fields
    PlanFixture("seal_numbered", "tune", """# Proposed ablations for SEAL

1. **Gamma value**
   - **Component**: constant penalty strength gamma
   - **Values**: 0.01, 0.1 and 1.0
   - **Metrics**: win rate
2. **Selector training length**
   - **Component**: number of epochs the selector is trained for
   - **Values**: 1, 3, 5
   - **Metrics**: win rate, training time
3. **Schedule speed**
   - **Component**: the gamma schedule
   - **Values**: the default linear schedule, a faster schedule
   - **Metrics**: win rate
""", {"gamma value": ("selection.seal.gamma.value", [0.01, 0.1, 1.0]),
      "training length": ("selection.seal.epochs", [1, 3, 5]),
      "schedule speed": ("selection.seal.gamma.schedule", None)}),

    # 4. one table row per ablation
    PlanFixture("seal_table", "heldout", """### SEAL ablation table

| Ablation | Component | Replacements | Metrics |
|---|---|---|---|
| Algorithm | bilevel update rule (Algorithm 1 vs 2) | Algorithm 1 (auxiliary); Algorithm 2 (memory-efficient) | GPU memory, training time |
| Keep ratio | percentage of the fine-tuning data kept after selection | 20%, 40%, 60%, 80% | win rate |
| Proxy | smaller model used to train the selector | tiny-llama | win rate |
""", {"algorithm": ("selection.seal.algorithm", ["auxiliary", "memory_efficient"]),
      "keep ratio": ("selection.ratio", [0.2, 0.4, 0.6, 0.8]),
      "proxy": ("selection.seal.selector_model", ["tiny-llama"])}),

    # 5. plain labels, CamelCase values, one section with no knob
    PlanFixture("seal_plain_camel", "tune", """# Ablations

### A. Selector update
Knob: selector update algorithm
Action: REPLACE
Values: MemoryEfficient, Auxiliary
Metrics: win rate, GPU memory

### B. Data poisoning level
Knob: share of harmful examples in the fine-tuning mix
Action: REPLACE
Values: 10%, 20%, 40%
Metrics: harmful rate

### C. Tokenizer
Knob: the tokenizer used by the target model
Action: REPLACE
Values: BPE, SentencePiece
Metrics: win rate
""", {"selector update": ("selection.seal.algorithm", ["memory_efficient", "auxiliary"]),
      "poisoning": ("data.harmful_ratio", [0.1, 0.2, 0.4]),
      "tokenizer": None}),

    # 6. a two-column field table per section
    PlanFixture("seal_field_tables", "heldout", """# SEAL

## Selector activation

| Field | Value |
|---|---|
| Ablated part | activation applied to the selector logits |
| Action | REPLACE |
| Replacement | softmax, sigmoid |
| Metrics | win rate |

## Auxiliary steps

| Field | Value |
|---|---|
| Ablated part | number of theta-hat updates per iteration in Algorithm 1 |
| Action | REPLACE |
| Replacement | 1, 2, 4 |
| Metrics | GPU memory |
""", {"activation": ("selection.seal.activation", ["softmax", "sigmoid"]),
      "auxiliary steps": ("selection.seal.aux_steps", [1, 2, 4])}),

    # 7. one-line prose ablations in a list
    PlanFixture("seal_prose_lines", "tune", """## Ablation plan (SEAL)

- **Penalty schedule**: replace the linear increase of gamma with a constant or an exponential schedule.
- **Selection percentage**: vary the share of data kept across 30%, 60% and 90%.
- **Random seed of the world**: compare the moon phase at training time with full moon and new moon.
""", {"penalty schedule": ("selection.seal.gamma.schedule", ["constant", "exponential"]),
      "selection percentage": ("selection.ratio", [0.3, 0.6, 0.9]),
      "random seed": None}),

    # 8. eva, underscore labels, ratios and CamelCase method names
    PlanFixture("eva_underscore_ratio", "tune", """# eva ablations

### Ablation: Buffer composition
- __Ablated Part__: evolved-to-original prompt ratio in the solver's training buffer
- __Action__: REPLACE
- __Replacement__: 80:20, 50:50, 20:80
- __Metrics__: Arena-Hard WR, AlpacaEval WR

### Ablation: Evolution method
- __Ablated Part__: how prompts are rewritten by the creator
- __Action__: REPLACE
- __Replacement__: EvolInstruct, SelfInstruct
- __Metrics__: MT-Bench score
""", {"buffer": ("eva.mix_ratio", [0.2, 0.5, 0.8]),
      "evolution method": ("eva.evolve_method", ["evol-instruct", "self-instruct"])}),

    # 9. eva, setext, description-only knob names
    PlanFixture("eva_setext_descriptions", "heldout", """eva: missing ablations
======================

Original prompt share
---------------------
**Ablated Part**: share of original prompts in the buffer
**Action**: REPLACE
**Replacement**: 0.1, 0.3 and 0.5
**Metrics**: Arena-Hard WR

Informativeness signal
----------------------
**Ablated Part**: the metric used to score how informative a prompt is
**Action**: REPLACE
**Replacement**: reward gap / variance / mean reward
**Metrics**: AlpacaEval WR

Reward source
-------------
**Ablated Part**: the reward model family (ArmoRM vs. Skywork)
**Action**: REPLACE
**Replacement**: ArmoRM-8B / Skywork-27B
**Metrics**: Arena-Hard WR
""", {"original prompt share": ("eva.mix_ratio", [0.1, 0.3, 0.5]),
      "informativeness": ("eva.informativeness", ["gap", "variance", "mean"]),
      "reward source": None}),

    # 10. eva, numbered fields inside sections, "X, Y and Z"
    PlanFixture("eva_numbered_fields", "tune", """# Self-play ablations for eva

## 1. Prompt sampler
1. **Ablated part**: how prompts are drawn for evolution
2. **Action**: REPLACE
3. **Replacement**: greedy top-k, weighted by informativeness and uniform random
4. **Metrics**: Arena-Hard WR

## 2. Evolution depth
1. **Ablated part**: number of rewrites per sampled prompt
2. **Action**: REPLACE
3. **Replacement**: 1, 2 and 8
4. **Metrics**: MT-Bench score
""", {"sampler": ("eva.sampler", ["greedy", "weighted", "uniform"]),
      "evolution depth": ("eva.evolutions", [1, 2, 8])}),

    # 11. eva, one table row per ablation
    PlanFixture("eva_table", "heldout", """## eva ablations

| Ablated component | Action | Alternatives | Evaluation |
|---|---|---|---|
| preference optimisation loss of the solver | REPLACE | DPO / SimPO / ORPO | Arena-Hard WR |
| number of responses sampled per prompt | REPLACE | 4, 8, 16 | AlpacaEval WR |
| beta of the preference loss | REPLACE | 0.01, 0.05, 0.1 | MT-Bench |
""", {"preference optimisation": ("eva.loss", ["dpo", "simpo", "orpo"]),
      "responses": ("eva.responses_per_prompt", [4, 8, 16]),
      "beta": ("eva.beta", [0.01, 0.05, 0.1])}),

    # 12. eva, ellipsis range on the evolved share, and a knob that does not exist
    PlanFixture("eva_ellipsis", "tune", """### eva: curriculum mix

- **Ablated Part**: evolved-to-original share of training prompts
- **Action**: REPLACE
- **Replacement**: evolved-to-original 1.0 ... 0.0
- **Metrics**: Arena-Hard WR, MT-Bench avg. score

### eva: judge model size

- **Ablated Part**: size of the LLM-as-a-judge used for Arena-Hard
- **Action**: REPLACE
- **Replacement**: GPT-4-turbo, GPT-4o-mini
- **Metrics**: Arena-Hard WR
""", {"curriculum mix": ("eva.mix_ratio", [0.0, 0.25, 0.5, 0.75, 1.0]),
      "judge model": None}),

    # 13. SEAL, h4 headings, emphasised labels outside the colon, mixed lists
    PlanFixture("seal_h4_mixed", "heldout", """#### SEAL — size of the trusted safety set
**Ablated component** — amount of safety reference data D_safe
**Action** — REPLACE
**Replacement values**
1. 10%
2. 50%
3. 100%
**Metrics** — win rate, harmful rate

#### SEAL — selector epochs
**Ablated component** — number of passes of selector training
**Action** — REPLACE
**Replacement values**
- 1 epoch
- 2 epochs
- 6 epochs
**Metrics** — win rate

#### SEAL — chat template
**Ablated component** — chat template of the target model
**Action** — REPLACE
**Replacement values**
- Llama-2 chat format
- ChatML
**Metrics** — win rate
""", {"trusted safety set": ("data.safety_ref.fraction", [0.1, 0.5, 1.0]),
      "selector epochs": ("selection.seal.epochs", [1, 2, 6]),
      "chat template": None}),

    # 14. eva, bold pseudo-headings, prose values
    PlanFixture("eva_bold_headings", "heldout", """# eva follow-ups

**Creator network**

- Ablated Part: whether the creator shares weights with the solver
- Action: REPLACE
- Replacement: same model as the solver; a separate frozen copy
- Metrics: Arena-Hard WR

**Self-play rounds**

- Ablated Part: number of creator/solver iterations
- Action: REPLACE
- Replacement: 1 round, 2 rounds, 3 rounds
- Metrics: AlpacaEval WR

**Sampling temperature**

- Ablated Part: temperature used when sampling solver responses
- Action: REPLACE
- Replacement: 0.3, 0.7, 1.0
- Metrics: MT-Bench
""", {"creator network": ("eva.creator", ["shared", "independent"]),
      "self-play rounds": ("eva.iterations", [1, 2, 3]),
      "temperature": ("eva.temperature", [0.3, 0.7, 1.0])}),
]
