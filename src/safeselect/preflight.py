"""Checks a config's inputs before anything trains: every data file opened, every judge's needs met.

``safeselect validate`` runs all of it; ``run`` and ``select`` run the cheap part (judges, model)
up front, so a missing ``judges.llm.base_url`` or API key stops the command in one line before
any fine-tuning instead of after it. Nothing here contacts an endpoint or prints a key's value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from safeselect.core.rundir import RunDir
from safeselect.data import loaders
from safeselect.errors import UserError
from safeselect.evaluation import benchmarks
from safeselect.inputs import check_methods
from safeselect.models import resolve_model
from safeselect.pipeline.run import build_bundle
from safeselect.registry import registry
from safeselect.selection.safeinstr import methods_used

if TYPE_CHECKING:
    from safeselect.config.schema import ExperimentConfig
    from safeselect.core.rows import Bundle

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


def judges_used(cfg: ExperimentConfig, command: str = "run") -> dict[str, str]:
    """Judge name -> the config key that asks for it (first one found), for every judge ``command``
    (run, select, eval, eva) will call with this config."""
    used: dict[str, str] = {}

    def add(name: str, key: str) -> None:
        used.setdefault(name, key)

    methods = methods_used(cfg.selection.method, cfg.compare)
    if "judge-filter" in methods and command in ("run", "select"):
        add(cfg.selection.judge_filter.judge, "selection.judge_filter.judge")
    if command == "select" or not cfg.eval.enabled:
        return used
    for j in cfg.eval.judges:
        add(j, "eval.judges")
    if cfg.eval.reference or cfg.compare:
        for j in cfg.eval.pairwise:
            add(j, "eval.pairwise")
    b = cfg.eval.benchmarks
    if any((b.alpacaeval, b.arenahard_questions, b.mtbench_questions)):
        add("llm", "eval.benchmarks")
    return used


def llm_endpoint_needed(cfg: ExperimentConfig, command: str = "run") -> str | None:
    """The config key that makes this command call ``judges.llm``'s endpoint, or None."""
    used = judges_used(cfg, command)
    if "llm" in used:
        return used["llm"]
    if command == "eva":
        if cfg.eva.reward == "llm" or "llm" in cfg.eva.eval_rewards:
            return "eva.reward"
        if cfg.eva.creator_model == "llm":
            return "eva.creator_model"
    return None


def check_llm_endpoint(cfg: ExperimentConfig, needed_by: str) -> str:
    """``judges.llm.base_url`` set and an http(s) URL; the key variable present unless the endpoint is local.

    A local server (vLLM, llama.cpp) usually takes no key, and the client then sends none, so a missing key
    there is only a note. Returns a line describing the endpoint (the variable's name, never its value).
    """
    llm = cfg.judges.llm
    if not llm.base_url:
        raise UserError(f"judges.llm.base_url is not set, and {needed_by} uses the llm judge: give an "
                        "OpenAI-compatible endpoint, e.g. judges.llm.base_url=http://127.0.0.1:8000/v1")
    url = urlparse(llm.base_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise UserError(f"judges.llm.base_url={llm.base_url!r} is not an http(s) URL")
    has_key = bool(os.environ.get(llm.api_key_env or ""))
    local = url.hostname in _LOCAL_HOSTS
    if not has_key and not local:
        raise UserError(f"${llm.api_key_env} is not set, and the llm judge at {llm.base_url} needs a key "
                        "(judges.llm.api_key_env names the variable)")
    key = f"key ${llm.api_key_env} set" if has_key else f"no ${llm.api_key_env} (none sent: local server)"
    return f"llm judge: {llm.base_url}, model {llm.model}, {key}"


def check_judges(cfg: ExperimentConfig, command: str = "run") -> list[str]:
    """Every judge the config uses is registered and has what it needs; one line per judge."""
    lines = []
    for name, key in judges_used(cfg, command).items():
        entry = registry("judges").entry(name)
        if name == "classifier":
            path = cfg.judges.classifier.path
            if not path:
                raise UserError(f"judges.classifier.path is not set, and {key} uses the classifier judge")
            where = model_location(path)
            lines.append(f"classifier judge: {where}")
        elif name != "llm":
            lines.append(f"{name} judge: offline ({entry.summary.split(' (')[0]})")
    needed = llm_endpoint_needed(cfg, command)
    if needed:
        lines.append(check_llm_endpoint(cfg, needed))
    return lines


def model_location(name: str) -> str:
    """Where a model name resolves (registered, local folder, local HF cache), without loading weights."""
    if name in registry("models"):
        return f"{name} (registered)"
    return str(resolve_model(name))


def check_models(cfg: ExperimentConfig) -> list[str]:
    """``model.name`` and any other model the config names resolve to something loadable offline."""
    lines = [f"model: {model_location(cfg.model.name)}"]
    if cfg.selection.seal.selector_model and "seal" in methods_used(cfg.selection.method, cfg.compare):
        lines.append(f"selector model: {model_location(cfg.selection.seal.selector_model)}")
    return lines


def check_before_training(cfg: ExperimentConfig, command: str = "run") -> list[str]:
    """Methods named, model and judges reachable: what must fail before anything trains (a missing endpoint
    must not surface after the fine-tune). One line per model / judge checked."""
    check_methods(cfg)
    return check_models(cfg) + check_judges(cfg, command)


def open_data(cfg: ExperimentConfig, bundle: Bundle | None = None) -> list[str]:
    """Build the data bundle (every task, reference, alignment and eval file the builder reads, each row
    checked by the loaders), then open the files other stages read later. One line per part with counts.
    ``bundle``: the one a caller already built from ``cfg`` (``validate``'s preflight), not built twice."""
    b = bundle if bundle is not None else build_bundle(cfg)
    if not b.task:
        raise UserError("the task data has no rows")
    lines = [f"task rows: {len(b.task)} ({sum(bool(r.harmful) for r in b.task)} labelled harmful)",
             f"safety references: {len(b.safety_ref)}", f"alignment rows: {len(b.align)}"]
    for kind, sets in (("harmful eval", b.eval_harmful), ("over-refusal eval", b.eval_overrefusal),
                       ("task eval", b.eval_task)):
        if sets:
            lines.append(f"{kind}: " + ", ".join(f"{k} {len(v)}" for k, v in sets.items()))
    lines += _later_files(cfg)
    return lines


def _later_files(cfg: ExperimentConfig) -> list[str]:
    """Files read after the bundle (by a selector, the evaluation's benchmarks): opened and counted now."""
    lines = []
    methods = methods_used(cfg.selection.method, cfg.compare)
    row_files: dict[str, Any] = {}
    if "dsir" in methods and cfg.selection.dsir.target not in ("safety_ref", "safeinstr"):
        row_files["selection.dsir.target"] = cfg.selection.dsir.target
    if (cfg.selection.safeinstr.count > 0 or "safeinstr" in methods) and \
            cfg.selection.safeinstr.source not in ("safety_ref", "safeinstr"):
        row_files["selection.safeinstr.source"] = cfg.selection.safeinstr.source
    for key, path in row_files.items():
        if not Path(path).exists():
            raise UserError(f"{key}={path}: file not found")
        lines.append(f"{key}: {len(loaders.load_rows(path))} rows")
    b = cfg.eval.benchmarks
    if b.alpacaeval or b.arenahard_questions or b.mtbench_questions:
        if b.alpacaeval:
            lines.append(f"eval.benchmarks.alpacaeval: {len(benchmarks.load_alpacaeval(b.alpacaeval))} questions")
        if b.arenahard_questions:
            if not b.arenahard_baseline:
                raise UserError("eval.benchmarks.arenahard_questions needs eval.benchmarks.arenahard_baseline")
            n = len(benchmarks.load_arenahard(b.arenahard_questions, b.arenahard_baseline))
            lines.append(f"eval.benchmarks.arenahard: {n} questions")
        if b.mtbench_questions:
            n = len(benchmarks.load_mtbench(b.mtbench_questions, b.mtbench_reference))
            lines.append(f"eval.benchmarks.mtbench: {n} questions")
    if cfg.eval.reference and not RunDir(cfg.eval.reference).generations.is_file():
        raise UserError(f"eval.reference={cfg.eval.reference}: no generations.jsonl there (not a finished run)")
    return lines
