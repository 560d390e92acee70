"""Worker processes for independent cells: how many, with how many torch threads, and a pool that dies with
its parent.

Shared by ``safeselect ablate`` (one process per run of a plan) and ``safeselect run`` with ``seeds`` (one
process per (seed, method) cell). The rule of :func:`plan_workers` was measured by ``benchmarks/bench_workers.py``
(docs/results.md, "Workers per cell").
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor


def plan_workers(n_runs: int, cores: int | None = None, gpu: bool | None = None,
                 mem_gb: float | None = None) -> tuple[int, int]:
    """(worker processes, torch threads per worker) that finish the most cells per hour here.

    The rule, from ``benchmarks/bench_workers.py`` (docs/results.md): on a CPU machine one
    single-threaded worker per core (2 workers x 1 thread finished tiny cells faster than
    1 worker x 2 threads: a cell spends much of its time in Python and small ops that a second
    thread does not speed up, and OpenMP threads spin-wait when the cores are shared), at most
    one per run and one per 3 GB of memory (a SmolLM2 cell peaks near 2.5 GB); the cores fewer runs or
    less memory leave over are shared out as threads (a demo's 3 cells on 8 cores: 3 workers x 2
    threads, not 5 idle cores); with a GPU one worker owning it, with every core as threads.
    """
    import torch

    cores = cores or len(os.sched_getaffinity(0))
    gpu = torch.cuda.is_available() if gpu is None else gpu
    if gpu:
        return 1, cores
    workers = max(1, min(cores, n_runs, memory_lanes(mem_gb)))
    return workers, max(1, cores // workers)


def memory_lanes(mem_gb: float | None = None) -> int:
    """How many SmolLM2 cells this machine's memory holds at once (a cell peaks near 2.5 GB: 3 GB each)."""
    if mem_gb is None:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return int(mem_gb // 3)


@contextlib.contextmanager
def worker_threads(threads: int | None) -> Iterator[None]:
    """Within the block, processes spawned from here start torch with ``threads`` threads (None: unchanged).

    Spawned workers import torch afresh and take their thread count from the environment."""
    if not threads:
        yield
        return
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved


def die_with_parent(parent_pid: int) -> None:
    """Worker initialiser: end this worker when the process that started it dies.

    Linux: the kernel sends SIGKILL on the parent's death (``PR_SET_PDEATHSIG``). Everywhere, and in case
    the parent died before that was set: a daemon thread polls the parent pid and ends this process.
    A killed worker leaves its run incomplete; the resumed command runs it again.
    """
    import signal
    import threading

    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` fresh processes, one task each (memory peaks are per task, and a crash or a leak
    cannot spill into the next), that end when this process does."""
    import multiprocessing

    # spawn, not fork: the parent may hold threads (tqdm, torch) that fork would copy mid-lock.
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               max_tasks_per_child=1, initializer=die_with_parent, initargs=(os.getpid(),))
