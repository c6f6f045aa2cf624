"""Statistics over seeds: mean, standard deviation and Student-t confidence interval of one
group's runs, and the paired (same-seed) difference between two groups.

Seeds are few (3-5), so the interval uses the t distribution with n-1 degrees of freedom,
``mean ± t_{(1+c)/2, n-1} · s / sqrt(n)`` with the sample standard deviation ``s`` (ddof=1).
With one value there is no spread to estimate and no interval is given.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and t interval of ``n`` values (std/interval None if n < 2)."""

    n: int
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float = CONFIDENCE

    @property
    def has_interval(self) -> bool:
        return self.ci_low is not None

    @property
    def half_width(self) -> float | None:
        return None if self.ci_high is None else self.ci_high - self.mean


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Summary of ``values`` (at least one)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    data = np.asarray(list(values), dtype=float)
    if data.size == 0:
        raise ValueError("summarize needs at least one value")
    mean = float(data.mean())
    if data.size < 2:
        return Summary(1, mean, None, None, None, confidence)
    std = float(data.std(ddof=1))
    t = float(stats.t.ppf(0.5 + confidence / 2.0, data.size - 1))
    half = t * std / math.sqrt(data.size)
    return Summary(int(data.size), mean, std, mean - half, mean + half, confidence)


@dataclass(frozen=True)
class PairedDifference:
    """candidate - baseline over the seeds both have; the seeds only one side has are listed."""

    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    summary: Summary | None  # None when no seed is shared
    baseline_only: tuple[int, ...]
    candidate_only: tuple[int, ...]


def paired_difference(baseline: Mapping[int, float], candidate: Mapping[int, float],
                      confidence: float = CONFIDENCE) -> PairedDifference:
    """Same-seed differences ``candidate[s] - baseline[s]`` and their summary.

    Pairing removes what the two runs of one seed share (the data split where it follows the
    seed, the order of the data), so the interval is usually narrower than comparing two means.
    """
    shared = sorted(set(baseline) & set(candidate))
    differences = tuple(float(candidate[s]) - float(baseline[s]) for s in shared)
    return PairedDifference(
        seeds=tuple(shared),
        differences=differences,
        summary=summarize(differences, confidence) if differences else None,
        baseline_only=tuple(sorted(set(baseline) - set(candidate))),
        candidate_only=tuple(sorted(set(candidate) - set(baseline))),
    )
