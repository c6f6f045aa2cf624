"""Where a sweep or the whole study stands: ``python -m analysis.report --status logs/``.

Every run folder below the paths (``analysis.runs.find_run_folders``) is listed with its state,
read from what the run wrote (``metrics.json`` when it ended, ``status.json`` while it ran,
``cogsuite.run_status``):

- ``finished`` / ``diverged``: metrics.json is there (diverged: marked so);
- ``failed``: the run stopped with an error (its last line is shown);
- ``requeued``: it saved a checkpoint on SLURM's signal and is waiting in the queue (how often);
- ``stopped``: it saved a checkpoint on SIGTERM and was not requeued by the suite;
- ``running``: its last heartbeat and how long ago; after ``stale_after`` minutes without one it
  is shown as ``running?`` (killed without a word, e.g. SIGKILL or a node failure: SLURM may
  requeue it, otherwise resume it with ``ckpt_path=``);
- ``unknown``: neither file (killed before training started, or a run of an older suite).

Then the table rows (runs grouped as the report groups them: task, dataset, backbone, recipe)
that have fewer than ``seeds`` finished seeds, with the seeds they have and those in flight.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from analysis.grouping import group_runs
from analysis.runs import Run, find_run_folders, load_run

STATUS_FILE = "status.json"  # cogsuite.run_status.STATUS_FILE (not imported: no Lightning here)


@dataclass
class RunState:
    run: Run
    state: str
    detail: str = ""
    requeues: int = 0


def _read(path: Path) -> dict:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def _age(stamp: str | None, now: datetime) -> float | None:
    try:
        then = datetime.fromisoformat(str(stamp))
    except (TypeError, ValueError):
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    return (now - then).total_seconds()


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def run_state(run: Run, now: datetime | None = None, stale_after: float = 15.0) -> RunState:
    """The state of one run folder (see the module docstring)."""
    now = now or datetime.now(timezone.utc)
    status = _read(run.path / STATUS_FILE)
    requeues = max(int(status.get("requeues", 0) or 0), int(status.get("restarts", 0) or 0))
    where = f"epoch {status['epoch']}, step {status['step']}" if "step" in status else ""
    if run.problem and run.config is None:
        return RunState(run, "unknown", run.problem, requeues)
    if run.metrics is not None:
        return RunState(run, "diverged" if run.diverged else "finished", "", requeues)
    state = str(status.get("state", "")) or "unknown"
    if state == "failed":
        return RunState(run, "failed", str(status.get("error") or ""), requeues)
    if state in ("requeued", "stopped"):
        return RunState(run, state, f"checkpoint at {where}" if where else "", requeues)
    if state == "running":
        age = _age(status.get("heartbeat"), now)
        shown = f"last heartbeat {_ago(age)}" if age is not None else "no heartbeat"
        host = f" on {status['host']}" if status.get("host") else ""
        job = f", SLURM job {status['slurm_job_id']}" if status.get("slurm_job_id") else ""
        detail = ", ".join(p for p in (shown + host + job, where) if p)
        stale = age is None or age > stale_after * 60
        return RunState(run, "running?" if stale else "running", detail, requeues)
    if state in ("finished", "diverged"):  # status says so but metrics.json is gone
        return RunState(run, "unknown", f"status.json says {state} but there is no metrics.json",
                        requeues)
    return RunState(run, "unknown", "no status.json and no metrics.json", requeues)


def _row_label(group) -> str:
    return f"{group.task} · {group.setting} · {group.label}"


def status_report(paths: Sequence[str | Path], seeds: int = 3, stale_after: float = 15.0,
                  now: datetime | None = None) -> tuple[str, list[RunState]]:
    """The printed status view and the state of every run found."""
    folders = find_run_folders(paths)
    states = [run_state(load_run(folder), now, stale_after) for folder in folders]
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    lines = [f"# Run status: {', '.join(map(str, paths))}", "",
             f"{len(states)} runs: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())),
             "", "| state | run | seed | requeued | details |", "|---|---|--:|--:|---|"]
    for s in states:
        seed = s.run.seed if s.run.config is not None else None
        lines.append(f"| {s.state} | {_shown(s.run.path)} | {'' if seed is None else seed} | "
                     f"{s.requeues or ''} | {s.detail} |")
    lines += ["", *missing_seeds(states, seeds)]
    return "\n".join(lines).rstrip() + "\n", states


def missing_seeds(states: Sequence[RunState], seeds: int) -> list[str]:
    """Table rows (report groups) with fewer than ``seeds`` finished seeds."""
    known = [s for s in states if s.run.config is not None and not s.run.problem]
    if not known:
        return []
    groups, _notes = group_runs([s.run for s in known])
    by_path = {s.run.path: s for s in known}
    lines = []
    for group in groups:
        finished = sorted({r.seed for r in group.runs if by_path[r.path].state == "finished"
                           and r.seed is not None})
        pending = sorted({r.seed for r in group.runs if r.seed is not None and r.seed not in finished
                          and by_path[r.path].state in ("running", "requeued")})
        if len(finished) < seeds:
            lines.append(f"- {_row_label(group)}: {len(finished)} of {seeds} seeds finished"
                         + (f" ({', '.join(map(str, finished))})" if finished else "")
                         + (f"; in progress: {', '.join(map(str, pending))}" if pending else ""))
    title = f"### Table rows with fewer than {seeds} finished seeds"
    return [title, "", *(lines or ["- none"]), ""]


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
