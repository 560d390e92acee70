"""Run the runs of a plan: resumable, each in its own folder and its own process, locally or as Ray tasks.

    OUT/plan.json              the mapped plan and its grid (what ``safeselect report`` reads)
    OUT/runs/<run_id>/         one folder per run: the run function's files, plus runner.json
    OUT/results.csv, OUT/report.md, OUT/plots/*.png   written afterwards (see reporting.ablation)

A run is finished when its ``metrics.json`` says ``"complete": true``; the run
functions write that file last and atomically, so a run killed half-way is
simply run again and a finished one is never redone.

Each run gets a fresh process (a spawned worker that does one task, or a Ray
worker with ``max_calls=1``): peak-memory figures are then per run, and a crash
or a leak cannot spill into the next run. ``workers=0`` runs in this process
(for debugging; memory peaks then accumulate).

Ray: ``backend="ray"`` starts a local Ray instance, or joins a cluster with
``ray_address`` ("auto" on a cluster node, or ``ray://head:10001``). On a
cluster every node needs this package installed and ``OUT`` on a shared file
system, because each task writes its run folder itself.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safeselect.ablation.grid import Grid, RunSpec, expand, run_dir
from safeselect.ablation.plan import Plan, make_config
from safeselect.core import lock
from safeselect.core.io import atomic_write_text, write_json
from safeselect.core.redact import redact
from safeselect.core.rundir import RunDir, is_complete
from safeselect.core.workers import plan_workers, process_pool, worker_threads
from safeselect.errors import UserError
from safeselect.inputs import check_out
from safeselect.pipeline.run import run_experiment
from safeselect.registry import registry
from safeselect.selfplay.run import run_eva

# run_fn(kind, cfg, out_dir, reference_dir, show_progress) -> flat metrics or None; it writes out_dir/metrics.json.
RunFn = Callable[[str, Any, Path, "Path | None", bool], "dict[str, Any] | None"]


@dataclass
class Outcome:
    """What happened to one run."""

    run_id: str
    status: str  # done | skipped | failed
    wall_s: float = 0.0
    error: str = ""


def default_run(kind: str, cfg: Any, out_dir: Path, reference_dir: Path | None,
                show_progress: bool) -> dict[str, Any] | None:
    """eva ablations run the self-play loop, everything else the select -> fine-tune -> evaluate pipeline."""
    if kind == "eva":
        import inspect

        params = inspect.signature(run_eva).parameters
        kwargs: dict[str, Any] = {}
        if "reference_dir" in params:
            kwargs["reference_dir"] = reference_dir
        if "show_progress" in params:
            kwargs["show_progress"] = show_progress
        return run_eva(cfg, out_dir, **kwargs)

    return run_experiment(cfg, out_dir, reference_dir=reference_dir, show_progress=show_progress)


def execute_run(spec: dict[str, Any], out_dir: str, reference_dir: str | None, run_fn: RunFn | None = None,
                show_progress: bool = False, backend: str = "local") -> dict[str, Any]:
    """Run one spec unless its folder is complete. Never raises: failures come back as ``status: failed``
    with the traceback in ``runs/<id>/error.txt``. Top-level so process pools and Ray can ship it."""
    run = RunSpec.from_dict(spec)
    rd = RunDir(run_dir(out_dir, run.run_id))
    path = rd.path
    if rd.is_complete():
        return {"run_id": run.run_id, "status": "skipped", "wall_s": 0.0, "error": ""}
    t0 = time.perf_counter()
    try:
        # One writer per run folder: a run still written by another process (an earlier `ablate` whose
        # worker outlived it) is reported, never started a second time.
        lock.acquire(path)
    except UserError as e:
        return {"run_id": run.run_id, "status": "failed", "wall_s": 0.0, "error": str(e)}
    try:
        if is_complete(path):  # finished by another process since the check above
            return {"run_id": run.run_id, "status": "skipped", "wall_s": 0.0, "error": ""}
        RunDir(path).error.unlink(missing_ok=True)
        try:
            cfg = make_config(run.preset, run.overrides)
            fn = run_fn or default_run
            result = fn(run.kind, cfg, path, Path(reference_dir) if reference_dir else None, show_progress)
            if not is_complete(path):
                RunDir(path).mark_complete(result if isinstance(result, dict) else None)
        except Exception as e:  # a failed run must not stop the others
            atomic_write_text(RunDir(path).error, redact(traceback.format_exc()))
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            return {"run_id": run.run_id, "status": "failed", "wall_s": time.perf_counter() - t0,
                    "error": redact(f"{type(e).__name__}: {msg}")}
    finally:
        lock.release(path)
    wall = time.perf_counter() - t0
    write_json(path / "runner.json", {"run_id": run.run_id, "kind": run.kind, "wall_s": round(wall, 3),
                                      "host": socket.gethostname(), "pid": os.getpid(), "backend": backend,
                                      "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return {"run_id": run.run_id, "status": "done", "wall_s": wall, "error": ""}


# ----------------------------------------------------------------------------- checks


def check_components(grid: Grid) -> None:
    """Before anything runs: every selector and judge the runs name exists, and eva runs have a run function."""
    import importlib.util

    if any(r.kind == "eva" for r in grid.runs) and importlib.util.find_spec("safeselect.selfplay.run") is None:
        raise UserError("eva runs need safeselect.selfplay.run, which is not in this build")
    runs = [r for r in grid.runs if r.kind == "pipeline"]
    if not runs:
        return
    # One config build for the defaults of the preset; the runs differ only in their overrides.
    base = make_config(runs[0].preset, {})
    for run in runs:
        method = run.overrides.get("selection.method", base.selection.method)
        if method != "aligned":
            registry("selectors").entry(method)
        for j in run.overrides.get("eval.judges", base.eval.judges):
            registry("judges").entry(j)


# ----------------------------------------------------------------------------- backends


def _local(specs: list[RunSpec], out_dir: Path, reference_dir: str | None, run_fn: RunFn | None, workers: int,
           show_progress: bool, on_done: Callable[[dict[str, Any]], None], threads: int | None = None) -> None:
    if workers <= 0:
        for s in specs:
            on_done(execute_run(s.to_dict(), str(out_dir), reference_dir, run_fn, show_progress, "in-process"))
        return
    from concurrent.futures import as_completed
    from concurrent.futures.process import BrokenProcessPool

    quiet = show_progress and workers == 1
    with worker_threads(threads), process_pool(workers) as ex:
        futs = {ex.submit(execute_run, s.to_dict(), str(out_dir), reference_dir, run_fn, quiet, "local"): s
                for s in specs}
        for fut in as_completed(futs):
            try:
                on_done(fut.result())
            except BrokenProcessPool as e:  # a worker was killed (out of memory, signal): its run is not done
                on_done({"run_id": futs[fut].run_id, "status": "failed", "wall_s": 0.0,
                         "error": f"worker process died ({e})"})


def _ray(specs: list[RunSpec], out_dir: Path, reference_dir: str | None, run_fn: RunFn | None, address: str | None,
         num_cpus: float, num_gpus: float, on_done: Callable[[dict[str, Any]], None]) -> None:
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs ray: pip install 'safeselect[ray]'") from None
    own = not ray.is_initialized()
    if own:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        # max_calls=1: a fresh worker process per run, so memory peaks are per run (as with the local pool).
        task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_calls=1)(execute_run)
        refs = {task.remote(s.to_dict(), str(out_dir.resolve()), reference_dir, run_fn, False, "ray"): s
                for s in specs}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                on_done(ray.get(done[0]))
            except Exception as e:  # the task's worker died: the run stays incomplete
                on_done({"run_id": refs[done[0]].run_id, "status": "failed", "wall_s": 0.0,
                         "error": f"ray task failed ({type(e).__name__})"})
    finally:
        if own:
            ray.shutdown()


# ----------------------------------------------------------------------------- the plan


def write_plan_file(plan: Plan, grid: Grid, out_dir: Path) -> None:
    write_json(out_dir / "plan.json", {"plan": plan.to_dict(), "grid": grid.to_dict()})


def run_plan(plan: Plan, out_dir: str | Path, *, seeds: list[int] | None = None, workers: int | None = 1,
             threads: int | None = None,
             backend: str = "local", ray_address: str | None = None, ray_num_cpus: float = 1.0,
             ray_num_gpus: float = 0.0, run_fn: RunFn | None = None, show_progress: bool = True) -> list[Outcome]:
    """Run every unfinished run of ``plan`` (the reference first). The report is built from the files
    afterwards (:func:`safeselect.reporting.ablation.build_report`)."""

    if backend not in ("local", "ray"):
        raise UserError(f"unknown backend '{backend}' (choose local or ray)")
    out = Path(out_dir)
    grid = expand(plan, seeds)
    if run_fn is None:
        check_components(grid)
    check_out(out)
    with lock.run_lock(out):  # a second `ablate` on the same folder exits 2 instead of racing this one
        return _run_plan_locked(plan, grid, out, workers=workers, threads=threads, backend=backend,
                                ray_address=ray_address,
                                ray_num_cpus=ray_num_cpus, ray_num_gpus=ray_num_gpus, run_fn=run_fn,
                                show_progress=show_progress)


def _run_plan_locked(plan: Plan, grid: Grid, out: Path, *, workers: int | None, threads: int | None, backend: str,
                     ray_address: str | None,
                     ray_num_cpus: float, ray_num_gpus: float, run_fn: RunFn | None, show_progress: bool) -> list[Outcome]:
    from tqdm import tqdm

    write_plan_file(plan, grid, out)

    todo = [r for r in grid.runs if not is_complete(run_dir(out, r.run_id))]
    # workers=None: the rule of plan_workers (most cells per hour); an explicit count overrides it.
    auto_workers, auto_threads = plan_workers(max(1, len(todo)))
    n_workers = auto_workers if workers is None else workers
    n_threads = threads or (auto_threads if workers is None else None)
    outcomes = [Outcome(r.run_id, "skipped") for r in grid.runs if r not in todo]
    bar = tqdm(total=len(grid.runs), initial=len(outcomes), desc=f"ablate {plan.name}", unit="run",
               disable=not show_progress, file=sys.stderr)

    def on_done(res: dict[str, Any]) -> None:
        outcomes.append(Outcome(res["run_id"], res["status"], res.get("wall_s", 0.0), res.get("error", "")))
        bar.update(1)
        line = f"{res['status']:>7} {res['run_id']} ({res.get('wall_s', 0.0):.1f} s)"
        if res.get("error"):
            line += f": {res['error']}"
        if show_progress:
            bar.write(line, file=sys.stderr)

    def launch(specs: list[RunSpec], reference_dir: str | None) -> None:
        if not specs:
            return
        if backend == "ray":
            _ray(specs, out, reference_dir, run_fn, ray_address, ray_num_cpus, ray_num_gpus, on_done)
            return
        workers_now, threads_now = n_workers, n_threads
        if len(specs) == 1 and n_workers > 1 and n_threads:
            # One run alone (the reference, which every other run waits for): one worker with every worker's
            # threads, instead of one single-threaded worker and idle cores.
            workers_now, threads_now = 1, n_threads * n_workers
        _local(specs, out, reference_dir, run_fn, workers_now, show_progress, on_done, threads_now)

    ref_dir = None
    if grid.reference_id is not None:
        ref_dir = str(run_dir(out, grid.reference_id).resolve())
        launch([r for r in todo if r.run_id == grid.reference_id], None)
        if not is_complete(ref_dir):
            bar.close()
            failed = [o for o in outcomes if o.run_id == grid.reference_id]
            why = failed[-1].error if failed else "not complete"
            raise RuntimeError(f"the reference run {grid.reference_id} failed ({why}); see "
                               f"{Path(ref_dir) / 'error.txt'}")
    launch([r for r in todo if r.run_id != grid.reference_id], ref_dir)
    bar.close()
    return outcomes
