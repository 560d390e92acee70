"""Load a model + tokenizer by name (registered), HF id or local path; add LoRA adapters with peft."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safeselect.config.schema import LoraConfig, ModelConfig
from safeselect.errors import UserError, suggest
from safeselect.models.saved import load_saved
from safeselect.registry import registry


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_model(name: str, model_cfg: ModelConfig | None = None, device: str = "cpu") -> tuple[Any, Any]:
    """Return ``(model, tokenizer)`` for a registered name, a local directory or an HF id (offline)."""
    import torch

    models = registry("models")
    dtype = getattr(torch, (model_cfg.dtype if model_cfg else "float32"))
    if name in models:
        model, tok = models.get(name)()
    else:
        path = Path(name).expanduser()
        if not path.exists() and ("/" not in name or name.startswith((".", "/"))):
            raise UserError(f"unknown model '{name}': not a registered name{_did_you_mean(name)} nor an existing path")
        if path.is_dir() and ((path / "adapter_config.json").exists() or (path / "model" / "adapter_config.json").exists()):
            model, tok = load_saved(path)  # a run's saved adapter (or its run folder), merged onto its base
        else:
            model, tok = _load_pretrained(str(path) if path.exists() else name)
    model = model.to(dtype=dtype, device=resolve_device(device))
    _ensure_pad(tok, model)
    if model_cfg is not None and model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return model, tok


def load_tokenizer(name: str) -> Any:
    """Just the tokenizer (cheap): registered models may expose ``tokenizer()`` next to ``load()``."""
    import importlib

    models = registry("models")
    if name in models:
        module = importlib.import_module(models.entry(name).target.partition(":")[0])
        if hasattr(module, "tokenizer"):
            tok = module.tokenizer()
        else:
            tok = models.get(name)()[1]
    else:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(name)
        except OSError as e:
            raise UserError(f"cannot load tokenizer '{name}': {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _did_you_mean(name: str) -> str:
    return suggest(name, registry("models").names())


def _load_pretrained(name_or_path: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, use_safetensors=None)
    except OSError as e:
        # Offline machines cannot reach a hub: say so in one line instead of a long traceback.
        raise UserError(f"cannot load model '{name_or_path}': {str(e).splitlines()[0]}") from None
    return model, tok


def _ensure_pad(tok: Any, model: Any) -> None:
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tok.pad_token_id
        model.generation_config.eos_token_id = tok.eos_token_id


def add_lora(model: Any, lora_cfg: LoraConfig, adapter_name: str = "default") -> Any:
    """Wrap ``model`` with a fresh LoRA adapter (peft). With ``enabled: false`` all weights stay trainable."""
    if not lora_cfg.enabled:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    targets = [t for t in lora_cfg.target_modules if t in names]
    if not targets:
        raise UserError(f"model.lora.target_modules {lora_cfg.target_modules} match no module of this model")
    pcfg = PeftLoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                          target_modules=targets, task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, pcfg, adapter_name=adapter_name)


def merge_lora(model: Any) -> Any:
    """Fold LoRA weights into the base weights (for caching an aligned model as plain safetensors)."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model
