"""Resumable training state: accelerate ``save_state`` / ``load_state`` every N optimiser steps.

One folder per training stage (``RUN/checkpoints/finetune``, ``RUN/checkpoints/seal``)
holds the latest ``step-N/``: accelerate's files (the prepared model and optimisers, every
process's RNG states) plus ``trainer.json`` and ``trainer.safetensors``, the loop's own
position (step, epoch, batch within the epoch, losses so far, scheduler and data-order
generator state). Loaded with safetensors / ``weights_only`` loads only, never pickles.

A checkpoint names the ``key`` of what it trains (a hash of the stage's settings and rows):
one with another key is stale (the config changed) and is ignored, so a resumed run never
continues a different training. A step folder appears by rename once complete, so a run
killed while saving resumes from the previous one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

STATE_JSON = "trainer.json"
STATE_TENSORS = "trainer.safetensors"


class Checkpointer:
    """Saves and restores one stage's state through ``acc`` (all processes call every method)."""

    def __init__(self, root: str | Path | None, every: int, key: str, acc: Any) -> None:
        self.root = Path(root) if root is not None else None
        self.every = int(every) if root is not None else 0
        self.key = key
        self.acc = acc
        if self.enabled:
            acc.register_save_state_pre_hook(self._trained_only)

    def _trained_only(self, models: list[Any], weights: list[dict[str, Any]], _dir: str) -> None:
        """Keep only the weights training changes (accelerate hook, before it writes ``model.safetensors``).

        Frozen weights (the base under LoRA) are not training state: the resumed run loads them from
        the same base. A SmolLM2 checkpoint is then the adapter's megabytes, not the model's 540 MB.
        Weights an optimiser steps by hand (SEAL's theta_hat adapter) count as trained.
        """
        stepped = {id(p) for opt in self.acc._optimizers for g in opt.param_groups for p in g["params"]}
        for i, model in enumerate(models[: len(weights)]):
            keep = {n for n, p in model.named_parameters() if p.requires_grad or id(p) in stepped}
            weights[i] = {k: v for k, v in weights[i].items() if k in keep}

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def due(self, step: int) -> bool:
        return self.enabled and step > 0 and step % self.every == 0

    def latest(self) -> Path | None:
        """The newest complete step folder of this key, or None."""
        if self.root is None or not self.root.is_dir():
            return None
        best: tuple[int, Path] | None = None
        for d in self.root.glob("step-*"):
            meta = d / STATE_JSON
            if not d.is_dir() or not meta.exists():
                continue
            try:
                info = json.loads(meta.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if info.get("key") == self.key and (best is None or info["step"] > best[0]):
                best = (int(info["step"]), d)
        return best[1] if best else None

    def save(self, step: int, state: dict[str, Any], tensors: dict[str, Any] | None = None) -> None:
        """Write ``step-<step>/`` (accelerate state + the loop's ``state``), then drop older step folders."""
        if not self.enabled:
            return
        from safetensors.torch import save_file

        assert self.root is not None
        final = self.root / f"step-{step}"
        tmp = self.root / f".step-{step}.tmp"
        if self.acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.acc.wait_for_everyone()
        self.acc.save_state(str(tmp))  # every process: RNG states per process, weights on the main one
        # save_state ends without a barrier: the main process must not rename the folder while another
        # is still writing its RNG state into it.
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            if tensors:
                save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / STATE_TENSORS))
            (tmp / STATE_JSON).write_text(json.dumps({"key": self.key, "step": step, **state}))
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            for d in self.root.glob("step-*"):
                if d != final:
                    shutil.rmtree(d, ignore_errors=True)
        self.acc.wait_for_everyone()

    def load(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Restore the latest checkpoint into the prepared objects; return (loop state, tensors) or None."""
        if not self.enabled:
            return None
        d = self.latest()
        if d is None:
            return None
        from safetensors.torch import load_file

        self.acc.load_state(str(d), strict=False)  # the frozen weights are not in it (see _trained_only)
        state = json.loads((d / STATE_JSON).read_text())
        tensors = load_file(str(d / STATE_TENSORS)) if (d / STATE_TENSORS).exists() else {}
        return state, tensors


def clear(root: str | Path) -> None:
    """Remove a run's checkpoints (the run completed)."""
    shutil.rmtree(root, ignore_errors=True)


def generator_state(gen: Any) -> list[int]:
    """A torch.Generator's state as a JSON list (it is a uint8 tensor)."""
    return gen.get_state().tolist()


def set_generator_state(gen: Any, state: list[int]) -> None:
    import torch

    gen.set_state(torch.tensor(state, dtype=torch.uint8))
