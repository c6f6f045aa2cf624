"""Hyperparameter searches (Hydra's Optuna sweeper, ``hparams_search=...``) in a report.

A search is a multirun folder holding the sweeper's ``optimization_results.yaml`` (best params and
value); its trials are the run folders inside it. One table per search: every trial with the
searched parameters (read from the trial's own ``.hydra/overrides.yaml``), the validation metric
the sweeper optimised (the run's ``monitor``, as train.py returned it), its test metric, and the
best trial marked. Trials that crashed or diverged are listed with their status.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from analysis.runs import DEFAULT_METRIC, Run, find_run_folders, load_run
from analysis.tables import Table

RESULTS_FILE = "optimization_results.yaml"


@dataclass
class Search:
    folder: Path
    best_params: dict[str, Any]
    best_value: float | None
    trials: list[Run] = field(default_factory=list)


def find_searches(roots: Iterable[str | Path]) -> list[Search]:
    """Every search folder at or below ``roots`` (or holding a root run), with its trials."""
    folders: dict[Path, None] = {}
    for root in map(Path, roots):
        for candidate in [root, *root.parents[:2]]:  # a trial folder given: its search
            if (candidate / RESULTS_FILE).is_file():
                folders[candidate.resolve()] = None
        if root.is_dir():
            for path in sorted(root.rglob(RESULTS_FILE)):
                folders[path.parent.resolve()] = None
    searches = []
    for folder in folders:
        results = OmegaConf.to_container(OmegaConf.load(folder / RESULTS_FILE)) or {}
        trials = [load_run(f) for f in find_run_folders([folder])]
        trials.sort(key=lambda r: _trial_number(r.path))
        searches.append(Search(folder, dict(results.get("best_params") or {}),
                               results.get("best_value"), trials))
    return searches


def _trial_number(path: Path) -> int:
    head = path.name.split("_", 1)[0]
    return int(head) if head.isdigit() else -1


def _overrides(run: Run) -> dict[str, str]:
    path = run.path / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    items = OmegaConf.to_container(OmegaConf.load(path)) or []
    return dict(item.split("=", 1) for item in items if "=" in item)


def search_table(search: Search) -> Table:
    """One row per trial: parameters, optimised validation metric, test metric, status."""
    params = list(search.best_params)
    monitor = next((str(r.config.get("monitor")) for r in search.trials if r.config is not None), "?")
    test_metric = next((DEFAULT_METRIC.get(r.task) for r in search.trials if r.config is not None), None)
    rows = []
    best_row = None
    for run in search.trials:
        chosen = _overrides(run)
        metrics = run.metrics or {}
        value = metrics.get(monitor)
        status = ("diverged" if run.diverged else "no metrics.json (crashed or running)"
                  if run.metrics is None else "ok")
        rows.append([str(_trial_number(run.path)), *(chosen.get(p, "?") for p in params),
                     _number(value), _number(metrics.get(test_metric)) if test_metric else "–", status])
        if (best_row is None and value is not None and search.best_value is not None
                and math.isclose(float(value), float(search.best_value), rel_tol=1e-9)
                and all(_same(chosen.get(p), search.best_params[p]) for p in params)):
            best_row = len(rows) - 1
    if best_row is not None:
        rows[best_row][0] += " (best)"
    best = ", ".join(f"{k}={v}" for k, v in search.best_params.items())
    notes = [f"Best (optimization_results.yaml): {monitor} = {_number(search.best_value)} with {best}.",
             f"{len(search.trials)} trials; the sweeper maximised {monitor} (the run's last validation)."]
    return Table(f"Hyperparameter search: {search.folder}",
                 ["trial", *params, monitor, test_metric or "test", "status"], rows,
                 [True, *([False] * len(params)), True, True, False], notes)


def _same(shown: str | None, value: Any) -> bool:
    if shown is None:
        return False
    try:
        return math.isclose(float(shown), float(value), rel_tol=1e-9)
    except (TypeError, ValueError):
        return str(shown) == str(value)


def _number(value: Any) -> str:
    return "–" if value is None else f"{float(value):.4f}"


def search_tables(roots: Sequence[str | Path]) -> list[Table]:
    return [search_table(s) for s in find_searches(roots)]
