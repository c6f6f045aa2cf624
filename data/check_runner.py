"""Run a per-sample check over a whole split: cached, threaded, with a progress bar on large sets."""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data.bad_files import SampleCheck, SplitCheck
from data.check_cache import CheckCache, file_signature

log = logging.getLogger("data")

# Below this many samples to check there is no progress bar and no timing line.
PROGRESS_MIN_SAMPLES = 500
# Decoding releases the GIL, so threads overlap file reads and decodes; a few suffice.
MAX_THREADS = 8

Sample = tuple[str, Sequence[Path]]  # (key, every file the sample reads)


def check_samples(samples: Sequence[Sample], check: Callable[[str], SampleCheck], *, dataset_dir: Path,
                  split: str, params: Mapping[str, Any], label: str) -> SplitCheck:
    """``check(key)`` for every sample whose files changed since the cached run, the cache for
    the others; returns the split's bad samples and clip count and updates the cache."""
    dataset_dir = Path(dataset_dir)
    cache = CheckCache(dataset_dir, split, params)
    cached = cache.load()
    entries: dict[str, list] = {}
    results: dict[str, SampleCheck] = {}
    todo: list[str] = []
    for key, files in samples:
        signature = file_signature(files)
        entries[key] = [signature, None]
        hit = next((c[key][1] for c in cached if key in c and c[key][0] == signature), None)
        if hit is None:
            todo.append(key)
        else:
            results[key] = SampleCheck.from_json(hit, dataset_dir)
    if todo:
        for key, result in zip(todo, _run(check, todo, label)):
            results[key] = result
        for key in entries:
            entries[key][1] = results[key].to_json(dataset_dir)
        cache.save(entries)
    bad = {key: results[key].bad for key, _ in samples if results[key].bad}
    clipped = [results[key].clipped_boxes for key, _ in samples if results[key].clipped_boxes]
    return SplitCheck(label, dataset_dir, bad, sum(clipped), len(clipped), len(samples))


def _run(check: Callable[[str], SampleCheck], keys: list[str], label: str) -> list[SampleCheck]:
    large = len(keys) >= PROGRESS_MIN_SAMPLES
    if large:
        log.info("Checking the %d sample(s) of %s (images, annotations, masks); the result is cached "
                 "so later runs skip this.", len(keys), label)
    start = time.perf_counter()
    threads = min(MAX_THREADS, os.cpu_count() or 1)
    # The bar goes to stderr only on a terminal (tqdm's disable=None); logs get the lines above/below.
    with tqdm(total=len(keys), desc=f"Checking {label}", unit="sample", disable=None if large else True,
              file=sys.stderr, leave=False) as bar:
        if threads < 2 or len(keys) < 2 * threads:
            results = []
            for key in keys:
                results.append(check(key))
                bar.update()
        else:
            with ThreadPoolExecutor(threads, thread_name_prefix="data-check") as pool:
                results = []
                for result in pool.map(check, keys):
                    results.append(result)
                    bar.update()
    if large:
        seconds = time.perf_counter() - start
        log.info("Checked %d sample(s) of %s in %.1f s (%.2f s per 1000).", len(keys), label, seconds,
                 1000 * seconds / len(keys))
    return results
