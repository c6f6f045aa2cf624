"""The suite's one clock-aware timer, shared by ``tasks/`` (test-time latency, seed 003's CPU ms
per image) and ``benchmarks/`` (throughput, complexity latencies; ``benchmarks.timing``
re-exports it). It lives here because tasks must not import ``benchmarks``, which imports tasks.

Clocks: "wall" (``time.perf_counter``) and "cpu" (this process's CPU time, user + system,
``time.process_time``: the work done, not the time other processes held the cores). A reading
waits for queued device work first (``synchronize``, e.g. ``torch.cuda.synchronize``), so a
difference of two readings is the work between them.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from errors import ConfigError

CLOCKS = ("wall", "cpu")


def clock_reader(clock: str) -> Callable[[], float]:
    """Seconds now on ``clock``: "wall" (``perf_counter``) or "cpu" (this process's CPU time)."""
    if clock not in CLOCKS:
        raise ConfigError(f"clock must be one of {CLOCKS}, got {clock!r}")
    return time.perf_counter if clock == "wall" else time.process_time


def _no_sync() -> None:
    return None


class Stopwatch:
    """Readings of one or more clocks, each taken after ``synchronize``.

    ``read()`` returns one value per clock (in ``clocks`` order); ``elapsed_ms(start, stop)``
    the milliseconds between two readings, per clock. Several readings in one pass time its
    segments from the same run (e.g. a detector's forward and its whole detection).
    """

    def __init__(self, clocks: Sequence[str] = ("wall",),
                 synchronize: Callable[[], None] | None = None) -> None:
        self.clocks = tuple(clocks)
        self._readers = [clock_reader(clock) for clock in self.clocks]
        self._synchronize = synchronize or _no_sync

    def read(self) -> tuple[float, ...]:
        self._synchronize()
        return tuple(reader() for reader in self._readers)

    @staticmethod
    def elapsed_ms(start: Sequence[float], stop: Sequence[float]) -> tuple[float, ...]:
        return tuple((b - a) * 1000.0 for a, b in zip(start, stop))


def time_interleaved(fns: Mapping[str, Callable[[], Any]], repeats: int, warmup: int, calls: int = 1,
                     read: Callable[[], float] = time.perf_counter,
                     synchronize: Callable[[], None] = _no_sync) -> dict[str, list[float]]:
    """The benchmarks' timer: seconds of ``calls`` calls, ``repeats`` samples per function.

    Each function gets ``warmup`` untimed calls first; then every repeat times each function
    once, the order rotated by one per repeat so no function always runs right after another
    and slow drift of the machine hits them alike. ``synchronize`` runs at both clock readings
    (CUDA work is waited for); ``read`` is the clock (``clock_reader``).
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            synchronize()
            start = read()
            for _ in range(calls):
                fns[name]()
            synchronize()
            seconds[name].append(read() - start)
    return seconds
