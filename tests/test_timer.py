"""cogsuite.timer: the one clock-aware timer that tasks/ and benchmarks/ share."""
from __future__ import annotations

import inspect
import time

import pytest

import benchmarks.timing
import tasks.detection
import tasks.inference_timing
from cogsuite.timer import Stopwatch, clock_reader, time_interleaved
from errors import ConfigError


def test_stopwatch_reads_each_clock_after_synchronizing():
    calls = []
    watch = Stopwatch(("cpu", "wall"), synchronize=lambda: calls.append(1))
    start = watch.read()
    time.sleep(0.05)  # holds the wall clock, not the CPU
    cpu_ms, wall_ms = watch.elapsed_ms(start, watch.read())
    assert len(calls) == 2
    assert wall_ms >= 45 and cpu_ms < wall_ms - 20


def test_benchmarks_and_tasks_use_the_shared_timer():
    assert benchmarks.timing.time_interleaved is time_interleaved
    assert benchmarks.timing.clock_reader is clock_reader
    for module in (tasks.detection, tasks.inference_timing):
        source = inspect.getsource(module)
        assert "Stopwatch(" in source and "perf_counter" not in source and "process_time()" not in source
    with pytest.raises(ConfigError, match="clock must be one of"):
        Stopwatch(("gpu",))
