"""Length-grouped batches: rows of similar length share a batch, so little compute goes to padding.

Why: a chat row's forward and backward pass cost grows with the longest row of its batch; on the
built-in benchmark random batches of 8 are about 20% padding, length-grouped ones about 2%
(docs/results.md). The grouping keeps the data order random where it matters: rows are shuffled,
cut into mega-batches of ``mega`` batches, each mega-batch is sorted by length and cut into batches,
and the batches are shuffled again (the scheme of HF's ``LengthGroupedSampler``). Every row is
still seen once per epoch; what changes is which rows share a step.

:func:`padding_groups` saves padding without changing the batches: one batch's rows run as a few
sub-batches of similar length whose gradients add up to the batch's (training on one CPU process).
:func:`length_chunks` cuts rows whose order does not matter (a sum over a step's rows, scoring) into
passes of similar length; :func:`in_order` puts their per-row results back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any


def length_grouped(order: Sequence[int], lengths: Sequence[int], batch_size: int,
                   shuffle: Callable[[int], Sequence[int]], mega: int = 50) -> list[list[int]]:
    """Batches of row indices from a shuffled ``order``; ``shuffle(k)`` gives a seeded permutation of
    ``range(k)`` that orders the batches (so the longest batch is not always first)."""
    span = batch_size * mega
    batches: list[list[int]] = []
    for s in range(0, len(order), span):
        part = sorted(order[s:s + span], key=lambda i: -lengths[i])  # stable: ties keep the shuffled order
        batches += [list(part[k:k + batch_size]) for k in range(0, len(part), batch_size)]
    return [batches[i] for i in shuffle(len(batches))]


class LengthGroupedSampler:
    """A torch ``batch_sampler`` of length-grouped batches drawn from ``generator`` (one draw per epoch,
    so a saved generator state replays an epoch's order, as with ``shuffle=True``)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, generator: Any) -> None:
        self.lengths, self.batch_size, self.generator = list(lengths), batch_size, generator

    def __iter__(self) -> Iterator[list[int]]:
        import torch

        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        yield from length_grouped(order, self.lengths, self.batch_size,
                                  lambda k: torch.randperm(k, generator=self.generator).tolist())

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)


def padding_groups(lengths: Sequence[int], overhead: float) -> list[list[int]]:
    """Positions of one batch's rows cut into sub-batches that waste the least compute on padding.

    A sub-batch costs ``rows x its longest row`` token positions plus ``overhead`` (one more forward
    and backward pass: the shared system prompt run again, the per-call work of every layer). Sorted by
    length, an optimal cut is contiguous, so a dynamic programme over the sorted rows finds it exactly.
    Each group lists its positions in batch order; the groups come shortest first.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    n = len(order)
    best = [0.0] + [math.inf] * n  # best[j]: least cost of the j shortest rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        for i in range(j):
            cost = best[i] + (j - i) * longest + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(sorted(order[cut[j]:j]))
        j = cut[j]
    return groups[::-1]


def length_chunks(items: Sequence[dict[str, Any]], size: int) -> list[list[int]]:
    """Positions of ``items`` (encoded rows) in chunks of ``size`` rows of similar length: sorted by
    length, ties in item order, so each chunk pads little."""
    order = sorted(range(len(items)), key=lambda i: (len(items[i]["input_ids"]), i))
    return [order[s:s + size] for s in range(0, len(order), size)]


def in_order(parts: list[Any], chunks: list[list[int]]) -> Any:
    """The per-row values of ``parts`` (one tensor per chunk of :func:`length_chunks`) in the items' order."""
    import torch

    if not parts:
        return torch.zeros(0)
    flat = torch.cat(parts)
    out = torch.empty_like(flat)
    out[torch.as_tensor([i for c in chunks for i in c], device=flat.device)] = flat
    return out
