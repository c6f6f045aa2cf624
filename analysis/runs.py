"""Find train.py runs below a folder and read what each one stored.

A run folder holds Hydra's ``.hydra/config.yaml`` (the composed config, interpolations kept as
written) and, once the run has finished, ``metrics.json`` (``{"metrics": {...}, ...}``). Folder
names are not relied on: any folder with either file is a run, wherever it is.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from errors import SuiteFileNotFoundError
from tasks.registry import get_task, list_tasks

CONFIG_FILE = Path(".hydra") / "config.yaml"
HYDRA_FILE = Path(".hydra") / "hydra.yaml"
METRICS_FILE = "metrics.json"
# The registered tasks (tasks.registry) and the test metric that is each one's result.
TASKS = tuple(list_tasks())
DEFAULT_METRIC = {task: get_task(task).metric for task in TASKS}


@dataclass
class Run:
    """One run folder: its stored config (unresolved), Hydra's group choices and its metrics."""

    path: Path
    config: DictConfig | None
    choices: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] | None = None  # None: no (readable) metrics.json
    diverged: bool = False
    problem: str | None = None  # why the folder cannot be used at all

    @property
    def task(self) -> str:
        stored = self.config.get("task_name") if self.config is not None else None
        return str(stored or self.choices.get("task", "?"))

    @property
    def dataset(self) -> str:
        """The data config group chosen for the run (``data=flowers``), else its datamodule."""
        if self.choices.get("data"):
            return self.choices["data"]
        if self.config is None:
            return "?"
        target = str(OmegaConf.select(self.config, "data._target_", default="") or "")
        return target.rsplit(".", 1)[-1] or "?"

    @property
    def seed(self) -> int | None:
        value = self.config.get("seed") if self.config is not None else None
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def backbone(self) -> dict[str, Any]:
        return (resolved(self.config, "backbone") or {}) if self.config is not None else {}

    def value(self, metric: str) -> float | None:
        if self.metrics is None:
            return None
        number = self.metrics.get(metric)
        return None if number is None or not math.isfinite(number) else float(number)


def resolved(config: DictConfig, key: str) -> Any:
    """``config.<key>`` with interpolations resolved, or None when they cannot be (e.g. the
    ``${hydra:...}`` resolver exists only inside a Hydra run)."""
    try:
        node = OmegaConf.select(config, key, throw_on_resolution_failure=True)
        if isinstance(node, DictConfig) or OmegaConf.is_list(node):
            return OmegaConf.to_container(node, resolve=True)
        return node
    except Exception:  # noqa: BLE001 - any resolution failure means "unknown here"
        return None


def find_run_folders(roots: Iterable[str | Path]) -> list[Path]:
    """Every run folder at or below each root, in path order (a root may be a run folder).

    The walk does not descend into a run folder (its checkpoints and logs hold no runs) nor into
    hidden folders.
    """
    found: dict[Path, None] = {}
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise SuiteFileNotFoundError(
                f"{root} does not exist; give a run folder, a multirun folder or a parent such "
                f"as logs/")
        for folder in _walk(root):
            found[folder.resolve()] = None
    return sorted(found)


def _walk(root: Path) -> Iterator[Path]:
    if _is_run_folder(root):
        yield root
        return
    for current, subfolders, _files in os.walk(root):
        here = Path(current)
        if here != root and _is_run_folder(here):
            subfolders.clear()
            yield here
            continue
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))


def _is_run_folder(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file() or (folder / METRICS_FILE).is_file()


def final_config_folder(folder: Path) -> Path:
    """The ``.hydra`` folder of the configuration a run finished with: a run resumed in place
    keeps its first ``.hydra/`` and writes each resume's config to
    ``.hydra/resume_<time>_<id>/`` (``cogsuite.run_dirs``); the newest of those, else ``.hydra``."""
    hydra = folder / CONFIG_FILE.parent
    resumes = sorted(p for p in hydra.glob("resume_*") if (p / CONFIG_FILE.name).is_file()) if hydra.is_dir() else []
    return resumes[-1] if resumes else hydra


def load_run(folder: Path) -> Run:
    """Read one run folder (the configuration it finished with, see ``final_config_folder``);
    problems are recorded on the Run, not raised, so one bad folder does not stop a report
    over many."""
    config_path = final_config_folder(folder) / CONFIG_FILE.name
    if not config_path.is_file():
        return Run(folder, None, problem=f"no {CONFIG_FILE} (cannot tell what was trained)")
    try:
        config = OmegaConf.load(config_path)
    except Exception as exc:  # noqa: BLE001 - a damaged file is reported, not fatal
        return Run(folder, None, problem=f"unreadable {config_path.relative_to(folder)}: {exc}")
    run = Run(folder, config, choices=_choices(config_path.parent / HYDRA_FILE.name))
    if run.task not in TASKS:
        run.problem = f"not a train.py run (task_name={run.task})"
        return run
    metrics_path = folder / METRICS_FILE
    if metrics_path.is_file():
        try:
            payload = json.loads(metrics_path.read_text())
            run.metrics = {k: float(v) for k, v in dict(payload.get("metrics", {})).items()
                           if isinstance(v, (int, float)) and not isinstance(v, bool)}
            flags = (payload.get("diverged"), dict(payload.get("metrics", {})).get("diverged"))
            run.diverged = any(flag is True for flag in flags)
        except (ValueError, AttributeError) as exc:
            run.problem = f"unreadable {METRICS_FILE}: {exc}"
    return run


def _choices(hydra_path: Path) -> dict[str, str]:
    """Hydra's config group choices of the run (``data: flowers``), if hydra.yaml is there."""
    if not hydra_path.is_file():
        return {}
    try:
        choices = OmegaConf.select(OmegaConf.load(hydra_path), "hydra.runtime.choices")
    except Exception:  # noqa: BLE001 - optional information
        return {}
    if choices is None:
        return {}
    return {str(k): str(v) for k, v in OmegaConf.to_container(choices).items() if v is not None}


def skip_reason(run: Run, metric: str) -> str | None:
    """Why ``run`` cannot be averaged for ``metric``; None when it can."""
    if run.problem:
        return run.problem
    if run.metrics is None:
        return f"no {METRICS_FILE}: crashed or still running"
    if run.diverged:
        return "diverged (metrics.json has diverged: true)"
    if metric not in run.metrics:
        return f"{METRICS_FILE} has no {metric}"
    if run.value(metric) is None:
        return f"{metric} is not a finite number"
    if run.seed is None:
        return "config has no integer seed"
    return None
