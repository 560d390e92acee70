"""Which training precision ``mixed_precision=auto`` means on this machine.

bfloat16 autocast is the large speed lever of fine-tuning where the hardware has bfloat16 units
(GPUs from Ampere on; CPUs with AMX-BF16 or AVX-512 BF16: 1.6x a float32 packed step, 2.4x the
pre-#13 step, with no detectable change end to end over 3 seeds, docs/results.md), and a large
loss where it does not (about 30x slower matrix products on an AVX2-only CPU). ``auto`` therefore
resolves once, when a config is built, to ``bf16`` or ``no`` for the device the run will use, and
the run folder's config.yaml records the resolved value: a cell made on another kind of machine
then differs in config and is never mixed into the same table.
"""

from __future__ import annotations

import functools
from pathlib import Path

# CPU flags (Linux /proc/cpuinfo names) of units that run bfloat16 products natively.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them; empty where /proc/cpuinfo is not readable."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU has native bfloat16 products (AMX-BF16 or AVX-512 BF16)."""
    return any(f in (cpu_flags() if flags is None else flags) for f in BF16_CPU_FLAGS)


def resolve_mixed_precision(value: str, device: str) -> str:
    """``value`` itself unless it is ``auto``; then ``bf16`` where ``device`` (auto / cpu / cuda) has native
    bfloat16 units, else ``no``."""
    if value != "auto":
        return value
    if device == "cpu":
        return "bf16" if cpu_has_bf16() else "no"
    import torch

    if device == "cuda" or torch.cuda.is_available():
        # compute capability 8.0 (Ampere) and later; earlier GPUs emulate bf16 slowly.
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False) \
            else "no"
    return "bf16" if cpu_has_bf16() else "no"
