"""One experiment, read top to bottom: data -> align (cached) -> select -> fine-tune -> evaluate -> files.

The run directory is the interface between stages and to ``safeselect report``:
``config.yaml``, ``selection.jsonl``, ``generations.jsonl``, ``metrics.json``
(written last, atomically, with ``"complete": true``) and ``report.md``. A
directory whose metrics.json is complete is skipped on rerun.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safeselect.config import loading
from safeselect.config.paths import cache_dir
from safeselect.config.schema import ExperimentConfig
from safeselect.core.dotted import flatten
from safeselect.core.io import atomic_write_text
from safeselect.core.lock import run_lock
from safeselect.core.rows import Bundle, Row
from safeselect.core.rundir import RunDir, is_complete
from safeselect.core.seeding import isolated_rng, seed_stage
from safeselect.core.workers import memory_lanes, plan_workers, process_pool, worker_threads
from safeselect.data.named_sets import add_named_sets
from safeselect.errors import UserError
from safeselect.evaluation.benchmarks import configured as benchmarks_configured
from safeselect.evaluation.benchmarks import run_benchmarks
from safeselect.evaluation.evaluate import evaluate
from safeselect.evaluation.resources import Meter
from safeselect.inputs import ALIGNED_ONLY, check_out, preflight
from safeselect.judges.base import make_judge
from safeselect.models import add_lora, load_model, load_tokenizer, merge_lora
from safeselect.models.saved import (
    MERGED_DIR,
    base_reference,
    export_merged,
    model_dir,
    save_model,
    save_run_model,
)
from safeselect.registry import registry
from safeselect.reporting.runs import (
    LOSS_PLOT,
    compare_report,
    decide,
    run_report,
    seeds_report,
    write_report,
)
from safeselect.selection.base import budget_stats, context_for
from safeselect.selection.safeinstr import ON_TOP, augment, base_method, default_count
from safeselect.training.checkpoint import clear
from safeselect.training.encode import response_token_counts
from safeselect.training.sft import make_accelerator, train_sft
from safeselect.training.tracking import TrainLog, plot_curve

log = logging.getLogger(__name__)

CHECKPOINTS = RunDir.CHECKPOINTS  # RUN/checkpoints/<stage>/step-N: resumable training state, removed on completion


# ----------------------------------------------------------------------------- stages


def build_bundle(cfg: ExperimentConfig) -> Bundle:
    """Task mix, safety references, alignment rows and evaluation sets from the configured data builder."""

    return add_named_sets(registry("data").get(cfg.data.benchmark)(cfg), cfg)


def _align_key(cfg: ExperimentConfig, model_name: str, align_rows: list[Row]) -> str:
    """Hash of everything the aligned model depends on, so equal configs reuse one cached model."""
    align = loading.to_dict(cfg)["align"]
    if align["train"].get("mixed_precision") == "no":
        # Added after aligned models were cached: hashed only when set, so those caches stay valid.
        del align["train"]["mixed_precision"]
    # Not hashed at all: packed rows / sub-batches give the same rows per step and the same gradient (up to
    # float rounding, as another thread count would), so the aligned models cached before it stay valid.
    align["train"].pop("split_padding", None)
    payload = {
        "model": model_name, "dtype": cfg.model.dtype, "max_length": cfg.model.max_length,
        "lora": loading.to_dict(cfg)["model"]["lora"], "align": align,
        # align.seed (inside "align") and the rows decide the model; the experiment seed does not, so every
        # seed of a comparison starts from the same aligned model.
        "rows": [(r.row_id, r.prompt, r.response) for r in align_rows],
    }
    # Only when set, so the keys (and cached models) of configs without them stay as they were.
    if cfg.model.system_prompt:
        payload["system_prompt"] = cfg.model.system_prompt
    if cfg.model.chat_template:  # the template's text: editing the file gives another aligned model
        t = Path(cfg.model.chat_template).expanduser()
        payload["chat_template"] = t.read_text(encoding="utf-8") if t.is_file() else cfg.model.chat_template
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def aligned_dir(cfg: ExperimentConfig, bundle: Bundle, model_name: str | None = None,
                show_progress: bool = True) -> Path | None:
    """Path of the aligned model for ``model_name`` (default ``cfg.model.name``), training it once if needed.

    None when alignment is off (the starting model is then ``model_name`` as is). Under a
    multi-process launch the main process trains it alone (no DDP) while the others wait at
    a barrier; the file lock that keeps parallel ablation workers from training it twice is
    released before that barrier, so no lock is ever held across a collective.
    """
    name = model_name or cfg.model.name
    if not cfg.align.enabled or not bundle.align:
        return None
    key = _align_key(cfg, name, bundle.align)
    out = cache_dir() / "aligned" / f"{_slug(name)}-{key}"
    state = accelerator(cfg)
    if state.is_main_process:
        _train_aligned(cfg, bundle, name, key, out, state, show_progress)
    state.wait_for_everyone()
    if not (out / "config.json").exists():
        raise RuntimeError(f"aligned model {out} missing after the main process built it")
    return out


def _train_aligned(cfg: ExperimentConfig, bundle: Bundle, name: str, key: str, out: Path, acc: Any,
                   show_progress: bool) -> None:
    import fcntl

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel ablation workers train it once
        if (out / "config.json").exists():
            return
        # Its own seeded stream, and the caller's random state untouched: a run that trains the alignment
        # here draws the same numbers afterwards as one that finds it cached.
        t0 = time.perf_counter()
        with isolated_rng():
            seed_stage(align_seed(cfg), "align")
            model, tok = load_model(name, cfg.model, device=cfg.device)
            model = add_lora(model, cfg.model.lora)
            train_sft(model, tok, bundle.align, cfg.align.train, cfg.model.max_length, seed=align_seed(cfg),
                      desc="align", show_progress=show_progress, accelerator=acc, local=acc.num_processes > 1)
            save_model(merge_lora(model), tok, out)
        # train_s: a comparison whose cells run in workers trains the alignment before them, outside every
        # cell's resources.align_s; its cost is kept here.
        atomic_write_text(out / "align.json", json.dumps({"model": name, "key": key, "rows": len(bundle.align),
                                                          "train_s": round(time.perf_counter() - t0, 1)}))


def accelerator(cfg: ExperimentConfig) -> Any:
    """A fresh Accelerator for ``cfg.device`` (one per training: its checkpoint holds only that training's
    model). Under ``accelerate launch`` / ``torchrun`` every process of the launch gets its own."""

    return make_accelerator(cpu=True if cfg.device == "cpu" else (False if cfg.device == "cuda" else None))


def align_seed(cfg: ExperimentConfig) -> int:
    """The alignment's seed: ``align.seed`` where the config has one, else the experiment seed."""
    seed = getattr(cfg.align, "seed", None)
    return cfg.seed if seed is None else seed


def load_aligned(cfg: ExperimentConfig, bundle: Bundle | None = None, model_name: str | None = None) -> tuple[Any, Any]:
    """A fresh copy of the aligned starting model (no adapter yet) and its tokenizer."""

    bundle = bundle if bundle is not None else build_bundle(cfg)
    path = aligned_dir(cfg, bundle, model_name)
    return load_model(str(path) if path else (model_name or cfg.model.name), cfg.model, device=cfg.device)


def model_identity(cfg: ExperimentConfig, bundle: Bundle, model_name: str | None = None) -> str:
    """What :func:`load_aligned` loads, as a string that changes when its weights do: the aligned model's cache
    folder (named by a hash of its alignment), else the model's name, with the files' sizes and times when it
    is a local folder, and the dtype it is loaded in."""
    path = aligned_dir(cfg, bundle, model_name)
    name = str(path) if path else (model_name or cfg.model.name)
    local = Path(name)
    files = sorted((f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in local.iterdir() if f.is_file()) \
        if local.is_dir() else []
    return json.dumps([name, files, cfg.model.dtype])


def select(cfg: ExperimentConfig, bundle: Bundle, out_dir: Path, show_progress: bool = True,
           tracker: Any = None) -> Any:
    """Run the configured selector (plus SafeInstr demonstrations when asked) and return its Selection."""

    selector = registry("selectors").get(cfg.selection.method)
    tok = load_tokenizer(cfg.model.name, cfg.model)
    # Seeded here, whatever ran before in this process: `select` and `run` give the same selection.
    seed_stage(cfg.seed, f"select/{cfg.selection.seed}")

    def _judge(rows: list[Row], responses: list[str]) -> list[bool | None]:
        j = make_judge(cfg.selection.judge_filter.judge, cfg)
        # None (the judge could not decide) passes through: judge-filter counts and reports those rows.
        return [None if x is None else bool(x) for x in j.harmful([r.prompt for r in rows], responses)]

    ctx = context_for(
        cfg, bundle.task, bundle.safety_ref, out_dir,
        load_model=lambda name=None: load_aligned(cfg, bundle, name),
        model_id=lambda name=None: model_identity(cfg, bundle, name),
        response_tokens=response_token_counts(tok, bundle.task),
        judge=_judge, show_progress=show_progress,
        checkpoint_dir=out_dir / CHECKPOINTS, checkpoint_every=cfg.checkpoint.every_steps, tracker=tracker,
    )
    selection = selector(ctx)
    if cfg.selection.safeinstr.count > 0 and cfg.selection.method != "safeinstr":
        selection = augment(selection, ctx)
    return selection, ctx


def selection_metrics(selection: Any, bundle: Bundle, ctx: Any) -> dict[str, Any]:
    """The ``selection.*`` figures of a run: budget and ground-truth counts, rows added on top, the selector's
    own scalar facts (``selection.info.*``: its algorithm, times, a reused selector's source)."""
    stats = budget_stats(selection.kept, bundle.task, ctx.response_tokens, selection.scores)
    metrics = {f"selection.{k}": v for k, v in stats.items()}
    metrics["selection.added"] = len(selection.added)
    metrics.update({f"selection.info.{k}": v for k, v in selection.info.items() if isinstance(v, (int, float, str, bool))})
    return metrics


def select_only(cfg: ExperimentConfig, out: Path, show_progress: bool = True) -> dict[str, Any]:
    """``safeselect select``: align (cached), run the selector, write ``config.yaml``, ``selection.jsonl``
    and ``metrics.json`` (selection.* figures) into ``out``; returns those figures. Under a multi-process
    launch every process takes part in the selector's training and the main process writes."""
    main = accelerator(cfg).is_main_process
    bundle = preflight(cfg, train=True)  # every input checked before the folder is made
    if main:
        check_out(out)
    run = RunDir(out)
    with run_lock(out) if main else contextlib.nullcontext():
        if main:
            run.write_config(loading.to_yaml(cfg))
        aligned_dir(cfg, bundle, show_progress=show_progress)
        selection, ctx = select(cfg, bundle, out, show_progress)
        stats = selection_metrics(selection, bundle, ctx)
        if main:
            run.write_jsonl(RunDir.SELECTION, selection.records(bundle.task))
            # Not marked complete: a selection alone is not a finished run (`run` into this folder goes on).
            run.write_metrics(stats, complete=False)
            clear(run.checkpoints)  # the selector finished: its resumable state is no longer needed
    return stats


# ----------------------------------------------------------------------------- one run


# Labels and bookkeeping, not settings: a finished run is reused whatever they say.
_DRIFT_IGNORED = ("name", "compare", "seeds", "baseline", "finetune.merge", "checkpoint.every_steps",
                  "tracking.report_to", "tracking.project", "tracking.log_every",
                  "selection.seal.reuse")  # reused logits are the logits a new training gives (tested)


def drift_ignored(cfg: ExperimentConfig) -> tuple[str, ...]:
    """Keys that cannot change this run's result: labels, and the sections of the selectors it does not use
    (each selector's registry entry names its section; selection.safeinstr is no selector's own section,
    since its count adds demonstrations on top of every selector)."""
    if cfg.selection.method == ALIGNED_ONLY:  # the starting model: no selection, no fine-tuning
        return (*_DRIFT_IGNORED, "selection.", "finetune.")
    own = registry("selectors").entry(cfg.selection.method).section if cfg.selection.method in registry(
        "selectors") else ""
    others = {e.section for e in registry("selectors").entries() if e.section and e.section != own}
    return _DRIFT_IGNORED + tuple(sorted(f"selection.{sec}." for sec in others))


def config_drift(out_dir: str | Path, cfg: ExperimentConfig) -> list[str]:
    """``key: saved -> now`` for each setting where ``out_dir/config.yaml`` differs from ``cfg``."""
    return RunDir(out_dir).drift(loading.to_dict(cfg), drift_ignored(cfg))


def sub_config(cfg: ExperimentConfig, method: str) -> ExperimentConfig:
    """The config of one ``compare`` entry: the same settings with ``selection.method=method``.

    An entry ``<m>+safeinstr`` (the SEAL paper's "SEAL + SafeInstr" row) is selector ``m`` with
    ``selection.safeinstr.count`` demonstrations on top, or 3% of ``data.n_task`` when the count is 0
    (the `safeinstr` selector's default, Bianchi et al.)."""
    sel = dataclasses.replace(cfg.selection, method=base_method(method))
    if method.endswith(ON_TOP) and sel.safeinstr.count == 0:
        sel = dataclasses.replace(sel, safeinstr=dataclasses.replace(sel.safeinstr,
                                                                     count=default_count(cfg.data.n_task)))
    return dataclasses.replace(cfg, compare=[], selection=sel)


def run_conflicts(cfg: ExperimentConfig, out_dir: str | Path) -> dict[Path, list[str]]:
    """Run folders ``cfg`` would write (``out_dir``, or one per ``compare`` entry) that already hold a run,
    finished or not, of another config: folder -> its ``key: saved -> now`` lines."""
    out = Path(out_dir)
    runs = [(out / m, sub_config(cfg, m)) for m in cfg.compare] if cfg.compare else [(out, cfg)]
    return {d: drift for d, c in runs if (drift := config_drift(d, c))}


def describe_conflicts(conflicts: dict[Path, list[str]]) -> str:
    """One line: which folder holds which other settings (the first three differences)."""
    folder, drift = next(iter(conflicts.items()))
    more = f" (and {len(conflicts) - 1} more folder(s))" if len(conflicts) > 1 else ""
    state = "finished" if is_complete(folder) else "unfinished"
    # The one drift a user meets without changing anything: a folder made before `finetune.mixed_precision=auto`
    # (or on a machine without bfloat16 units), rerun where auto means bf16.
    saved = flatten(RunDir(folder).saved_config() or {}).get("finetune.mixed_precision") \
        if any(line.startswith("finetune.mixed_precision: ") for line in drift) else None
    hint = f" (to go on with it in its precision, add finetune.mixed_precision={saved})" if saved else ""
    return (f"{folder} holds a{'n' if state[0] == 'u' else ''} {state} run of another config "
            f"({'; '.join(drift[:3])}{'; ...' if len(drift) > 3 else ''}){more}{hint}")


def clear_runs(folders: list[Path]) -> None:
    """Delete run folders (``--overwrite``). Only folders holding a ``config.yaml`` (run folders) are removed,
    and never the working directory or one above it."""
    cwd = Path.cwd().resolve()
    for d in folders:
        r = d.resolve()
        if r == cwd or r in cwd.parents or not RunDir(d).config.is_file():
            raise UserError(f"--overwrite will not delete {d}: not a run folder of its own")
        shutil.rmtree(d)


def run_experiment(cfg: ExperimentConfig, out_dir: str | Path, reference_dir: str | Path | None = None,
                   show_progress: bool = True, bundle: Bundle | None = None,
                   wait_reference: Callable[[], None] | None = None) -> dict[str, Any]:
    """align -> select -> fine-tune -> evaluate; returns flat metrics. A complete ``out_dir`` is not redone.

    The fine-tuned model is kept in ``out_dir/model`` (see :mod:`safeselect.models.saved`). With
    ``checkpoint.every_steps`` the selector's and the fine-tune's state are saved under
    ``out_dir/checkpoints`` and a rerun of a killed run resumes from them. Under a multi-process
    launch every process trains its share and only the main process writes files and evaluates.
    ``bundle``: the data, when the caller already built and checked it (:func:`safeselect.inputs.preflight`);
    otherwise every input is opened and checked here, before the folder is created or a file written.
    ``wait_reference``: returns once ``reference_dir`` holds a finished run (a cell fine-tuned beside its
    reference waits for it only before its pairwise judging; see :func:`evaluate`).
    """

    run = RunDir(out_dir)
    out = run.path
    state = accelerator(cfg)
    main = state.is_main_process
    conflicts = run_conflicts(cfg, out)
    if conflicts:
        # Finished or half-done, a folder of another config is never mixed with this one's files.
        raise UserError(f"{describe_conflicts(conflicts)}: add --overwrite to replace it, or choose another --out")
    if run.check_reusable(loading.to_dict(cfg), drift_ignored(cfg)):
        log.info("skipping %s: already complete", out)
        if main and cfg.finetune.merge:
            _merge(out)
        return RunDir(out).read_metrics()
    meter = Meter()
    with meter.stage("data"):
        # Every input opened and checked before the folder is created or a file written.
        bundle = bundle if bundle is not None else preflight(cfg)
    if main:
        check_out(out)
    # One writer per run folder: the main process of a launch writes, and holds the folder's lock meanwhile.
    with run_lock(out) if main else contextlib.nullcontext():
        if main and is_complete(out):  # another process finished it while this one read its data
            return RunDir(out).read_metrics()
        return _run_locked(cfg, out, bundle, meter, state, reference_dir, show_progress, wait_reference)


def _run_locked(cfg: ExperimentConfig, out: Path, bundle: Bundle, meter: Any, state: Any,
                reference_dir: str | Path | None, show_progress: bool,
                wait_reference: Callable[[], None] | None = None) -> dict[str, Any]:
    """The stages of :func:`run_experiment`, with ``out`` locked to this process."""
    run = RunDir(out)
    main = state.is_main_process
    tracker = _tracker(cfg, out, main)  # first: a tracker whose package is missing stops before config.yaml
    if main:
        run.create().write_config(loading.to_yaml(cfg))
    reference_dir = reference_dir or cfg.eval.reference

    with meter.stage("align"):
        aligned = aligned_dir(cfg, bundle, show_progress=show_progress)

    metrics: dict[str, Any] = {}
    method = cfg.selection.method
    trained = False
    if method == ALIGNED_ONLY:
        model, tok = load_aligned(cfg, bundle)
    else:
        with meter.stage("selection"):
            selection, ctx = select(cfg, bundle, out, show_progress, tracker=tracker)
        if main:
            run.write_jsonl(run.SELECTION, selection.records(bundle.task))
        metrics.update(selection_metrics(selection, bundle, ctx))
        with meter.stage("train"):
            model, tok, train_metrics = finetune(cfg, bundle, selection, out, show_progress, tracker)
        metrics.update(train_metrics)
        trained = True

    if main:
        if trained:
            _save_model(cfg, model, tok, out, aligned)
        if cfg.eval.enabled:
            seed_stage(cfg.seed, "eval")
            with meter.stage("eval"):
                flat, generations = evaluate(model, tok, bundle, cfg, reference_dir=reference_dir,
                                             show_progress=show_progress, wait_reference=wait_reference)
                if benchmarks_configured(cfg):  # AlpacaEval / Arena-Hard / MT-Bench, as `safeselect eval` runs them
                    flat.update(run_benchmarks(model, tok, cfg, out, show_progress=show_progress))
            metrics.update(flat)
            run.write_jsonl(run.GENERATIONS, generations)
        metrics.update(meter.metrics())
        metrics["complete"] = True
        tracker.log_metrics(metrics)
        tracker.close()

        plot = plot_curve(out, out / LOSS_PLOT)
        # report.md + report.html, then metrics.json last: its presence with complete=true marks the run finished.
        write_report(out, run_report(cfg, metrics, loss_plot=plot is not None, model_saved=trained))
        run.write_metrics(metrics)

        clear(run.checkpoints)
    state.wait_for_everyone()
    return metrics if main else run.read_metrics()


def finetune(cfg: ExperimentConfig, bundle: Bundle, selection: Any, out: Path, show_progress: bool = True,
             tracker: Any = None) -> tuple[Any, Any, dict[str, Any]]:
    """The model after fine-tuning on the selection (or the one the selector trained), its tokenizer, train.* metrics."""

    if selection.trained_model is not None:
        # The selector trained while it selected (DualSelect): that model is the result.
        return selection.trained_model, load_tokenizer(cfg.model.name, cfg.model), {}
    model, tok = load_aligned(cfg, bundle)
    # The adapter's initial weights must not depend on what earlier stages drew from the global
    # generator (a cold alignment cache trains in this process, a warm one does not): seeded here,
    # a killed run resumes to the uninterrupted run's numbers whatever the cache held.
    seed_stage(cfg.seed, "finetune")
    model = add_lora(model, cfg.model.lora)
    kept = selection.kept_rows(bundle.task)
    res = train_sft(model, tok, kept, cfg.finetune, cfg.model.max_length, seed=cfg.seed,
                    desc=f"fine-tune ({cfg.selection.method})", show_progress=show_progress,
                    accelerator=accelerator(cfg), checkpoint_dir=out / CHECKPOINTS / "finetune",
                    save_every=cfg.checkpoint.every_steps, tracker=tracker)
    metrics: dict[str, Any] = {"train.steps": res["steps"], "train.rows": len(kept)}
    if res["losses"]:
        metrics["train.first_loss"] = res["losses"][0]
        metrics["train.last_loss"] = res["losses"][-1]
    return res["model"], tok, metrics


def _save_model(cfg: ExperimentConfig, model: Any, tok: Any, out: Path, aligned: Path | None) -> None:
    """``out/model``: the adapter (or whole model) naming a base that loads as saved; merged weights on request."""

    dest = model_dir(out)
    if not hasattr(model, "peft_config"):  # full fine-tuning: the whole model, no base to name
        base = ""
    else:
        base = str(aligned.resolve()) if aligned is not None else base_reference(cfg.model.name, dest)
    save_run_model(model, tok, dest, base)
    if cfg.finetune.merge:
        _merge(out)


def _merge(out: Path) -> None:
    dest = model_dir(out)
    if dest.is_dir() and not (dest / MERGED_DIR / "config.json").exists():
        export_merged(dest, dest / MERGED_DIR)


def _tracker(cfg: ExperimentConfig, out: Path, main: bool) -> Any:
    if main:  # a rerun writes its curve afresh (a resumed stage rewinds to its checkpoint instead)
        ckpt = RunDir(out).checkpoints
        if not (ckpt.is_dir() and any(ckpt.iterdir())):
            (out / RunDir.TRAIN_LOG).unlink(missing_ok=True)
    return TrainLog(out, cfg.tracking.report_to, project=cfg.tracking.project or cfg.name,
                    config=loading.to_dict(cfg), main_process=main, every=cfg.tracking.log_every)


# ----------------------------------------------------------------------------- several methods at once


def run_compare(cfg: ExperimentConfig, out_dir: str | Path, show_progress: bool = True, workers: int | None = 0,
                threads: int | None = None) -> dict[str, dict[str, Any]]:
    """Run each entry of ``cfg.compare`` on the same data and aligned model; ``full`` first (the win-rate reference).

    ``workers``: 0 runs the entries one after another in this process; N > 0 runs them as cells in fresh
    processes (:func:`run_seeds` says how); None picks both by the rule of
    :func:`safeselect.core.workers.plan_workers`."""
    out = Path(out_dir)
    methods = list(cfg.compare)
    if "full" in methods:
        methods = ["full"] + [m for m in methods if m != "full"]
    results: dict[str, dict[str, Any]] = {}
    bundle = preflight(cfg)  # the same data for every method, checked once before any folder is made
    main = accelerator(cfg).is_main_process
    if main:
        check_out(out)
    with run_lock(out) if main else contextlib.nullcontext():
        todo = [(None, m) for m in methods if not is_complete(out / m)]
        workers, threads = cell_lanes(cfg, len(todo), workers, threads)
        if workers:
            _cells_in_workers(cfg, out, todo, workers, threads, show_progress, bundle)
        for m in methods:  # with workers, only reads the finished folders back (and runs a cell that could not)
            results[m] = compare_entry(cfg, out, m, bundle, show_progress)
        ordered = {m: results[m] for m in cfg.compare}  # the user's order in the table
        if main:
            rows = {m: {cfg.seed: out / m} for m in cfg.compare}
            write_report(out, compare_report(cfg, ordered) + "\n" + decide(cfg, rows, ordered), ordered)
    return ordered


def compare_entry(cfg: ExperimentConfig, out: Path, method: str, bundle: Bundle, show_progress: bool = True,
                  wait_reference: Callable[[], None] | None = None) -> dict[str, Any]:
    """One entry of ``cfg.compare`` in ``out/<method>``, its win rates against ``out/full`` where ``full`` is
    compared too (:func:`reference_of`); the same run whether a ``compare`` loop or a worker process runs it.
    ``wait_reference``: see :func:`run_experiment` (a worker's cell may start before ``full`` has finished)."""
    ref = out / r if (r := reference_of(cfg, method)) else None
    return run_experiment(sub_config(cfg, method), out / method, reference_dir=ref, show_progress=show_progress,
                          bundle=bundle, wait_reference=wait_reference)


def seed_config(cfg: ExperimentConfig, seed: int) -> ExperimentConfig:
    """``cfg`` at experiment seed ``seed``: the seed of data, selection and training (align.seed unchanged)."""
    return dataclasses.replace(cfg, seeds=[], seed=seed, data=dataclasses.replace(cfg.data, seed=seed),
                               selection=dataclasses.replace(cfg.selection, seed=seed))


def run_seeds(cfg: ExperimentConfig, out_dir: str | Path, show_progress: bool = True, workers: int | None = 0,
              threads: int | None = None) -> str:
    """``compare`` at every seed of ``cfg.seeds`` (``OUT/s<seed>/<method>``); returns the report over seeds.

    ``workers``: 0 runs the seeds one after another in this process; N > 0 runs the unfinished (seed, method)
    cells in N fresh processes at once, each with ``threads`` torch threads; None picks both by the rule of
    :func:`safeselect.core.workers.plan_workers` (on a CPU one single-threaded worker per core: 1.35x the
    cells per hour of one two-threaded process, docs/results.md). Cells, not seeds, are the unit, so no core
    idles while the last seed runs alone (3 seeds on 2 workers); a cell whose win-rate reference (its seed's
    ``full``) is still running may start beside it on one more worker and waits for it only before its
    pairwise judging (:func:`_cells_in_workers`). The aligned model is trained here first, so the workers
    share it instead of waiting on its lock. A multi-process launch runs the seeds in turn.
    """
    out = Path(out_dir)
    todo = [(s, m) for s, m in cell_order(cfg) if not is_complete(out / f"s{s}" / m)]
    workers, threads = cell_lanes(cfg, len(todo), workers, threads)
    if workers:
        _cells_in_workers(cfg, out, todo, workers, threads, show_progress)
    for s in cfg.seeds:  # all of them with workers 0; with workers, only reads the finished folders back
        log.info("seed %s", s)
        run_compare(seed_config(cfg, s), out / f"s{s}", show_progress=show_progress)
    text = seeds_report(cfg, {m: {s: out / f"s{s}" / m for s in cfg.seeds} for m in cfg.compare})
    if accelerator(cfg).is_main_process:
        write_report(out, text)
    return text


def cell_lanes(cfg: ExperimentConfig, n_cells: int, workers: int | None, threads: int | None) -> tuple[int, int | None]:
    """(worker processes, torch threads each) for ``n_cells`` unfinished cells; 0 workers = in this process.

    None picks by :func:`plan_workers`, where one lane means this process (no interpreter to start); one cell,
    or a multi-process launch (whose processes train each cell together), also stays here."""
    if workers is None:
        workers, auto_threads = plan_workers(n_cells)
        threads = threads or auto_threads
        workers = 0 if workers == 1 else workers
    if n_cells <= 1 or accelerator(cfg).num_processes > 1:
        return 0, threads
    return workers, threads


def cell_order(cfg: ExperimentConfig) -> list[tuple[int, str]]:
    """The (seed, method) cells of a comparison over seeds: every seed's ``full`` first (the others need its
    generations: it is their win-rate reference), then each seed's other methods in the order of ``compare``."""
    first = [(s, "full") for s in cfg.seeds] if "full" in cfg.compare else []
    return first + [(s, m) for s in cfg.seeds for m in cfg.compare if m != "full"]


def reference_of(cfg: ExperimentConfig, method: str) -> str | None:
    """The method of the same seed whose generations ``method``'s win rates compare against: ``full`` when it
    is compared too. A cell may run beside it and waits for it only before its pairwise judging."""
    return "full" if "full" in cfg.compare and method != "full" else None


def cell_needs(cfg: ExperimentConfig, method: str) -> list[str]:
    """The methods of the same seed whose cells must be finished before ``method``'s starts: for
    ``<m>+safeinstr``, ``m``, whose trained selector it reuses (started together, one would wait on the other's
    selector cache lock with a core idle)."""
    base = base_method(method)
    return [base] if base != method and base in cfg.compare else []


def _cell_dir(out: Path, seed: int | None) -> Path:
    """The folder of a cell's comparison: ``OUT/s<seed>`` over seeds, ``OUT`` for one ``compare``."""
    return out if seed is None else out / f"s{seed}"


def _abort_marker(aborts: str, seed: int | None) -> Path:
    """The file whose presence tells the cells of ``seed`` that their reference will not finish."""
    return Path(aborts) / ("run" if seed is None else f"s{seed}")


def _cell(cfg: ExperimentConfig, seed: int | None, method: str, out: str, aborts: str) -> None:
    """One (seed, method) cell of a comparison, in a worker process (top level, so the pool can ship it).
    ``seed`` None: an entry of one ``compare`` at the config's own seed."""
    scfg = cfg if seed is None else seed_config(cfg, seed)
    folder = _cell_dir(Path(out), seed)
    abort = _abort_marker(aborts, seed)

    def wait_reference() -> None:  # called only when the cell has a reference (compare_entry)
        ref = folder / str(reference_of(cfg, method))
        while not is_complete(ref):
            if abort.exists():
                raise UserError(f"{ref} (the win-rate reference) did not finish, so {folder / method} cannot "
                                f"compare with it")
            time.sleep(1.0)

    compare_entry(scfg, folder, method, preflight(scfg), show_progress=False, wait_reference=wait_reference)


def _cells_in_workers(cfg: ExperimentConfig, out: Path, todo: list[tuple[int | None, str]], workers: int,
                      threads: int | None, show_progress: bool, bundle: Bundle | None = None) -> None:
    """Run the ``todo`` cells in fresh processes, ``workers`` at a time, each after the cells it needs.

    A cell whose win-rate reference is still running may start on one more worker (when memory allows one):
    it fine-tunes and generates beside its reference and waits only before its pairwise judging, so the
    reference's cores are not left to it alone (the demo's three cells finish together instead of one after
    another). The reference's failure is passed to the cells waiting on it through a marker file. ``bundle``:
    the data the caller already built (the alignment's rows come from it).
    """
    import tempfile
    from concurrent.futures import FIRST_COMPLETED, wait

    from tqdm import tqdm

    # once, here, before the workers start
    aligned_dir(cfg, bundle if bundle is not None else preflight(cfg), show_progress=show_progress)
    # One worker asked for means one at a time; more than one leave room for a waiting cell if memory holds it.
    extra = 1 if workers > 1 and memory_lanes() > workers else 0
    seeds = sorted({s for s, _ in todo if s is not None})
    # The workers draw no bars (two would garble one terminal); this one counts finished cells.
    desc = f"cells ({len(seeds)} seeds, {workers} workers)" if seeds else f"cells ({workers} workers)"
    bar = tqdm(total=len(todo), desc=desc, unit="cell", disable=not show_progress)
    waiting, failed = list(todo), set()
    errors: list[BaseException] = []

    def done(cell: tuple[int | None, str]) -> bool:
        return is_complete(_cell_dir(out, cell[0]) / cell[1])

    references = {r for m in cfg.compare if (r := reference_of(cfg, m))}

    with tempfile.TemporaryDirectory(prefix="safeselect-cells-") as aborts, worker_threads(threads), \
            process_pool(min(workers + extra, len(todo))) as ex:
        running: dict[Any, tuple[int | None, str]] = {}
        while waiting or running:
            for s, m in list(waiting):
                needs = [(s, n) for n in cell_needs(cfg, m)]
                ref = (s, r) if (r := reference_of(cfg, m)) else None
                if any(n in failed for n in [*needs, ref]):  # its reference or selector failed: it cannot run
                    waiting.remove((s, m))
                    failed.add((s, m))
                    continue
                if not all(done(n) for n in needs):
                    continue
                if ref is None or done(ref):
                    lanes = workers
                elif ref in running.values():  # it will wait for its reference only at the end
                    lanes = workers + extra
                else:
                    continue
                if len(running) < lanes:
                    waiting.remove((s, m))
                    running[ex.submit(_cell, cfg, s, m, str(out), aborts)] = (s, m)
            if not running:  # nothing can start (a cell it needs returned unfinished): the serial pass below runs it
                break
            # which cells are running, since the workers draw no bars of their own
            bar.set_postfix_str(", ".join(m if s is None else f"s{s}/{m}" for s, m in running.values()), refresh=True)
            finished, _ = wait(running, timeout=10.0, return_when=FIRST_COMPLETED)
            for fut in finished:
                s, m = running.pop(fut)
                try:
                    fut.result()
                except Exception as e:  # the other cells go on; the first failure is raised when all are done
                    errors.append(e)
                    failed.add((s, m))
                    bar.write(f"{'' if s is None else f'seed {s} '}{m} failed: {e}")
                if m in references and not done((s, m)):  # the cells waiting on it would wait for ever
                    _abort_marker(aborts, s).touch()
                bar.update(1)
    bar.close()
    if errors:
        raise errors[0]


# ----------------------------------------------------------------------------- helpers


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-")[-40:]
