"""Evaluate a model as it is (no alignment, no fine-tuning) on a config's evaluation sets: the stage behind
``safeselect eval CONFIG``, ``eval RUN --generate`` and :func:`safeselect.api.evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safeselect.config import loading
from safeselect.core.lock import run_lock
from safeselect.core.rundir import RunDir
from safeselect.core.seeding import seed_stage
from safeselect.evaluation.benchmarks import configured, run_benchmarks
from safeselect.evaluation.evaluate import evaluate
from safeselect.evaluation.resources import Meter
from safeselect.inputs import check_out, preflight
from safeselect.models import load_model


def evaluate_config(cfg: Any, out: Path, reference_dir: str | None = None, show_progress: bool = True,
                    model: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Evaluate ``cfg.model.name`` as is (or ``model``: a loaded (model, tokenizer)) on the configured
    evaluation sets; write the eval files to ``out``."""

    meter = Meter()
    check_out(out)
    with meter.stage("data"):
        bundle = preflight(cfg, train=False)
    model, tok = model if model is not None else load_model(cfg.model.name, cfg.model, device=cfg.device)
    with run_lock(out):
        return _evaluate_locked(cfg, out, bundle, model, tok, meter, reference_dir, show_progress)


def _evaluate_locked(cfg: Any, out: Path, bundle: Any, model: Any, tok: Any, meter: Any, reference_dir: str | None,
                     show_progress: bool) -> dict[str, Any]:
    # Evaluated afresh on every call (another judge or set is a new evaluation), then marked complete.
    run = RunDir(out).create()
    run.write_config(loading.to_yaml(cfg))
    seed_stage(cfg.seed, "eval")
    with meter.stage("eval"):
        flat, records = evaluate(model, tok, bundle, cfg, reference_dir=reference_dir, show_progress=show_progress)
        if configured(cfg):
            flat.update(run_benchmarks(model, tok, cfg, out, show_progress=show_progress))
    flat.update(meter.metrics())
    run.write_jsonl(run.GENERATIONS, records)
    run.write_metrics(flat)
    return flat
