"""Worker for tests/test_seal_distributed.py (not a test module itself).

``torchrun --nproc_per_node 2 tests/seal_dist_worker.py OUT`` runs, on every process (gloo, CPU):
one SEAL iteration whose model and theta_hat gradients are compared with a one-process
computation of the whole batch's objective, then two epochs of both algorithms; it saves
the per-process logits and gradient errors to OUT for the test to compare across processes
and with a single-process run (:func:`train`).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def rows() -> tuple[list, list]:
    from safeselect.core.rows import Row

    rng = np.random.default_rng(0)
    safe_words = ["sorry", "i", "cannot", "help", "with", "that", "request", "here", "is", "a", "good",
                  "answer", "instead"]
    harm_words = ["hack", "steal", "weapon", "bomb", "drug", "scam", "password", "kill"]
    prompt_words = ["how", "do", "i", "make", "this", "work", "what", "is", "the", "answer"]
    safe = [Row(f"s{k}", " ".join(rng.choice(prompt_words, 4)), " ".join(rng.choice(safe_words, 5)))
            for k in range(8)]
    task = [Row(f"t{k}", " ".join(rng.choice(prompt_words, 4)),
                " ".join(rng.choice(harm_words if k % 3 == 0 else safe_words, 5)), harmful=k % 3 == 0)
            for k in range(14)]
    return task, safe


def seal_config(algorithm: str) -> Any:
    from safeselect.config.schema import GammaConfig, SealConfig

    # batch 4 over 14 rows: the last batch of an epoch is short; micro-batches of 1 exercise no_sync.
    return SealConfig(algorithm=algorithm, epochs=2, lr=1e-2, batch_size=4, micro_batch_size=1, selector_lr=5e-2,
                      gamma=GammaConfig(schedule="constant", value=0.5))


def train(algorithm: str, acc: Any) -> np.ndarray:
    from safeselect.config.schema import LoraConfig
    from safeselect.models import load_model
    from safeselect.selection.seal import train_selector

    task, safe = rows()
    model, tok = load_model("tiny-llama")
    run = train_selector(model, tok, task, safe, seal_config(algorithm), lora_cfg=LoraConfig(r=4, alpha=8),
                         max_length=48, seed=0, max_grad_norm=0.0, accelerator=acc, show_progress=False)
    return run.logits


def gradient_errors(acc: Any) -> dict[str, float]:
    """Max |gradient - whole-batch reference| of theta's and theta_hat's first step, on this process."""
    import torch

    from safeselect.config.schema import LoraConfig
    from safeselect.models import load_model
    from safeselect.selection.seal import SealTrainer, model_objective
    from safeselect.training.encode import collate
    from safeselect.training.losses import per_row_loss

    task, safe = rows()
    model, tok = load_model("tiny-llama")
    tr = SealTrainer(model, tok, task, safe, seal_config("auxiliary"), lora_cfg=LoraConfig(r=4, alpha=8),
                     max_length=48, max_grad_norm=0.0, accelerator=acc)
    ref = copy.deepcopy(tr.core)
    got: dict[str, Any] = {}
    for name, opt, params in (("model", tr.opt, tr.main_params), ("aux", tr.aux_opt, tr.aux_params)):
        def capture(*a: Any, _name: str = name, _params: list = params, _step: Any = opt.step, **k: Any) -> Any:
            got[_name] = torch.cat([p.grad.reshape(-1).clone() for p in _params])
            return _step(*a, **k)
        opt.step = capture
    ti, si = np.array([0, 1, 2, 3]), np.array([4, 5, 6, 7])
    tr.iteration(ti, si, 0.5)
    pad = tok.pad_token_id
    ref.set_adapter("default")
    ls = per_row_loss(ref, collate([tr.safe_items[i] for i in si], pad))
    lt = per_row_loss(ref, collate([tr.task_items[i] for i in ti], pad))
    model_objective(ls, lt, torch.ones(4), 1 / 1.5).backward()
    g_model = torch.cat([p.grad.reshape(-1) for n, p in ref.named_parameters() if ".default." in n])
    ref.set_adapter("seal_aux")
    (per_row_loss(ref, collate([tr.task_items[i] for i in ti], pad)).mean()).backward()  # w = 1 at the start
    g_aux = torch.cat([p.grad.reshape(-1) for n, p in ref.named_parameters() if ".seal_aux." in n])
    return {"model": float((got["model"] - g_model).abs().max()), "aux": float((got["aux"] - g_aux).abs().max()),
            "model_norm": float(g_model.norm()), "aux_norm": float(g_aux.norm())}


def main(out: str) -> None:
    import torch

    from safeselect.training.sft import make_accelerator

    torch.set_num_threads(1)
    acc = make_accelerator(cpu=True)
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    tag = f"{acc.num_processes}_{acc.process_index}"
    (dest / f"grad_{tag}.json").write_text(json.dumps(gradient_errors(acc)))
    for algorithm in ("memory_efficient", "auxiliary"):
        np.save(dest / f"logits_{algorithm}_{tag}.npy", train(algorithm, acc))


if __name__ == "__main__":
    main(sys.argv[1])
