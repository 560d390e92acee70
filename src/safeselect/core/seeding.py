"""Seeds per stage: each stage of a run draws from its own generator, seeded from (seed, stage name).

A stage's random numbers then do not depend on which stages ran before it in this process (an
alignment trained in-process, or read from the cache; a selector run by ``select`` or by ``run``), so a
killed run resumes to the same numbers as an uninterrupted one. ``isolated_rng`` keeps a side job (the
cached alignment) from consuming the caller's random numbers at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def stage_seed(seed: int, stage: str) -> int:
    """A 32-bit seed for ``stage`` derived from ``seed``: stable across processes and Python versions."""
    digest = hashlib.sha256(f"{int(seed)}/{stage}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and every GPU)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too


def seed_stage(seed: int, stage: str) -> int:
    """Seed everything for ``stage`` from ``seed``; returns the derived seed."""
    s = stage_seed(seed, stage)
    seed_everything(s)
    return s


@contextmanager
def isolated_rng() -> Iterator[None]:
    """Run a block without changing the global random state seen after it (Python, numpy, torch CPU/CUDA)."""
    import random

    import numpy as np
    import torch

    state: dict[str, Any] = {"py": random.getstate(), "np": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        yield
    finally:
        random.setstate(state["py"])
        np.random.set_state(state["np"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state:
            torch.cuda.set_rng_state_all(state["cuda"])
