"""Per-class precision / recall / F1 from a confusion matrix, printed like scikit-learn's
``classification_report`` (the table seed 003 reports for CIFAR-10).

Computed from the confusion matrix the classification task already accumulates (rows: true
class, columns: predicted), so no second pass over the predictions is needed. A class never
predicted has precision 0 (scikit-learn's ``zero_division`` default, with its warning left out).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

AVERAGES = ("macro avg", "weighted avg")


def classification_report(confusion: Sequence[Sequence[int]], class_names: Sequence[str]) -> dict[str, Any]:
    """``{class: {precision, recall, f1, support}, ..., "accuracy": a, "macro avg": {...},
    "weighted avg": {...}}``, every value a plain float / int (JSON-ready)."""
    matrix = np.asarray(confusion, dtype=np.float64)
    if matrix.shape != (len(class_names), len(class_names)):
        raise ValueError(f"{len(class_names)} class names for a {matrix.shape} confusion matrix")
    hits = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(hits), where=both > 0)
    total = support.sum()
    report: dict[str, Any] = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
    }
    report["accuracy"] = float(hits.sum() / total) if total else 0.0
    weights = support / total if total else np.zeros_like(support)
    for label, w in zip(AVERAGES, (np.full_like(support, 1 / len(support)), weights)):
        report[label] = {"precision": float(precision @ w), "recall": float(recall @ w),
                         "f1": float(f1 @ w), "support": int(total)}
    return report


def format_classification_report(report: dict[str, Any], digits: int = 2) -> str:
    """The report as scikit-learn prints it."""
    classes = [k for k in report if k not in AVERAGES and k != "accuracy"]
    width = max([len(k) for k in classes] + [len("weighted avg")])
    head = f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}"

    def line(name: str, row: dict[str, Any]) -> str:
        return (f"{name:>{width}} {row['precision']:>9.{digits}f} {row['recall']:>9.{digits}f} "
                f"{row['f1']:>9.{digits}f} {row['support']:>9d}")

    lines = [head, ""] + [line(k, report[k]) for k in classes] + [""]
    support = report["macro avg"]["support"]
    lines.append(f"{'accuracy':>{width}} {'':>9} {'':>9} {report['accuracy']:>9.{digits}f} {support:>9d}")
    lines += [line(k, report[k]) for k in AVERAGES]
    return "\n".join(lines)
