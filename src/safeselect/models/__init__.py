"""Load a model + tokenizer by name (registered), HF id or local path; add LoRA adapters with peft."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safeselect.config.schema import LoraConfig, ModelConfig
from safeselect.errors import UserError, suggest
from safeselect.models.saved import load_saved, peft_quiet, save_model  # noqa: F401 - re-exported: models.save_model
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
        path = resolve_model(name)
        if path.is_dir() and ((path / "adapter_config.json").exists() or (path / "model" / "adapter_config.json").exists()):
            model, tok = load_saved(path)  # a run's saved adapter (or its run folder), merged onto its base
        else:
            model, tok = _load_pretrained(str(path))
    model = model.to(dtype=dtype, device=resolve_device(device))
    _ensure_pad(tok, model)
    if model_cfg is not None:
        apply_chat_settings(tok, model_cfg)
    if model_cfg is not None and model_cfg.gradient_checkpointing:
        # transformers 5 renamed the switch; the old name still works there but warns on every load.
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
        model.config.use_cache = False
    return model, tok


def hf_cache_dir() -> Path:
    """The local HF hub cache, read at call time: $HF_HUB_CACHE, else $HF_HOME/hub, else huggingface_hub's default."""
    import os

    if os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ.get("HF_HUB_CACHE") or os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def from_hf_cache(repo_id: str, repo_type: str = "model") -> Path | None:
    """The snapshot folder of ``repo_id`` (``gpt2``, ``org/name``) in the local HF cache, or None.

    Offline by design (HF_HUB_OFFLINE semantics): nothing is downloaded at run time.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, repo_type=repo_type, cache_dir=hf_cache_dir(), local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError, ValueError):
        return None


def resolve_model(name: str) -> Path:
    """A local folder for a model that is not registered: an existing path, or an HF id from the local cache.

    HF ids load with or without a namespace, as ``from_pretrained`` takes them (``gpt2``,
    ``HuggingFaceTB/SmolLM2-135M-Instruct``). A name found nowhere raises UserError naming where it looked.
    """
    path = Path(name).expanduser()
    if path.exists():
        return path
    snap = None if name.startswith((".", "/", "~")) else from_hf_cache(name)
    if snap is not None:
        return snap
    hint = _did_you_mean(name)
    if name.lower().startswith("huggingfacetb/smollm2-135m"):
        hint = " (the embedded copy of SmolLM2-135M-Instruct is the registered name 'smollm2-135m')"
    raise UserError(f"unknown model '{name}': not a registered name{hint}, an existing path, nor in the local HF "
                    f"cache ({hf_cache_dir()}; download it once with `hf download {name}` where there is network)")


def apply_chat_settings(tok: Any, model_cfg: ModelConfig) -> None:
    """``model.chat_template`` (a Jinja file or string) replaces the tokenizer's template, and
    ``model.system_prompt`` is put first in every conversation that does not start with a system message.

    Both live in the tokenizer's template, so training, generation and every selector see the same chat,
    and a saved tokenizer keeps them.
    """
    template = model_cfg.chat_template
    if template:
        p = Path(template).expanduser()
        if "{%" not in template and "{{" not in template:
            if not p.is_file():
                raise UserError(f"model.chat_template={template!r}: neither a file nor a Jinja template")
            template = p.read_text(encoding="utf-8")
        tok.chat_template = template
    if model_cfg.system_prompt:
        if not getattr(tok, "chat_template", None):
            raise UserError("model.system_prompt needs a chat template (the tokenizer has none: set model.chat_template)")
        tok.chat_template = with_system_prompt(tok.chat_template, model_cfg.system_prompt)


def with_system_prompt(template: str, system_prompt: str) -> str:
    """A chat template that renders ``system_prompt`` as the first message when the conversation has none."""
    import json

    # A JSON string literal is a valid Jinja string literal (same quotes and escapes).
    lit = json.dumps(system_prompt)
    head = (f"{_SYSTEM_MARK}{{%- if messages | length == 0 or messages[0]['role'] != 'system' -%}}"
            f"{{%- set messages = [{{'role': 'system', 'content': {lit}}}] + messages -%}}"
            f"{{%- endif -%}}{_SYSTEM_END}")
    # A tokenizer saved with a system prompt (the cached aligned model) gets it replaced, not stacked.
    if template.startswith(_SYSTEM_MARK) and _SYSTEM_END in template:
        template = template.split(_SYSTEM_END, 1)[1]
    return head + template


_SYSTEM_MARK = "{#- safeselect: model.system_prompt -#}"
_SYSTEM_END = "{#- end of model.system_prompt -#}"


def load_tokenizer(name: str, model_cfg: ModelConfig | None = None) -> Any:
    """Just the tokenizer (cheap): registered models may expose ``tokenizer()`` next to ``load()``;
    ``model_cfg`` applies ``model.chat_template`` and ``model.system_prompt``."""
    tok = _load_tokenizer(name)
    if model_cfg is not None:
        apply_chat_settings(tok, model_cfg)
    return tok


def _load_tokenizer(name: str) -> Any:
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
            tok = AutoTokenizer.from_pretrained(str(resolve_model(name)))
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
    with peft_quiet():
        return get_peft_model(model, pcfg, adapter_name=adapter_name)


def merge_lora(model: Any) -> Any:
    """Fold LoRA weights into the base weights (for caching an aligned model as plain safetensors)."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model
