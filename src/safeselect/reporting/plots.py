"""One chart per ablation and metric: each replacement's mean over seeds with its 95% t-interval (with one seed,
the run's own bootstrap interval over prompts where it has one), the seeds as dots, and the reference run as a
dashed line. matplotlib (Agg) is imported only when a chart is drawn."""

from __future__ import annotations

from pathlib import Path

from safeselect.core.stats import t_interval


def plot_metric(path: str | Path, *, title: str, xlabel: str, labels: list[str], values: dict[str, list[float]],
                reference: float | None = None, lower_is_better: bool = False,
                run_ci: dict[str, tuple[float, float]] | None = None,
                bounds: tuple[float, float] | None = None) -> Path:
    """Draw ``values`` (replacement label -> per-seed values) in the order of ``labels`` and save a PNG.

    ``run_ci`` (label -> (lo, hi)): the bootstrap interval of a replacement's single run, drawn when it
    has one seed. ``bounds``: the metric's range, which clips the t-intervals.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(max(4.8, 1.3 * len(labels) + 2.4), 4.0))
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
        mean, lo, hi = t_interval(vs, bounds)
        # seeds side by side just left of the mean, so they do not hide under its marker
        offsets = [x - 0.12 - 0.04 * i / max(1, len(vs) - 1) for i in range(len(vs))]
        ax.scatter(offsets, vs, s=14, color="0.5", zorder=2, label=once("seeds"))
        if lo is not None:
            ax.errorbar([x], [mean], yerr=[[mean - lo], [hi - mean]], fmt="o", color="C0", capsize=5, zorder=3,
                        label=once("mean, 95% t-interval"))
        elif run_ci and lab in run_ci:
            blo, bhi = run_ci[lab]
            ax.errorbar([x], [mean], yerr=[[max(mean - blo, 0.0)], [max(bhi - mean, 0.0)]], fmt="s", color="C1",
                        capsize=5, zorder=3, label=once("one seed, 95% bootstrap over prompts"))
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
    fig.savefig(path, dpi=110, bbox_inches="tight")  # long rotated labels stay inside the image
    plt.close(fig)
    return path
