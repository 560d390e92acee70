"""The training log of a run: ``RUN/train_log.jsonl`` always, accelerate's trackers when asked.

Every training loop (alignment excepted: it is cached, not part of a run) reports
``log(stage, step, values)`` here; the main process appends one JSON line per call
(``{"stage", "step", ...values}``), forwards it to the configured tracker
(``tracking.report_to``: TensorBoard writes offline under ``RUN/tracking/``; W&B and
MLflow read their own settings, keys included, from the environment) and logs it at
INFO (shown by ``--verbose``). Evaluation metrics go to the tracker once at the end.
A resumed stage first drops its lines after the checkpoint's step, so the file holds
one curve per stage, as an uninterrupted run would have written it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from safeselect.core.dotted import flatten
from safeselect.core.io import atomic_write_text
from safeselect.core.rundir import RunDir
from safeselect.errors import UserError

log = logging.getLogger("safeselect.train")

TRAIN_LOG = RunDir.TRAIN_LOG
TRACKING_DIR = "tracking"


class TrainLog:
    """Where training loops report their loss. ``out_dir=None`` keeps only the INFO log (no files)."""

    def __init__(self, out_dir: str | Path | None = None, report_to: str = "none", project: str = "safeselect",
                 config: dict[str, Any] | None = None, main_process: bool = True, every: int = 1) -> None:
        self.path = Path(out_dir) / TRAIN_LOG if out_dir is not None else None
        self.main = main_process
        self.every = max(1, int(every))
        self.tracker: Any = None
        if self.main and report_to != "none" and out_dir is not None:
            self.tracker = _make_tracker(report_to, project, Path(out_dir) / TRACKING_DIR)
            if config is not None:
                self.tracker.store_init_configuration(_scalars(config))

    def log(self, stage: str, step: int, values: dict[str, float]) -> None:
        """One optimiser step of ``stage`` (logged when ``step`` is a multiple of ``every``, or step 1)."""
        if not self.main or (step % self.every and step != 1):
            return
        rec = {"stage": stage, "step": step, **{k: float(v) for k, v in values.items()}}
        log.info("%s step %d  %s", stage, step, "  ".join(f"{k} {v:.4g}" for k, v in values.items()))
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")
        if self.tracker is not None:
            self.tracker.log({f"{stage}/{k}": float(v) for k, v in values.items()}, step=step)

    def rewind(self, stage: str, step: int) -> None:
        """Drop ``stage``'s lines after ``step`` (a resumed stage logs them again)."""
        if not self.main or self.path is None or not self.path.exists():
            return

        keep = [line for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()
                and not _after(json.loads(line), stage, step)]
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))

    def log_metrics(self, metrics: dict[str, Any], step: int = 0) -> None:
        """The run's final numeric metrics, to the tracker only (metrics.json holds them already)."""
        if self.tracker is not None:
            self.tracker.log({f"eval/{k}": float(v) for k, v in metrics.items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=step)

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.finish()
            self.tracker = None


def _after(rec: dict[str, Any], stage: str, step: int) -> bool:
    return rec.get("stage") == stage and int(rec.get("step", 0)) > step


def read_curve(out_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """stage -> [(step, loss)] from ``RUN/train_log.jsonl`` (empty when the run trained nothing)."""
    p = Path(out_dir) / TRAIN_LOG
    curves: dict[str, list[tuple[int, float]]] = {}
    if not p.exists():
        return curves
    for line in p.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            if "loss" in rec:
                curves.setdefault(rec["stage"], []).append((int(rec["step"]), float(rec["loss"])))
    return curves


def plot_curve(out_dir: str | Path, path: str | Path) -> Path | None:
    """Draw the loss curve of every stage into ``path`` (PNG); None without matplotlib or without a curve."""
    curves = read_curve(out_dir)
    if not curves:
        return None
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for stage, pts in curves.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 40 else None, label=stage)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _make_tracker(report_to: str, project: str, logging_dir: Path) -> Any:
    """An accelerate tracker; a missing package is one clear line (exit 2), not a traceback."""

    try:
        if report_to == "tensorboard":
            from accelerate.tracking import TensorBoardTracker

            logging_dir.mkdir(parents=True, exist_ok=True)
            tracker = TensorBoardTracker(project, str(logging_dir))
        elif report_to == "wandb":
            from accelerate.tracking import WandBTracker

            tracker = WandBTracker(project, dir=str(logging_dir))
        elif report_to == "mlflow":
            from accelerate.tracking import MLflowTracker

            tracker = MLflowTracker(project, logging_dir=str(logging_dir))
        else:
            raise UserError(f"tracking.report_to={report_to!r}: choose none, tensorboard, wandb or mlflow")
        tracker.start()
    except (ImportError, ModuleNotFoundError) as e:
        extra = {"tensorboard": "safeselect[track]"}.get(report_to, report_to)
        raise UserError(f"tracking.report_to={report_to} needs its package ({e.name or e}): pip install {extra}") from None
    return tracker


def _scalars(config: dict[str, Any]) -> dict[str, Any]:
    """The flat config with values trackers accept (lists and None as text)."""

    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flatten(config).items()}
