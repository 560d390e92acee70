"""The worker rule of `ablate` and `run` over seeds: single-threaded workers, one per core, bounded by runs and memory."""

from __future__ import annotations

from safeselect.core.workers import plan_workers


def test_plan_workers_rule():
    assert plan_workers(10, cores=2, gpu=False, mem_gb=16) == (2, 1)
    assert plan_workers(1, cores=2, gpu=False, mem_gb=16) == (1, 2)
    assert plan_workers(10, cores=8, gpu=False, mem_gb=10) == (3, 2)  # one per 3 GB, the cores left as threads
    assert plan_workers(10, cores=8, gpu=False, mem_gb=1) == (1, 8)
    assert plan_workers(3, cores=8, gpu=False, mem_gb=64) == (3, 2)  # the demo's 3 cells
    assert plan_workers(10, cores=16, gpu=True, mem_gb=128) == (1, 16)
