"""The report's tables in the thesis' layouts, as markdown or LaTeX.

- classification (Tables 5.1-5.3): one row per backbone, per dataset its top-1 accuracy and the
  model's size (params, MACs, KiB; the classifier's size depends on the dataset's classes);
- detection (Table 5.4): mAP and ms/image;
- segmentation (Table 5.5): mIoU.

Every metric cell is ``mean ± std`` over seeds with the 95% t interval and n beside it; with a
single seed the interval cell says so. Fractions (accuracy, mAP, mIoU) are shown in percent,
differences in percentage points. Written by hand: markdown and LaTeX tables with merged
numeric formatting are a few lines, and no table library is a dependency of the suite.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from analysis.grouping import expansion
from analysis.results import Comparison, GroupResult
from analysis.stats import Summary

PERCENT_METRICS = ("acc", "acc_top5", "map", "map_50", "map_coco", "map_coco_50", "miou",
                   "pixel_acc")
METRIC_NAMES = {"acc": "top-1", "acc_top5": "top-5", "map": "mAP", "map_coco": "COCO mAP",
                "map_coco_50": "COCO mAP@0.5", "miou": "mIoU", "pixel_acc": "pixel acc"}


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool]  # right-align the column
    notes: list[str]


def is_percent(metric: str) -> bool:
    return metric.rsplit("/", 1)[-1] in PERCENT_METRICS


def metric_label(metric: str) -> str:
    leaf = metric.rsplit("/", 1)[-1]
    name = METRIC_NAMES.get(leaf, metric)
    return f"{name} %" if is_percent(metric) else name


def _scale(metric: str) -> float:
    return 100.0 if is_percent(metric) else 1.0


def mean_std(summary: Summary, scale: float, digits: int = 2) -> str:
    if summary.std is None:
        return f"{summary.mean * scale:.{digits}f}"
    return f"{summary.mean * scale:.{digits}f} ± {summary.std * scale:.{digits}f}"


def interval(summary: Summary | None, scale: float, digits: int = 2) -> str:
    if summary is None:
        return "no shared seed"
    if not summary.has_interval:
        return f"n={summary.n}: no interval"
    return f"[{summary.ci_low * scale:.{digits}f}, {summary.ci_high * scale:.{digits}f}]"


def metric_tables(results: Sequence[GroupResult]) -> list[Table]:
    """One table per task: rows are backbones, column blocks are datasets (and recipes)."""
    tables = []
    for task in dict.fromkeys(r.group.task for r in results):
        task_results = [r for r in results if r.group.task == task]
        metric = task_results[0].metric
        scale = _scale(metric)
        settings = list(dict.fromkeys(r.group.setting for r in task_results))
        backbones = list(dict.fromkeys(r.group.label for r in task_results))
        with_latency = any(r.latency for r in task_results)
        with_structure = any(r.structure or r.structure_note for r in task_results)
        block = [metric_label(metric), "95% CI", "n"] + (["ms/image"] if with_latency else []) + (
            ["params", "MMACs", "KiB"] if with_structure else [])
        headers = ["backbone"]
        for setting in settings:
            headers += [f"{block[0]} ({setting})", *block[1:]]
        numeric = [False] + [h != "95% CI" for h in headers[1:]]
        cell = {(r.group.label, r.group.setting): r for r in task_results}
        rows = []
        for backbone in backbones:
            row = [backbone]
            for setting in settings:
                r = cell.get((backbone, setting))
                row += _block_cells(r, scale, with_latency, with_structure) if r else ["–"] * len(block)
            rows.append(row)
        confidence = f"{task_results[0].summary.confidence:.0%}"
        note = (f"{metric} over seeds: mean ± sample std, {confidence} Student-t interval, n runs."
                + (" In percent." if scale != 1 else "")
                + (" ms/image: test/ms_per_image, mean ± std over the runs." if with_latency else ""))
        if with_structure:
            note += (" params / MMACs / KiB: the trained model rebuilt from its config (MACs at "
                     "the run's input size; KiB: its fp32 state_dict saved with torch.save, "
                     "BatchNorm statistics included, the thesis' model size).")
        notes = [note]
        notes += [f"{r.group.label} on {r.group.setting}: structure not computed ({r.structure_note})"
                  for r in task_results if r.structure_note]
        tables.append(Table(f"{_title(task)} ({metric})", headers, rows, numeric,
                            notes))
    return tables


def _block_cells(r: GroupResult, scale: float, with_latency: bool, with_structure: bool
                 ) -> list[str]:
    cells = [mean_std(r.summary, scale), interval(r.summary, scale), str(r.summary.n)]
    if with_latency:
        cells.append(mean_std(r.latency, 1.0) if r.latency else "–")
    st = r.structure
    if with_structure:
        cells += [f"{st.params:,}", f"{st.macs / 1e6:,.1f}", f"{st.kib:,.0f}"] if st else ["–"] * 3
    return cells


def difference_table(comparisons: Sequence[Comparison], baseline: str, candidate: str) -> Table:
    """Paired same-seed differences candidate - baseline."""
    metric = comparisons[0].baseline.metric if comparisons else ""
    scale = _scale(metric)
    unit = " (points)" if scale != 1 else ""
    headers = ["task", "dataset", "e", "baseline", "candidate", "pairs",
               f"Δ mean ± std{unit}", "95% CI", "seeds"]
    rows = []
    notes = [f"{candidate} - {baseline} per seed run with both backbones (same seed, same "
             "recipe), then mean, sample std and Student-t interval of those differences."]
    for comp in comparisons:
        b, c, p = comp.baseline.group, comp.candidate.group, comp.paired
        factors = {expansion(b.backbone), expansion(c.backbone)}
        factor = "/".join(str(f) for f in (expansion(b.backbone), expansion(c.backbone))
                          ) if len(factors) > 1 else str(factors.pop() or "–")
        rows.append([
            b.task, b.setting, factor, b.label, c.label,
            str(len(p.seeds)), mean_std(p.summary, scale) if p.summary else "–",
            interval(p.summary, scale), " ".join(map(str, p.seeds)) or "–",
        ])
        if p.baseline_only or p.candidate_only:
            notes.append(f"{b.setting} {b.label} vs {c.label}: unpaired seeds left out "
                         f"({b.label}: {list(p.baseline_only)}, {c.label}: {list(p.candidate_only)})")
    numeric = [False, False, True, False, False, True, True, False, False]
    return Table(f"{candidate} - {baseline}, paired by seed ({metric})", headers, rows, numeric,
                 notes)


def to_markdown(table: Table) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in table.rows]) for i, h in enumerate(table.headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if num else c.ljust(w)
                                 for c, w, num in zip(cells, widths, table.numeric)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if num else "-" * (w + 2)
                          for w, num in zip(widths, table.numeric)) + "|"
    lines = [f"### {table.title}", "", line(table.headers), rule, *(line(r) for r in table.rows)]
    if table.notes:
        lines += [""] + [f"- {note}" for note in table.notes]
    return "\n".join(lines)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    out = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)
    return out.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("–", "--")


def to_latex(table: Table) -> str:
    """A booktabs table environment."""
    spec = "".join("r" if num else "l" for num in table.numeric)
    body = [" & ".join(latex_escape(c) for c in row) + r" \\" for row in table.rows]
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in table.headers) + r" \\", r"\midrule", *body,
             r"\bottomrule", r"\end{tabular}",
             rf"\caption{{{latex_escape(table.title + '. ' + ' '.join(table.notes))}}}",
             r"\end{table}"]
    return "\n".join(lines)


def _title(task: str) -> str:
    """The task's table title (its TaskSpec), or its name for a task this version lacks."""
    from tasks.registry import get_task, list_tasks

    return get_task(task).title if task in list_tasks() else task
