"""One chart per ablation and metric: each replacement's mean over seeds with its 95% t-interval, the seeds as
dots, and the reference run as a dashed line. matplotlib (Agg) is imported only when a chart is drawn."""

from __future__ import annotations

from pathlib import Path

from safeselect.experiments.report import t_interval


def plot_metric(path: str | Path, *, title: str, xlabel: str, labels: list[str], values: dict[str, list[float]],
                reference: float | None = None, lower_is_better: bool = False) -> Path:
    """Draw ``values`` (replacement label -> per-seed values) in the order of ``labels`` and save a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(labels) + 2), 3.4))
    xs = list(range(len(labels)))
    legend: set[str] = set()

    def once(name: str) -> str | None:  # one legend entry per kind of mark
        if name in legend:
            return None
        legend.add(name)
        return name

    for x, lab in zip(xs, labels, strict=True):
        vs = values.get(lab) or []
        if not vs:
            continue
        mean, lo, hi = t_interval(vs)
        # seeds side by side just left of the mean, so they do not hide under its marker
        offsets = [x - 0.12 - 0.04 * i / max(1, len(vs) - 1) for i in range(len(vs))]
        ax.scatter(offsets, vs, s=14, color="0.5", zorder=2, label=once("seeds"))
        if lo is not None:
            ax.errorbar([x], [mean], yerr=[[mean - lo], [hi - mean]], fmt="o", color="C0", capsize=5, zorder=3,
                        label=once("mean, 95% t-interval"))
        else:
            ax.plot([x], [mean], "o", color="C0", zorder=3, label=once("mean (one seed)"))
    if reference is not None:
        ax.axhline(reference, color="C3", linestyle="--", linewidth=1, label="reference run")
    ax.set_xticks(xs)
    long = max((len(s) for s in labels), default=0) > 8
    ax.set_xticklabels(labels, rotation=20 if long else 0, ha="right" if long else "center")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(title.split(": ", 1)[-1] + (" (lower is better)" if lower_is_better else ""))
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if legend or reference is not None:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
