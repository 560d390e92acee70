"""A run folder: the file names of docs/ARCHITECTURE.md ("Files a run writes"), atomic writes, the one
completion marker and the config drift check.

Every command that writes a run (``run``, ``select``, ``eval``, ``eva``, an
ablation's runs) goes through :class:`RunDir`, so "finished" means one thing
everywhere: ``metrics.json`` parses and says ``"complete": true``. It is written
last and atomically, so a run killed half-way is simply run again, and a
finished run is reused only when the config it was made with matches (else
:meth:`RunDir.check_reusable` refuses with the differing keys).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from safeselect.core.dotted import flatten, nest
from safeselect.core.io import atomic_write_text, read_json, write_json, write_jsonl
from safeselect.errors import UserError

COMPLETE = "complete"  # the key of the completion marker in metrics.json


class RunDir:
    """The folder of one run and the names of its files."""

    CONFIG = "config.yaml"
    SELECTION = "selection.jsonl"
    METRICS = "metrics.json"
    GENERATIONS = "generations.jsonl"
    REPORT = "report.md"
    REPORT_HTML = "report.html"
    MODEL = "model"
    CHECKPOINTS = "checkpoints"
    TRAIN_LOG = "train_log.jsonl"
    ERROR = "error.txt"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------ names

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def selection(self) -> Path:
        return self.path / self.SELECTION

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def generations(self) -> Path:
        return self.path / self.GENERATIONS

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def report_html(self) -> Path:
        return self.path / self.REPORT_HTML

    @property
    def model(self) -> Path:
        return self.path / self.MODEL

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def error(self) -> Path:
        return self.path / self.ERROR

    # ------------------------------------------------------------------ state

    def create(self) -> RunDir:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def is_complete(self) -> bool:
        """True when ``metrics.json`` parses and says ``"complete": true`` (the one completion marker)."""
        try:
            data = json.loads(self.metrics.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return False
        return isinstance(data, dict) and data.get(COMPLETE) is True

    def read_metrics(self) -> dict[str, Any]:
        """The run's metrics as flat dotted names (the marker included)."""
        return flatten(read_json(self.metrics))

    def saved_config(self) -> dict[str, Any] | None:
        """The resolved config the run was made with, as a nested mapping; None when there is none."""
        import yaml

        if not self.config.exists():
            return None
        return yaml.safe_load(self.config.read_text(encoding="utf-8")) or {}

    def drift(self, now: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
        """``key: saved -> now`` for each setting where ``config.yaml`` differs from ``now`` (a nested mapping).

        Keys in ``ignore`` (exact, or prefixes ending in ".") are labels or settings that cannot change
        the result. Keys only one side has (a config written before a key existed) are not compared, so a
        finished run stays reusable across versions that only add knobs.
        """
        saved = self.saved_config()
        if saved is None:
            return []
        old, new = flatten(saved), flatten(now)
        prefixes = tuple(k for k in ignore if k.endswith("."))
        return [f"{k}: {old[k]!r} -> {new[k]!r}" for k in sorted(old.keys() & new.keys())
                if k not in ignore and not k.startswith(prefixes) and old[k] != new[k]]

    def check_reusable(self, now: dict[str, Any], ignore: tuple[str, ...] = ()) -> bool:
        """True when the run is complete and made with ``now``; a complete run of another config is an error."""
        if not self.is_complete():
            return False
        drift = self.drift(now, ignore)
        if drift:
            raise UserError(f"{self.path} holds a finished run of another config ({'; '.join(drift[:3])}"
                            f"{'; ...' if len(drift) > 3 else ''}): choose another --out or delete it")
        return True

    # ------------------------------------------------------------------ writes (all atomic)

    def write_text(self, name: str, text: str) -> Path:
        atomic_write_text(self.path / name, text)
        return self.path / name

    def write_json(self, name: str, obj: Any) -> Path:
        write_json(self.path / name, obj)
        return self.path / name

    def write_jsonl(self, name: str, rows: Iterable[dict[str, Any]]) -> Path:
        write_jsonl(self.path / name, rows)
        return self.path / name

    def write_config(self, yaml_text: str) -> None:
        """The resolved config, written first: it is what :meth:`drift` compares against."""
        self.write_text(self.CONFIG, yaml_text)

    def write_metrics(self, flat: dict[str, Any], complete: bool = True) -> None:
        """``metrics.json`` from flat dotted names; with ``complete`` the marker that finishes the run.

        Write it last: once it says complete, the run is never redone.
        """
        flat = {k: v for k, v in flat.items() if k != COMPLETE}
        if complete:
            flat[COMPLETE] = True
        self.write_json(self.METRICS, nest(flat))

    def mark_complete(self, fallback: dict[str, Any] | None = None) -> None:
        """Mark a run finished that its run function left unmarked: its metrics.json (or ``fallback``) + marker."""
        try:
            flat = self.read_metrics()
        except UserError:
            flat = dict(fallback or {})
        self.write_metrics(flat)


def is_complete(path: str | Path) -> bool:
    """Whether the run folder ``path`` holds a finished run (see :meth:`RunDir.is_complete`)."""
    return RunDir(path).is_complete()
