"""Pareto plot: the metric against model cost (parameters, MACs, and measured ms/image where the
runs have it), one marker per backbone, error bars over seeds (sample std), and the front of
models no other model beats at lower or equal cost drawn as a dashed step line."""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.results import GroupResult  # noqa: E402
from analysis.tables import is_percent, metric_label  # noqa: E402

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (lower-or-equal cost and higher metric, or
    lower cost and equal metric), ordered by cost."""
    front = []
    for i, (cost, value) in enumerate(points):
        dominated = any((c <= cost and v > value) or (c < cost and v >= value)
                        for j, (c, v) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def plot_pareto(results: Sequence[GroupResult], path: str | Path, title: str) -> Path | None:
    """One figure for the results of one task and dataset; None when nothing has a cost."""
    axes_spec = []
    if any(r.structure for r in results):
        axes_spec += [("params (M)", lambda r: r.structure.params / 1e6 if r.structure else None, None),
                      ("MMACs", lambda r: r.structure.macs / 1e6 if r.structure else None, None)]
    if any(r.latency for r in results):
        axes_spec.append(("ms / image", lambda r: r.latency.mean if r.latency else None,
                          lambda r: r.latency.std if r.latency and r.latency.std else 0.0))
    if not axes_spec:
        return None
    metric = results[0].metric
    scale = 100.0 if is_percent(metric) else 1.0
    fig, axes = plt.subplots(1, len(axes_spec), figsize=(3.6 * len(axes_spec), 3.2),
                             sharey=True, squeeze=False)
    for ax, (xlabel, cost_of, xerr_of) in zip(axes[0], axes_spec):
        points, kept = [], []
        for index, r in enumerate(results):
            cost = cost_of(r)
            if cost is None:
                continue
            y = r.summary.mean * scale
            yerr = (r.summary.std or 0.0) * scale
            xerr = xerr_of(r) if xerr_of else None
            ax.errorbar(cost, y, yerr=yerr, xerr=xerr, marker=MARKERS[index % len(MARKERS)],
                        color=f"C{index % 10}", capsize=3, linestyle="none",
                        label=f"{r.group.label} (n={r.summary.n})")
            points.append((cost, y))
            kept.append(r)
        front = pareto_front(points)
        if len(front) > 1:
            ax.step([points[i][0] for i in front], [points[i][1] for i in front], where="post",
                    color="grey", linestyle="--", linewidth=0.8, zorder=0)
        ax.margins(x=0.15, y=0.1)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric_label(metric) + " (mean ± std over seeds)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8,
               frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08 + 0.05 * ((len(labels) - 1) // 4), 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_file_name(task: str, setting: str) -> str:
    """``pareto_<task>_<setting>.png`` with anything but letters, digits, ``.-_`` replaced."""
    return "pareto_" + re.sub(r"[^A-Za-z0-9._-]+", "_", f"{task}_{setting}").strip("_") + ".png"
