"""The Python API: the CLI's run, select, evaluate and export as functions.

    import safeselect

    res = safeselect.run("quickstart", {"selection.method": "seal", "selection.ratio": 0.5}, out="runs/seal")
    res.metrics["safety.builtin.refusal.harmful_rate"]
    model, tok = safeselect.load_model(res.model_path)        # the fine-tuned model, merged onto its base
    safeselect.evaluate(res.run_dir, {"data.difficulty": "hard"}, out="runs/seal-hard")
    safeselect.export(res.run_dir, "exports/seal")             # merged safetensors for AutoModelForCausalLM

``config`` is a preset name, a YAML path, a mapping of dotted keys, or an
:class:`~safeselect.config.ExperimentConfig`; ``overrides`` is a mapping of dotted keys (or a
list of ``key=value`` strings), applied on top like the CLI's. Bad input raises
:class:`~safeselect.errors.UserError` with the CLI's one-line message. Importing
``safeselect`` stays cheap: torch and transformers are imported when a function runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safeselect.config import loading
from safeselect.config.schema import ExperimentConfig
from safeselect.core.dotted import flatten
from safeselect.core.io import read_jsonl
from safeselect.core.rundir import RunDir
from safeselect.errors import UserError
from safeselect.inputs import check_methods
from safeselect.models import resolve_device
from safeselect.models.saved import export_merged, load_saved, model_dir
from safeselect.pipeline.evaluate import evaluate_config
from safeselect.pipeline.run import (
    run_compare,
    run_experiment,
    select_only,
)

Overrides = Mapping[str, Any] | Sequence[str] | None


@dataclass
class RunResult:
    """What a run produced: its folder, flat metrics (ARCHITECTURE.md names) and the saved model's folder.

    For a config with ``compare`` the top level is the comparison folder and ``runs`` holds one
    result per method (``metrics`` and ``model_path`` are then empty).
    """

    run_dir: Path
    metrics: dict[str, Any]
    model_path: Path | None
    runs: dict[str, RunResult] = field(default_factory=dict)


def load_config(config: str | Path | Mapping[str, Any] | ExperimentConfig | None, overrides: Overrides = None
                ) -> ExperimentConfig:
    """Resolve ``config`` + ``overrides`` exactly as the CLI does (defaults < preset < overrides), validated."""
    import dataclasses

    over = _override_list(overrides)
    if isinstance(config, ExperimentConfig):
        flat = flatten(dataclasses.asdict(config))
        flat.update(dict(loading.parse_override(o) for o in over))
        return loading.build(flat)
    if isinstance(config, Mapping):
        flat = flatten(dict(config))
        flat.update(dict(loading.parse_override(o) for o in over))
        return loading.build(flat)
    return loading.load(str(config) if config is not None else None, over)


def run(config: str | Path | Mapping[str, Any] | ExperimentConfig, overrides: Overrides = None, *,
        out: str | Path | None = None, progress: bool = False) -> RunResult:
    """align -> select -> fine-tune -> evaluate, as ``safeselect run``; a finished ``out`` is reused, a killed
    one resumes. ``out`` defaults to ``runs/<config name>``. ``compare`` entries run one after another in this
    process (the CLI runs them in worker processes; the figures are the same at the same thread count)."""

    cfg = load_config(config, overrides)
    check_methods(cfg)
    out_dir = Path(out) if out is not None else _default_out(config, cfg)
    if cfg.compare:
        results = run_compare(cfg, out_dir, show_progress=progress)
        return RunResult(out_dir, {}, None, runs={m: _result(out_dir / m, met) for m, met in results.items()})
    return _result(out_dir, run_experiment(cfg, out_dir, show_progress=progress))


def select(config: str | Path | Mapping[str, Any] | ExperimentConfig, overrides: Overrides = None, *,
           out: str | Path | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """Run the selector only (as ``safeselect select``); returns the rows of ``selection.jsonl``."""

    cfg = load_config(config, overrides)
    check_methods(cfg)
    out_dir = Path(out) if out is not None else _default_out(config, cfg)
    select_only(cfg, out_dir, show_progress=progress)
    return read_jsonl(RunDir(out_dir).selection)


def evaluate(target: str | Path, overrides: Overrides = None, *, out: str | Path | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Evaluate without training: a run folder's saved model (on its config's sets with ``overrides``
    applied), a saved model folder, or a config's ``model.name``. Returns the flat metrics; files go to
    ``out`` (default ``<run>-eval`` or ``runs/<config>-eval``)."""

    path = Path(target)
    if path.is_dir() and model_dir(path).is_dir():
        cfg = load_config(RunDir(path).config, overrides)
        out_dir = Path(out) if out is not None else Path(f"{path}-eval")
        if out_dir.resolve() == path.resolve():
            raise UserError("out must differ from the run folder (its files belong to the training run)")
        loaded = load_saved(model_dir(path), dtype=cfg.model.dtype, device=resolve_device(cfg.device))
        return evaluate_config(cfg, out_dir, show_progress=progress, model=loaded)
    if path.is_dir():
        raise UserError(f"{path}: no saved model (model/) in this folder")
    cfg = load_config(str(target), overrides)
    out_dir = Path(out) if out is not None else Path("runs") / f"{Path(str(target)).stem}-eval"
    return evaluate_config(cfg, out_dir, show_progress=progress)


def export(run_dir: str | Path, out: str | Path) -> Path:
    """Merged safetensors weights + tokenizer of a run's model in ``out`` (as ``safeselect export``)."""

    return export_merged(run_dir, out)


def load_model(path: str | Path, device: str = "cpu") -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a run folder, its ``model/`` or a merged export (adapters merged onto their base)."""

    return load_saved(path, device=device)


def _result(run_dir: Path, metrics: dict[str, Any]) -> RunResult:
    m = model_dir(run_dir)
    return RunResult(run_dir, dict(metrics), m if m.is_dir() else None)


def _override_list(overrides: Overrides) -> list[str]:
    """Dotted-key mapping or ``key=value`` strings -> ``key=value`` strings (values as YAML, like the CLI)."""
    import json

    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        # JSON is valid YAML: lists, numbers, booleans and None keep their types through parse_override.
        return [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    if isinstance(overrides, str):
        raise UserError("overrides: give a mapping of dotted keys or a list of 'key=value' strings, not one string")
    return [str(o) for o in overrides]


def _default_out(config: Any, cfg: ExperimentConfig) -> Path:
    if isinstance(config, (str, Path)):
        return Path("runs") / Path(str(config)).stem
    return Path("runs") / cfg.name
