"""Comparison report of finished runs: the thesis' tables with seeds, confidence intervals,
paired differences and a Pareto plot.

    python -m analysis.report logs/                                   # every run below logs/
    python -m analysis.report logs/classification/multiruns/2026-01-01_12-00-00
    python -m analysis.report logs/ --task detection --data voc2007 --out reports/det
    python -m analysis.report logs/ --baseline mv2 --candidate cog --format latex
    python -m analysis.report logs/ --metric test/acc_top5 --task classification
    python -m analysis.report --status logs/        # where every run stands (analysis/status.py)

A hyperparameter search (a multirun folder with Optuna's ``optimization_results.yaml``) also gets
a table of its trials: the searched parameters, the validation metric optimised, the test metric,
the best trial marked (``analysis.search``).

PATH is a run folder, a multirun folder or any parent: every folder below it with a
``.hydra/config.yaml`` or ``metrics.json`` is a run. Runs are grouped by task, dataset, backbone
config (pointwise settings included) and recipe, and summarised over seeds (see
``analysis.grouping``). Runs without ``metrics.json`` (crashed or still running), without the
metric, or marked ``"diverged": true`` are listed and left out.

Prints the report (markdown, or LaTeX with ``--format latex``) and writes to ``--out`` (default
``<first PATH>/report``): ``report.md`` / ``report.tex``, ``groups.csv`` (one row per group,
raw metric values), ``differences.csv`` (paired differences), ``runs.csv`` (every run found,
used or skipped, with the reason) and ``pareto_<task>_<dataset>.png``.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from analysis.grouping import Group, group_runs
from analysis.pareto import plot_file_name, plot_pareto
from analysis.results import Comparison, GroupResult, comparisons, group_results
from analysis.search import search_tables
from analysis.runs import DEFAULT_METRIC, TASKS, Run, find_run_folders, load_run, skip_reason
from analysis.stats import CONFIDENCE
from analysis.structure import StructureCache
from analysis.tables import Table, difference_table, metric_tables, to_latex, to_markdown
from benchmarks.common import write_csv
from errors import ConfigError, DataError, SuiteFileNotFoundError, exit_on_user_error
from cogsuite.output_paths import check_output_folder, output_folder

RUN_COLUMNS = ("path", "task", "dataset", "backbone", "seed", "status", "metric", "value", "reason")


@dataclass
class Report:
    """Everything a report shows; ``text`` is what is printed."""

    runs: list[Run]
    skipped: list[tuple[Run, str]]
    groups: list[Group]
    results: list[GroupResult]
    comparisons: list[Comparison]
    notes: list[str]
    tables: list[Table] = field(default_factory=list)
    text: str = ""
    written: list[Path] = field(default_factory=list)


def build_report(paths: Sequence[str | Path], *, task: str | None = None,
                 datasets: Sequence[str] | None = None, metric: str | None = None,
                 baseline: str = "mv2", candidate: str = "cog", structure: bool = True,
                 confidence: float = CONFIDENCE, fmt: str = "markdown") -> Report:
    """Find, check, group and summarise the runs below ``paths`` (nothing is written)."""
    folders = find_run_folders(paths)
    if not folders:
        raise SuiteFileNotFoundError(
            f"no run below {', '.join(map(str, paths))}: a run folder holds .hydra/config.yaml "
            "and, when finished, metrics.json (train.py writes them under logs/<task>/)")
    runs = [load_run(folder) for folder in folders]
    # A folder whose config cannot be read matches no filter but is always worth listing.
    selected = [r for r in runs if r.config is None or _selected(r, task, datasets)]
    if not selected:
        raise ConfigError(_nothing_selected(runs, task, datasets))
    metric_for = {t: metric or DEFAULT_METRIC[t] for t in TASKS}

    usable, skipped = [], []
    for run in selected:
        reason = skip_reason(run, metric_for.get(run.task, metric or ""))
        if reason is None:
            usable.append(run)
        else:
            skipped.append((run, reason))
    groups, notes = group_runs(usable)
    results = group_results(groups, metric_for, StructureCache() if structure else None, confidence)
    compared = comparisons(results, baseline, candidate, confidence)
    report = Report(runs=selected, skipped=skipped, groups=groups, results=results,
                    comparisons=compared, notes=notes)
    report.tables = metric_tables(results)
    for task_name in dict.fromkeys(c.baseline.group.task for c in compared):
        report.tables.append(difference_table(
            [c for c in compared if c.baseline.group.task == task_name], baseline, candidate))
    # Optuna sweeps (hparams_search=...): every trial with its parameters and the best one.
    report.tables += search_tables(paths)
    report.text = render(report, paths, fmt, metric_for)
    return report


def _selected(run: Run, task: str | None, datasets: Sequence[str] | None) -> bool:
    return (task is None or run.task == task) and (not datasets or run.dataset in datasets)


def _nothing_selected(runs: Sequence[Run], task: str | None, datasets: Sequence[str] | None) -> str:
    found = sorted({f"{r.task}/{r.dataset}" for r in runs if not r.problem})
    return (f"no run matches --task {task or 'any'} --data {','.join(datasets or []) or 'any'}; "
            f"found task/dataset: {', '.join(found) or 'none'}")


def render(report: Report, paths: Sequence[str | Path], fmt: str,
           metric_for: dict[str, str]) -> str:
    used = sum(len(g.runs) for g in report.groups)
    lines = [f"# Run report: {', '.join(map(str, paths))}", "",
             f"{len(report.runs)} runs found, {used} used in {len(report.groups)} groups, "
             f"{len(report.skipped)} skipped.", ""]
    if fmt == "latex":
        lines = [f"% {line}" if line else "" for line in lines]
    for table in report.tables:
        lines += [to_latex(table) if fmt == "latex" else to_markdown(table), ""]
    if not report.results:
        tasks = sorted({r.task for r in report.runs if not r.problem})
        lines += [f"No completed run to summarise (metric: "
                  f"{', '.join(metric_for.get(t, '?') for t in tasks) or '?'}).", ""]
    if report.notes:
        lines += _section("Runs kept apart", [f"- {n}" for n in report.notes], fmt)
    if report.skipped:
        lines += _section(f"Skipped runs ({len(report.skipped)})",
                          [f"- {_shown(run.path)}: {reason}" for run, reason in report.skipped],
                          fmt)
    return "\n".join(lines).rstrip() + "\n"


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _section(title: str, body: list[str], fmt: str) -> list[str]:
    if fmt == "latex":
        return [f"% {title}", *(f"% {line}" for line in body), ""]
    return [f"### {title}", "", *body, ""]


def write_outputs(report: Report, out: Path, fmt: str, plots: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / ("report.tex" if fmt == "latex" else "report.md")]
    written[0].write_text(report.text)
    rows = [r.as_row() for r in report.results]
    written.append(write_csv(out / "groups.csv", rows, list(rows[0]) if rows else ["task"]))
    diffs = [c.as_row() for c in report.comparisons]
    written.append(write_csv(out / "differences.csv", diffs, list(diffs[0]) if diffs else ["task"]))
    written.append(write_csv(out / "runs.csv", _run_rows(report), RUN_COLUMNS))
    if plots:
        by_setting: dict[tuple[str, str], list[GroupResult]] = {}
        for r in report.results:
            by_setting.setdefault((r.group.task, r.group.setting), []).append(r)
        for (task, setting), results in by_setting.items():
            path = plot_pareto(results, out / plot_file_name(task, setting), f"{task} · {setting}")
            if path is not None:
                written.append(path)
    report.written = written
    return written


def _run_rows(report: Report) -> list[dict]:
    rows = []
    for result in report.results:
        for run in result.group.runs:
            rows.append(_run_row(run, "used", result.metric, "", result.group.label))
    for run, reason in report.skipped:
        label = str(run.backbone.get("name", "")) if run.config is not None else ""
        rows.append(_run_row(run, "diverged" if run.diverged else "skipped", None, reason, label))
    return rows


def _run_row(run: Run, status: str, metric: str | None, reason: str, label: str) -> dict:
    known = run.config is not None
    return {"path": str(run.path), "task": run.task if known else "",
            "dataset": run.dataset if known else "", "backbone": label,
            "seed": run.seed if known else None, "status": status, "metric": metric or "",
            "value": run.value(metric) if metric else None, "reason": reason}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.report",
        description="Tables (mean ± std, 95%% t interval over seeds, paired differences), CSV "
                    "and a Pareto plot from train.py run folders.")
    parser.add_argument("paths", nargs="+", help="run folders, multirun folders or parents (logs/)")
    parser.add_argument("--task", choices=TASKS, help="only this task")
    parser.add_argument("--data", help="only these datasets (config group names, comma-separated)")
    parser.add_argument("--metric", help="metric from metrics.json (default: test/acc, test/map, "
                                         "test/miou by task)")
    parser.add_argument("--baseline", help="backbone family, name or pointwise layer (default mv2)")
    parser.add_argument("--candidate", help="backbone family, name or pointwise layer (default cog)")
    parser.add_argument("--out", help="output folder (default: <first PATH>/report, or ./report when "
                                      "that is not writable)")
    parser.add_argument("--format", choices=("markdown", "latex"), default="markdown")
    parser.add_argument("--confidence", type=float, default=CONFIDENCE,
                        help="confidence level of the t intervals (default 0.95)")
    parser.add_argument("--no-structure", action="store_true",
                        help="skip rebuilding models for params / MACs / KiB")
    parser.add_argument("--no-plot", action="store_true", help="write no Pareto plot")
    parser.add_argument("--status", action="store_true",
                        help="instead of the report: where every run stands (finished, running "
                             "with its last heartbeat, requeued, failed with its error, diverged) "
                             "and which table rows still lack seeds (analysis/status.py)")
    parser.add_argument("--seeds", type=int, default=3,
                        help="--status: finished seeds each table row needs (default 3)")
    parser.add_argument("--stale-after", type=float, default=15.0, metavar="MIN",
                        help="--status: a running run without a heartbeat for this many minutes "
                             "is shown as 'running?' (default 15)")
    args = parser.parse_args(argv)
    if (args.baseline is None) != (args.candidate is None):
        parser.error("--baseline and --candidate go together (e.g. --baseline mv2 --candidate cog)")
    if not 0.0 < args.confidence < 1.0:
        parser.error("--confidence must be in (0, 1), e.g. 0.95")
    return args


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> Report | None:
    args = parse_args(argv)
    if args.status:
        from analysis.status import status_report

        text, _states = status_report(args.paths, seeds=args.seeds, stale_after=args.stale_after)
        print(text)
        return None
    datasets = [d.strip() for d in args.data.split(",") if d.strip()] if args.data else None
    report = build_report(
        args.paths, task=args.task, datasets=datasets, metric=args.metric,
        baseline=args.baseline or "mv2", candidate=args.candidate or "cog",
        structure=not args.no_structure, confidence=args.confidence, fmt=args.format)
    print(report.text)
    if not report.results:
        raise DataError(f"none of the {len(report.runs)} runs found is complete; "
                        "see the skipped runs above")
    if args.out:
        out = check_output_folder(Path(args.out), "report", "--out")
    else:  # the default place may be a read-only (shared, archived) logs folder
        out = output_folder(Path(args.paths[0]) / "report", [Path.cwd() / "report"], "report", "--out")
    written = write_outputs(report, out, args.format, plots=not args.no_plot)
    print("written: " + ", ".join(str(p) for p in written))
    return report


if __name__ == "__main__":
    main()
