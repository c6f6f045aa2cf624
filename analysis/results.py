"""Per-group results (metric over seeds, structure, latency) and baseline/candidate comparisons:
the numbers behind every table, CSV and plot of the report."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from analysis.grouping import Group, comparable_pairs, expansion, family
from analysis.stats import CONFIDENCE, PairedDifference, Summary, paired_difference, summarize
from analysis.structure import Structure, StructureCache

LATENCY_METRIC = "test/ms_per_image"


@dataclass
class GroupResult:
    group: Group
    metric: str
    summary: Summary
    structure: Structure | None
    structure_note: str | None
    latency: Summary | None  # test/ms_per_image over the runs that measured it

    def as_row(self) -> dict[str, Any]:
        """A flat CSV row (raw metric values, not percentages)."""
        g, s = self.group, self.summary
        st = self.structure
        return {
            "task": g.task, "dataset": g.dataset, "recipe": g.recipe_label, "backbone": g.label,
            "family": family(g.backbone), "expansion": expansion(g.backbone), "metric": self.metric,
            "n": s.n, "seeds": " ".join(str(x) for x in sorted(g.seeds())), "mean": s.mean,
            "std": s.std, "ci_low": s.ci_low, "ci_high": s.ci_high, "confidence": s.confidence,
            "params": st.params if st else None, "macs": st.macs if st else None,
            "kib": st.kib if st else None, "image_size": st.image_size if st else None,
            "ms_per_image": self.latency.mean if self.latency else None,
            "ms_per_image_std": self.latency.std if self.latency else None,
            "runs": " ".join(str(r.path) for r in g.runs),
        }


@dataclass
class Comparison:
    baseline: GroupResult
    candidate: GroupResult
    paired: PairedDifference

    def as_row(self) -> dict[str, Any]:
        b, c, p = self.baseline.group, self.candidate.group, self.paired
        s = p.summary
        return {
            "task": b.task, "dataset": b.dataset, "recipe": b.recipe_label,
            "expansion": expansion(b.backbone), "baseline": b.label, "candidate": c.label,
            "metric": self.baseline.metric, "n_pairs": len(p.seeds),
            "seeds": " ".join(map(str, p.seeds)),
            "mean_difference": s.mean if s else None, "std_difference": s.std if s else None,
            "ci_low": s.ci_low if s else None, "ci_high": s.ci_high if s else None,
            "baseline_only_seeds": " ".join(map(str, p.baseline_only)),
            "candidate_only_seeds": " ".join(map(str, p.candidate_only)),
        }


def group_results(groups: Sequence[Group], metric_for: dict[str, str],
                  structures: StructureCache | None, confidence: float = CONFIDENCE
                  ) -> list[GroupResult]:
    """One result per group; ``metric_for`` maps a task to the metric summarised for it;
    ``structures`` None leaves the structural columns out."""
    results = []
    for group in groups:
        metric = metric_for[group.task]
        structure: Structure | None = None
        note: str | None = None
        if structures is not None:
            measured = structures.get(group.runs[0])
            structure, note = (measured, None) if isinstance(measured, Structure) else (None, measured)
        latencies = [r.value(LATENCY_METRIC) for r in group.runs]
        latencies = [v for v in latencies if v is not None]
        results.append(GroupResult(
            group=group, metric=metric, summary=summarize(group.values(metric), confidence),
            structure=structure, structure_note=note,
            latency=summarize(latencies, confidence) if latencies else None,
        ))
    return results


def comparisons(results: Sequence[GroupResult], baseline: str, candidate: str,
                confidence: float = CONFIDENCE) -> list[Comparison]:
    """Paired same-seed differences candidate - baseline for every matching pair of groups."""
    by_group = {id(r.group): r for r in results}
    out = []
    for base, cand in comparable_pairs([r.group for r in results], baseline, candidate):
        b, c = by_group[id(base)], by_group[id(cand)]
        paired = paired_difference(base.by_seed(b.metric), cand.by_seed(c.metric), confidence)
        out.append(Comparison(b, c, paired))
    return out
