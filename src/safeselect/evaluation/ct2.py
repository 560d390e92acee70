"""Greedy evaluation decoding with CTranslate2: a compiled CPU/GPU inference engine installed as a wheel.

Why: HF ``generate`` in eager float32 PyTorch spends most of a small model's
decoding step in Python and per-op dispatch; CTranslate2 runs the same weights
in fused C++ kernels, sorts prompts by length and drops finished rows from the
batch, which made evaluation several times faster on the 2-core CPU machine
(docs/results.md, ``benchmarks/bench_cell.py``). It is an evaluation backend
only: training and sampling (self-play) stay in PyTorch.

The model is converted in memory, once per :func:`make_generate` call, from a
copy (a PEFT model's LoRA merged into it; the caller's model is left as it is), the
CTranslate2 converter reads the weights, and the converted model is written to
a temporary folder that is deleted when the generator is released.
``compute_type`` ``float32`` reproduces HF's greedy replies up to float
rounding (measured agreement in docs/results.md); ``int8`` quantises weights
(faster, lower precision: measured by judge-verdict agreement).
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import tempfile
import types
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from safeselect.errors import UserError
from safeselect.training.encode import prompt_ids

# The Hugging Face config classes CTranslate2's converter knows (a subset that covers the models
# this project ships or documents); anything else raises a clear error instead of a converter trace.
SUPPORTED = ("LlamaConfig", "MistralConfig", "Qwen2Config", "GPT2Config", "GemmaConfig", "Gemma2Config",
             "Phi3Config", "FalconConfig", "GPTNeoXConfig", "OPTConfig", "Qwen3Config")


def supports(model: Any) -> bool:
    """Whether CTranslate2 can convert ``model`` (plain or PEFT-wrapped) and the wheel is installed."""
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return False
    return type(_base_config(model)).__name__ in SUPPORTED


def _base_config(model: Any) -> Any:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.config


def convert(model: Any, tok: Any, compute_type: str = "float32", device: str = "cpu",
            threads: int | None = None) -> Any:
    """A ``ctranslate2.Generator`` holding ``model``'s weights (LoRA merged on a copy)."""
    import ctranslate2
    import torch
    from ctranslate2.converters import TransformersConverter

    if not supports(model):
        raise UserError(f"eval.backend=ctranslate2 cannot convert a {type(_base_config(model)).__name__} model "
                        f"(supported: {', '.join(SUPPORTED)}); use eval.backend=hf")
    # A copy: the converter deletes each layer's modules as it reads them (to bound memory).
    plain = copy.deepcopy(model)
    plain = plain.merge_and_unload() if hasattr(plain, "merge_and_unload") else plain
    plain = plain.float() if plain.dtype != torch.float32 else plain  # the converter quantises from float32
    folder = tempfile.mkdtemp(prefix="safeselect-ct2-")
    try:
        plain.config.save_pretrained(folder)  # the converter reads the config class from a folder

        class _InMemory(TransformersConverter):
            # The weights are already in memory: no second load from disk, no hub.
            def load_model(self, model_class: Any, name: str, **kwargs: Any) -> Any:
                return plain

            def load_tokenizer(self, tokenizer_class: Any, name: str, **kwargs: Any) -> Any:
                return tok

        with torch.no_grad(), _no_gc_per_layer():
            _InMemory(folder).convert(f"{folder}/model", quantization=compute_type, force=True)
        _fill_special_tokens(f"{folder}/model/config.json", tok)
        gen = ctranslate2.Generator(f"{folder}/model", device=device, compute_type=compute_type,
                                    intra_threads=threads or torch.get_num_threads(), inter_threads=1)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    # The weights are loaded into the generator; the folder is only needed until then, but keeping it
    # to the generator's end costs nothing and keeps a failed load debuggable.
    weakref.finalize(gen, shutil.rmtree, folder, True)
    return gen


@contextlib.contextmanager
def _no_gc_per_layer() -> Iterator[None]:
    """The converter runs ``gc.collect()`` after every layer, which cost 2-3 s each here (a process holding
    torch + transformers has many objects): 30 layers of SmolLM2 took longer than decoding. We hold a
    copy whose memory is freed when it goes out of scope, so skip those collections."""
    from ctranslate2.converters import transformers as conv

    real = conv.gc
    conv.gc = types.SimpleNamespace(collect=lambda *a, **k: 0)
    try:
        yield
    finally:
        conv.gc = real


def _fill_special_tokens(path: str, tok: Any) -> None:
    """CTranslate2 refuses a null bos/unk token (tokenizers without one, like tiny-llama's): use eos."""
    import json
    from pathlib import Path

    conf = json.loads(Path(path).read_text())
    for key in ("bos_token", "eos_token", "unk_token"):
        if conf.get(key) is None:
            conf[key] = tok.eos_token
    with open(path, "w") as f:
        json.dump(conf, f)


def shared_prefix(tokens: list[list[str]]) -> int:
    """Length of the token prefix every prompt starts with (the chat template's system prompt), keeping at
    least one token of each prompt outside it (CTranslate2 needs a non-empty prompt after the static one)."""
    if not tokens:
        return 0
    first, n = tokens[0], min(len(t) for t in tokens) - 1
    for t in tokens[1:]:
        n = next((i for i in range(n) if t[i] != first[i]), n)
    return max(n, 0)


def make_generate(model: Any, tok: Any, compute_type: str = "float32", device: str = "cpu",
                  batch_size: int | None = None) -> Callable[..., list[str]]:
    """A drop-in for :func:`safeselect.evaluation.generate.generate` (greedy only) backed by one conversion.

    The conversion happens on the first call, so building the function costs nothing when no set is
    evaluated. The returned function ignores its ``model`` argument: it decodes the model given here.
    ``batch_size`` (``eval.ct2_batch_size``) replaces the caller's batch size when given: CTranslate2 drops
    finished rows from a batch, so it gains from larger batches than HF ``generate``. The token prefix every
    prompt of a call shares (the system prompt of the chat template) is decoded once and cached
    (``static_prompt``); replies are unchanged (docs/results.md).
    """
    ct2_batch = batch_size
    state: dict[str, Any] = {}

    def generate(_model: Any, _tok: Any, prompts: list[Any], max_new_tokens: int = 48, batch_size: int = 16,
                 do_sample: bool = False, num_return_sequences: int = 1, desc: str = "generate", seed: int = 0,
                 show_progress: bool = True, **_: Any) -> list[str]:
        from tqdm.auto import tqdm

        if do_sample or num_return_sequences != 1:
            raise UserError("eval.backend=ctranslate2 decodes greedily only (sampling stays with the hf backend)")
        if not prompts:
            return []
        if "gen" not in state:
            state["gen"] = convert(model, tok, compute_type, device)
        gen = state["gen"]
        tokens = [tok.convert_ids_to_tokens(prompt_ids(tok, p)) for p in prompts]
        batch_size = ct2_batch or batch_size
        cut = shared_prefix(tokens)
        static = {"static_prompt": tokens[0][:cut], "cache_static_prompt": True} if cut else {}
        # Sorted by length so each batch pads little (the same grouping the hf backend uses).
        order = sorted(range(len(prompts)), key=lambda i: len(tokens[i]))
        out: list[str] = [""] * len(prompts)
        for s in tqdm(range(0, len(order), batch_size), desc=desc, disable=not show_progress, leave=False):
            idx = order[s:s + batch_size]
            res = gen.generate_batch([tokens[i][cut:] for i in idx], max_length=max_new_tokens, sampling_topk=1,
                                     beam_size=1, include_prompt_in_result=False, end_token=tok.eos_token, **static)
            for i, r in zip(idx, res, strict=True):
                out[i] = tok.decode(r.sequences_ids[0], skip_special_tokens=True).strip()
        return out

    return generate
