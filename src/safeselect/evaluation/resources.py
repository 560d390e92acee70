"""Resource meters: wall time per stage and peak memory (accelerator if present, else process RSS)."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Meter:
    """Collects ``resources.<stage>_s`` timings and the peak memory of the process."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0

    def metrics(self) -> dict[str, float]:
        out = {f"resources.{k}_s": round(v, 3) for k, v in self.times.items()}
        out["resources.peak_memory_mb"] = round(peak_memory_mb(), 1)
        gpu = peak_gpu_memory_mb()
        if gpu is not None:
            out["resources.peak_gpu_memory_mb"] = round(gpu, 1)
        return out


def peak_memory_mb() -> float:
    """Peak resident memory of this process (and waited-for children) in MB.

    On GPU machines the accelerator figure is reported separately; on CPU this
    is the honest figure. It is a per-process peak: compare runs made in
    separate processes (the ablation runner does).
    """
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 / (1024 * 1024) if sys.platform == "darwin" else 1 / 1024  # bytes on macOS, KB on Linux
    return ru * scale


def peak_gpu_memory_mb() -> float | None:
    if "torch" not in sys.modules:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**20
