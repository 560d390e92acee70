"""The solver step (eva step 5): one round of preference optimisation on TRL.

``dpo`` and ``ipo`` run TRL's ``DPOTrainer`` (``loss_type`` sigmoid / ipo);
``simpo`` runs TRL's ``CPOTrainer`` with ``loss_type="simpo"`` and
``cpo_alpha=0`` (TRL's SimPO; DPOConfig has no SimPO loss) and ``orpo`` TRL's
``ORPOTrainer`` (``beta`` = its lambda); those two are reference-free.

The reference model is the iteration's starting checkpoint: with LoRA on, a
fresh adapter is added to the current solver and TRL takes the adapter-disabled
model as reference (exactly the starting weights); afterwards the adapter is
merged, so the next iteration starts (and references) the merged solver. With
LoRA off, the reference is a frozen deep copy of the starting model.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from typing import Any

from safeselect.config.schema import ExperimentConfig
from safeselect.models import add_lora, merge_lora

LOSS_TYPES = {"dpo": "sigmoid", "ipo": "ipo", "simpo": "simpo", "orpo": "orpo"}


def preference_dataset(pairs: list[dict[str, Any]]) -> Any:
    """TRL's conversational preference format: prompt / chosen / rejected as message lists."""
    from datasets import Dataset

    return Dataset.from_list([
        {"prompt": [{"role": "user", "content": p["prompt"]}],
         "chosen": [{"role": "assistant", "content": p["chosen"]}],
         "rejected": [{"role": "assistant", "content": p["rejected"]}]}
        for p in pairs
    ])


def checkpointing_arg(enabled: bool) -> dict[str, bool]:
    """The trainer argument that sets activation checkpointing to ``model.gradient_checkpointing``.

    TRL's configs turn it on by default (``gradient_checkpointing=True``), which recomputes every
    forward pass for memory a 135M model on a CPU does not need; transformers 5 renamed the argument
    (the old name warns), so the name this version reads is passed.
    """
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": enabled}


def build_trainer(model: Any, tok: Any, pairs: list[dict[str, Any]], cfg: ExperimentConfig, output_dir: str,
                  seed: int = 0, show_progress: bool = False, device: str = "cpu") -> tuple[Any, Any]:
    """(trainer, model being trained): the TRL trainer for ``eva.loss`` with its reference set as above."""
    eva = cfg.eva
    common = dict(output_dir=output_dir, per_device_train_batch_size=eva.batch_size, num_train_epochs=eva.epochs,
                  learning_rate=eva.lr, beta=eva.beta, logging_steps=1, save_strategy="no", report_to=[],
                  use_cpu=(device == "cpu"), max_length=cfg.model.max_length, disable_tqdm=not show_progress,
                  seed=seed, data_seed=seed, dataloader_num_workers=0, bf16=False, fp16=False,
                  **checkpointing_arg(cfg.model.gradient_checkpointing))
    ds = preference_dataset(pairs)
    lora = cfg.model.lora.enabled
    if lora:
        model = add_lora(model, cfg.model.lora)
    if eva.loss == "simpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        args = CPOConfig(loss_type="simpo", cpo_alpha=0.0, simpo_gamma=eva.simpo_gamma, **common)
        return CPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok), model
    if eva.loss == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        # ORPO's beta is the weight (lambda) of its odds-ratio term; it has no reference model
        args = ORPOConfig(**common)
        return ORPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok), model
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(loss_type=[LOSS_TYPES[eva.loss]], **common)
    ref = None
    if not lora:
        ref = copy.deepcopy(model).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
    return DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=ds, processing_class=tok), model


def preference_step(model: Any, tok: Any, pairs: list[dict[str, Any]], cfg: ExperimentConfig, seed: int = 0,
                    show_progress: bool = False, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """Train on ``pairs``; return the new solver (LoRA merged) and its metrics (loss curve, reward accuracy)."""

    metrics: dict[str, Any] = {"loss": cfg.eva.loss, "beta": cfg.eva.beta, "pairs": len(pairs), "steps": 0}
    if not pairs:
        metrics["skipped"] = "no preference pairs"
        return model, metrics
    import datasets
    from transformers.trainer_callback import PrinterCallback

    tmp = tempfile.mkdtemp(prefix="safeselect-eva-")
    t0 = time.perf_counter()
    bars = datasets.is_progress_bar_enabled()
    try:
        if not show_progress:
            datasets.disable_progress_bars()
        trainer, trained = build_trainer(model, tok, pairs, cfg, tmp, seed=seed, show_progress=show_progress,
                                         device=device)
        if not show_progress:  # with tqdm off, transformers prints every log dict instead
            trainer.remove_callback(PrinterCallback)
        trainer.train()
        logs = [h for h in trainer.state.log_history if "loss" in h]
        metrics.update(
            steps=int(trainer.state.global_step),
            train_s=time.perf_counter() - t0,
            losses=[float(h["loss"]) for h in logs],
            reward_accuracies=[float(h["rewards/accuracies"]) for h in logs if "rewards/accuracies" in h],
            reward_margins=[float(h["rewards/margins"]) for h in logs if "rewards/margins" in h],
        )
        if logs:
            metrics["final_loss"] = metrics["losses"][-1]
        new_model = merge_lora(trained)  # the PeftModel TRL trained in place (LoRA on), else the model itself
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if bars:
            datasets.enable_progress_bars()
    new_model.eval()
    return new_model, metrics
