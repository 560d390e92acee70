"""Up-front checks of everything a command reads and writes, so bad input fails before anything is written.

A command calls :func:`check_out` on its output folder and :func:`preflight` on its config before it
creates a folder or writes a file: every path a config key names is opened (a folder where a file is
expected, a file that is not UTF-8 text, a gzip that is not gzip, ...), the data is built and loaded
with the same loaders the run uses, and rows that cannot be trained on are refused with counts. Each
failure is a :class:`UserError`: one line naming the file (and line) or the key, exit code 2.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safeselect.config import loading as config_mod
from safeselect.core.io import read_bytes, read_text
from safeselect.data.named_sets import add_named_sets
from safeselect.errors import UserError, suggest
from safeselect.registry import registry
from safeselect.selection.safeinstr import (
    ON_TOP,
    TRAINS_WHILE_SELECTING,
    base_method,
    load_pool,
    methods_used,
)

if TYPE_CHECKING:
    from safeselect.config.schema import ExperimentConfig
    from safeselect.core.rows import Bundle

ALIGNED_ONLY = "aligned"  # pseudo-method in `compare`: evaluate the aligned starting model, no fine-tuning

# Keys naming a file of rows, or one of a few named sources (the names are not paths).
ROW_FILE_KEYS: dict[str, tuple[str, ...]] = {
    "data.task_path": (),
    "data.eval_harmful_path": (),
    "data.eval_overrefusal_path": (),
    "data.eval_task_path": (),
    "data.safety_ref.source": ("builtin", "safeinstr", "hh"),
    "align.source": ("builtin",),
    "selection.dsir.target": ("safety_ref", "safeinstr"),
    "selection.safeinstr.source": ("safety_ref", "safeinstr"),
    "eva.prompts": ("builtin", "alpaca"),
    "eval.benchmarks.alpacaeval": (),
    "eval.benchmarks.arenahard_questions": (),
    "eval.benchmarks.arenahard_baseline": (),
    "eval.benchmarks.mtbench_questions": (),
    "eval.benchmarks.mtbench_reference": (),
}
# Keys naming a folder that must exist (when set).
DIR_KEYS = ("data.data_dir", "selection.seal.logits_from", "eval.reference", "eva.init_from")
# Keys naming a folder the run writes into (when set).
OUT_DIR_KEYS = ("judges.llm.cache_dir", "reward.out")
# Binary formats read by their own libraries: only existence is checked here.
_BINARY_SUFFIXES = (".parquet", ".arrow")


def check_out(path: str | Path, flag: str = "--out") -> Path:
    """``path`` can be created (or is a folder) and written in; nothing is left behind by the check."""
    p = Path(path)
    try:
        if p.exists() and not p.is_dir():
            raise UserError(f"{flag} {p}: exists and is not a folder")
        anc = p
        while not anc.exists():
            if anc.parent == anc:
                break
            anc = anc.parent
        if not anc.is_dir():
            raise UserError(f"{flag} {p}: {anc} is a file, not a folder")
    except OSError as e:  # a loop of symlinks, a name too long, ...
        raise UserError(f"{flag} {p}: not a usable path ({e.strerror or type(e).__name__})") from None
    try:  # os.access is not enough: root ignores modes, a read-only mount does not
        fd, probe = tempfile.mkstemp(dir=anc, prefix=".safeselect-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"{flag} {p}: cannot write in {anc} ({e.strerror or type(e).__name__})") from None
    return p


def check_methods(cfg: ExperimentConfig) -> None:
    """Every named selector, judge and data builder exists; ``baseline`` is a compared row; ``seeds`` has a
    ``compare`` to run at each seed."""
    for m in [cfg.selection.method, *cfg.compare]:
        if m.endswith(ON_TOP) and base_method(m) in (ALIGNED_ONLY, "safeinstr", *TRAINS_WHILE_SELECTING):
            raise UserError(f"compare entry '{m}': SafeInstr demonstrations go on top of a selector that hands "
                            f"over data (not {ALIGNED_ONLY}, safeinstr itself or {', '.join(TRAINS_WHILE_SELECTING)})")
        if base_method(m) != ALIGNED_ONLY:
            registry("selectors").entry(base_method(m))
    if cfg.baseline is not None and cfg.baseline not in cfg.compare:
        raise UserError(f"baseline='{cfg.baseline}' is not one of compare={cfg.compare}{suggest(cfg.baseline, cfg.compare)}")
    if cfg.seeds and not cfg.compare:
        raise UserError("seeds=[...] runs a comparison at each seed: give `compare` too (e.g. compare=[full,random])")
    for j in cfg.eval.judges:
        registry("judges").entry(j)
    registry("data").entry(cfg.data.benchmark)


def check_file(path: str | Path, key: str) -> Path:
    """A file (not a folder) that exists and reads as UTF-8 text (gzip / xz decompressed); ``key`` names it."""
    p = Path(path)
    try:
        if not p.exists():
            raise UserError(f"file not found: {p}")
        if p.is_dir():
            raise UserError(f"{p}: is a folder, expected a file")
        if p.suffix in _BINARY_SUFFIXES:
            read_bytes(p)
        else:
            read_text(p)
    except UserError as e:
        raise UserError(f"{key}: {e}") from None
    return p


def check_paths(cfg: ExperimentConfig, keys: tuple[str, ...] | None = None) -> None:
    """Every path a config key names: files readable as text, folders present, output folders writable."""
    for key, names in ROW_FILE_KEYS.items():
        if keys is not None and key not in keys:
            continue
        value = config_mod.get(cfg, key)
        if value and value not in names:
            p = Path(value)
            if p.is_dir() and key in ("data.task_path", "data.eval_task_path"):
                continue  # a saved HF dataset folder; its loader says when it is not one
            check_file(p, key)
    for key in DIR_KEYS:
        value = config_mod.get(cfg, key)
        if value and (keys is None or key in keys) and not Path(value).is_dir():
            what = "is a file, expected a folder" if Path(value).exists() else "folder not found"
            raise UserError(f"{key}={value}: {what}")
    for key in OUT_DIR_KEYS:
        value = config_mod.get(cfg, key)
        if value and (keys is None or key in keys):
            check_out(value, flag=key)
    for src in cfg.reward.sources:
        if src not in ("builtin", "hh") and (keys is None or "reward.sources" in keys):
            check_file(src, "reward.sources")


def check_rows(bundle: Bundle, cfg: ExperimentConfig, train: bool = True) -> None:
    """Task rows present and trainable (each with a response); alignment and safety rows too when used."""
    where = cfg.data.task_path if cfg.data.benchmark == "jsonl" and cfg.data.task_path else \
        f"data.benchmark={cfg.data.benchmark}"
    if train:
        if not bundle.task:
            raise UserError(f"{where}: no task rows to select from or fine-tune on")
        _need_responses(bundle.task, where, "task")
    if cfg.align.enabled and cfg.align.source != "builtin":
        if not bundle.align:
            raise UserError(f"align.source={cfg.align.source}: no rows")
        _need_responses(bundle.align, f"align.source={cfg.align.source}", "alignment")
    if cfg.data.safety_ref.source not in ROW_FILE_KEYS["data.safety_ref.source"]:
        if not bundle.safety_ref:
            raise UserError(f"data.safety_ref.source={cfg.data.safety_ref.source}: no rows")
        _need_responses(bundle.safety_ref, f"data.safety_ref.source={cfg.data.safety_ref.source}", "safety reference")


def _need_responses(rows: list[Any], where: str, what: str) -> None:
    empty = [r.row_id for r in rows if not (r.response or "").strip()]
    if empty:
        raise UserError(f"{where}: {len(empty)} of {len(rows)} {what} rows have a prompt but no response "
                        f"(first: row_id '{empty[0]}'); every {what} row needs one to train on")


def methods_train(cfg: ExperimentConfig) -> bool:
    """Whether any run of ``cfg`` selects or fine-tunes (``aligned`` alone only evaluates)."""
    methods = list(cfg.compare) or [cfg.selection.method]
    return any(m != ALIGNED_ONLY for m in methods)


def preflight(cfg: ExperimentConfig, train: bool | None = None) -> Bundle:
    """Open every input of a select / run command and build its data exactly as the run will; returns the bundle.

    Nothing is written. Selector-side pools (DSIR target, SafeInstr demonstrations) are loaded too when the
    configured method or count uses them, so they cannot fail after alignment.
    """

    check_paths(cfg)
    bundle = add_named_sets(registry("data").get(cfg.data.benchmark)(cfg), cfg)
    check_rows(bundle, cfg, methods_train(cfg) if train is None else train)
    _check_selector_pools(cfg, bundle)
    return bundle


def _check_selector_pools(cfg: ExperimentConfig, bundle: Bundle) -> None:
    from types import SimpleNamespace

    methods = methods_used(cfg.selection.method, cfg.compare)
    # the pools' loader reads the selector context's declared values (data.data_dir) and safety_ref
    ctx: Any = SimpleNamespace(value=lambda key: config_mod.get(cfg, key), safety_ref=bundle.safety_ref)
    if "safeinstr" in methods or cfg.selection.safeinstr.count > 0:
        pool = load_pool(cfg.selection.safeinstr.source, ctx)
        if cfg.selection.safeinstr.source not in ROW_FILE_KEYS["selection.safeinstr.source"]:
            if not pool:
                raise UserError(f"selection.safeinstr.source={cfg.selection.safeinstr.source}: no rows")
            _need_responses(pool, f"selection.safeinstr.source={cfg.selection.safeinstr.source}", "demonstration")
    if "dsir" in methods and cfg.selection.dsir.target not in ROW_FILE_KEYS["selection.dsir.target"] \
            and not load_pool(cfg.selection.dsir.target, ctx, key="selection.dsir.target"):
        raise UserError(f"selection.dsir.target={cfg.selection.dsir.target}: no rows")
