"""The model a run produced, kept in ``RUN/model/``: save it, load it back, merge it for export.

With LoRA (the default) ``RUN/model/`` is a PEFT adapter folder (``adapter_config.json``,
``adapter_model.safetensors``) with the tokenizer and its chat template, so
``peft.AutoPeftModelForCausalLM.from_pretrained("RUN/model")`` loads it directly: the
adapter names its base by a folder that loads as saved (the cached aligned model, the
converted SmolLM2, a local model folder) or by the HF id given. A base built in-process
(``tiny-llama``) has no such folder, so it is saved once beside the adapter, in
``RUN/model/base/``. Without LoRA the folder holds the whole fine-tuned model.

``merged/`` (``finetune.merge=true``, or ``safeselect export RUN --out DIR``) holds plain
safetensors weights with the adapter folded in, for ``AutoModelForCausalLM``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safeselect.errors import UserError
from safeselect.registry import registry

MODEL_DIR = "model"
BASE_DIR = "base"
MERGED_DIR = "merged"
ADAPTER_CONFIG = "adapter_config.json"


@contextmanager
def peft_quiet() -> Iterator[None]:
    """Silence the one deprecation warning peft triggers on every wrap under transformers 5.

    peft reads ``model.is_gradient_checkpointing`` (renamed ``is_activation_checkpointing``) when it
    wraps a model; the warning is about peft's code, not the user's, and fired once per cell.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.* is deprecated", category=FutureWarning)
        yield


def save_model(model: Any, tok: Any, out_dir: str | Path, keep: tuple[str, ...] = (), **save_kwargs: Any) -> None:
    """Save as safetensors + tokenizer, atomically (temp dir then rename).

    ``keep``: subfolders of an existing ``out_dir`` carried into the new one (a base saved beside an
    adapter); ``save_kwargs`` go to ``save_pretrained``.
    """
    import shutil
    import tempfile

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        model.save_pretrained(tmp, safe_serialization=True, **save_kwargs)
        tok.save_pretrained(tmp)
        for sub in keep:
            if (out / sub).is_dir():
                (out / sub).rename(tmp / sub)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).exists()


def model_dir(run_dir: str | Path) -> Path:
    """``RUN/model``, whether or not it exists yet."""
    return Path(run_dir) / MODEL_DIR


def base_reference(name: str, out: Path) -> str:
    """A name or absolute path of the base model ``name`` that ``from_pretrained`` loads as saved.

    Registered models that keep a converted copy (``convert()``) give its folder; ones built in
    process are saved into ``out/base`` once; local folders become absolute; HF ids stay as given.
    """
    import importlib

    models = registry("models")
    if name in models:
        module = importlib.import_module(models.entry(name).target.partition(":")[0])
        if hasattr(module, "convert"):
            return str(Path(module.convert()).resolve())
        base = out / BASE_DIR
        if not (base / "config.json").exists():
            model, tok = models.get(name)()
            save_model(model, tok, base)
        return str(base.resolve())
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def save_run_model(model: Any, tok: Any, out: str | Path, base: str) -> Path:
    """Save the fine-tuned ``model`` (a peft model, or a plain one under full fine-tuning) to ``out``.

    ``base``: what the adapter loads its base from (:func:`base_reference`, or an aligned folder).
    Atomic: written beside ``out`` and renamed, so a folder with ``adapter_config.json`` is whole.
    """
    if hasattr(model, "peft_config"):
        for cfg in model.peft_config.values():
            cfg.base_model_name_or_path = base
        # A base saved beside the adapter stays: the adapter points into it.
        save_model(model, tok, out, keep=(BASE_DIR,), selected_adapters=["default"])
    else:
        save_model(model, tok, out)
    return Path(out)


def load_saved(path: str | Path, dtype: str = "float32", device: str = "cpu", merge: bool = True) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a saved run model folder (adapter or whole model) or a run folder.

    An adapter is loaded onto its base; ``merge`` folds it in (faster generation, same outputs).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if (path / MODEL_DIR).is_dir():
        path = path / MODEL_DIR
    if not path.is_dir() or not (is_adapter(path) or (path / "config.json").exists()):
        raise UserError(f"{path}: no saved model (expected {ADAPTER_CONFIG} or config.json)")
    tok = AutoTokenizer.from_pretrained(str(path))
    torch_dtype = getattr(torch, dtype)
    if is_adapter(path):
        from peft import PeftModel

        base_ref = json.loads((path / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
        if not base_ref or (base_ref.startswith("/") and not Path(base_ref).exists()):
            raise UserError(f"{path}: the adapter's base model '{base_ref}' is missing (was the cache cleared? "
                            "re-run the run to rebuild it)")
        try:
            base = AutoModelForCausalLM.from_pretrained(base_ref, dtype=torch_dtype)
        except OSError as e:
            raise UserError(f"cannot load base model '{base_ref}': {str(e).splitlines()[0]}") from None
        with peft_quiet():
            model = PeftModel.from_pretrained(base, str(path))
        if merge:
            model = model.merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    model.eval()
    return model.to(device), tok


def export_merged(src: str | Path, out: str | Path) -> Path:
    """Write ``src`` (a run folder or its model folder) as plain merged safetensors weights + tokenizer."""

    model, tok = load_saved(src, merge=True)
    save_model(model, tok, out)
    return Path(out)
