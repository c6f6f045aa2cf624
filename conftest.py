"""Puts the repository root on sys.path so the top-level packages import in tests, and keeps
torch's intra-op threads from oversubscribing a shared machine."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _test_threads() -> int:
    if "COG_NUM_THREADS" in os.environ:
        return max(1, int(os.environ["COG_NUM_THREADS"]))
    cores = os.cpu_count() or 1
    # OpenMP threads spin while waiting; on a machine already busier than its cores a single
    # thread per process is many times faster than two fighting for the same core.
    busy = hasattr(os, "getloadavg") and os.getloadavg()[0] > 1.5 * cores
    return 1 if busy else min(2, cores)


import torch  # noqa: E402

torch.set_num_threads(_test_threads())
