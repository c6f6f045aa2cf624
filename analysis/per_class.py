"""Per-class accuracy against training-sample count (long-tail view) and the confusion matrix of a
classification checkpoint, as CSV and PNG.

    python -m analysis.per_class ckpt_path=logs/classification/runs/.../checkpoints/best_epoch042.ckpt
    python -m analysis.per_class --ckpt PATH [--out DIR] [--data-dir D] [--rerun] [KEY=VALUE ...]

The accuracies come from eval.py's evaluation (``PATH.eval.json``): an existing file newer than
the checkpoint is reused, otherwise the checkpoint is evaluated first (``--rerun`` forces it).
Training-sample counts come from the checkpoint's own datamodule (``train_class_counts`` after
``setup("fit")``). ``--data-dir`` points ``data.root`` at the dataset if it has moved since
training; other ``KEY=VALUE`` arguments are eval.py overrides (e.g. ``num_workers=0``).

Writes to ``--out`` (default: ``<checkpoint stem>_per_class/`` beside the checkpoint):
``per_class_accuracy.csv`` (classes sorted by training samples, most first; accuracy, precision,
recall, F1), ``classification_report.txt`` (scikit-learn's per-class precision / recall / F1 table),
``confusion_matrix.csv`` (rows: true class, columns: predicted class, counts),
``per_class_accuracy.png`` (accuracy over classes sorted by training count, and against it) and
``confusion_matrix.png`` (row-normalised).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from errors import CheckpointError, DataError, exit_on_user_error
from tasks.classification_report import classification_report, format_classification_report

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CSV_COLUMNS = ("rank", "class_index", "class_name", "train_samples", "test_samples", "correct",
               "accuracy", "precision", "recall", "f1")


# --------------------------------------------------------------------------- evaluation inputs
def eval_config(ckpt_path: str | Path, overrides: Sequence[str], output_dir: str | Path):
    """eval.py's config for ``ckpt_path`` with ``overrides``, composed as the entry point would."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("eval", overrides=[f"ckpt_path={ckpt_path}", *overrides])
    with open_dict(cfg):
        # Outside a Hydra run there is no hydra:runtime.output_dir to resolve.
        cfg.paths.output_dir = str(output_dir)
    return cfg


def load_or_run_evaluation(cfg, rerun: bool = False) -> dict[str, Any]:
    """The contents of ``PATH.eval.json``: reused when newer than the checkpoint, else written
    by running eval.py's ``evaluate`` on the checkpoint's test split."""
    ckpt = Path(cfg.ckpt_path)
    result_path = Path(str(ckpt) + ".eval.json")
    fresh = result_path.is_file() and result_path.stat().st_mtime >= ckpt.stat().st_mtime
    if rerun or not fresh or "per_class_accuracy" not in _read_json(result_path):
        from cogsuite.evaluation import evaluate
        evaluate(cfg)
    results = _read_json(result_path)
    for key in ("per_class_accuracy", "confusion_matrix", "class_names"):
        if key not in results:
            raise DataError(f"{result_path} has no '{key}': it was not written by a "
                            "classification evaluation of this suite; rerun with --rerun")
    return results


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def training_class_counts(cfg) -> tuple[list[str], list[int]]:
    """(class names, training samples per class) from the checkpoint's datamodule (only this
    suite's datamodules are built from a checkpoint)."""
    from cogsuite.evaluation import read_suite_checkpoint, run_config
    from cogsuite.suite_checkpoint import instantiate_data

    checkpoint = read_suite_checkpoint(cfg.ckpt_path)
    datamodule = instantiate_data(run_config(checkpoint, cfg).data, cfg.ckpt_path)
    if not hasattr(datamodule, "train_class_counts"):
        raise CheckpointError(f"{type(datamodule).__name__} reports no train_class_counts; the per-class "
                         "analysis needs a classification datamodule")
    datamodule.setup("fit")
    return list(datamodule.class_names), [int(c) for c in datamodule.train_class_counts]


def check_classification_checkpoint(ckpt_path: str | Path) -> None:
    from cogsuite.suite_checkpoint import read_suite_checkpoint
    from cogsuite.checkpoint_keys import SUITE_KEY

    from tasks.registry import get_task, list_tasks

    task = read_suite_checkpoint(ckpt_path)[SUITE_KEY]["task"]
    if not get_task(task).per_class_analysis:
        fitting = ", ".join(t for t in list_tasks() if get_task(t).per_class_analysis)
        raise CheckpointError(f"{ckpt_path} is a {task} checkpoint; the per-class accuracy analysis is "
                              f"for {fitting} checkpoints (a {task} evaluation's per-class metrics "
                              "are in its .eval.json)")


# --------------------------------------------------------------------------- the table
def per_class_rows(
    class_names: Sequence[str],
    accuracy: dict[str, float],
    confusion: Sequence[Sequence[int]],
    train_counts: Sequence[int],
) -> list[dict[str, Any]]:
    """One row per class, sorted by training samples (most first; ties by class index)."""
    matrix = np.asarray(confusion, dtype=np.int64)
    n = len(class_names)
    if matrix.shape != (n, n) or len(train_counts) != n:
        raise DataError(f"{n} classes but a {matrix.shape} confusion matrix and "
                         f"{len(train_counts)} training counts")
    missing = [name for name in class_names if name not in accuracy]
    if missing:
        raise DataError(f"no accuracy for classes {missing[:5]}; rerun with --rerun")
    order = sorted(range(n), key=lambda i: (-int(train_counts[i]), i))
    report = classification_report(matrix, class_names)
    return [
        {
            "rank": rank,
            "class_index": i,
            "class_name": class_names[i],
            "train_samples": int(train_counts[i]),
            "test_samples": int(matrix[i].sum()),
            "correct": int(matrix[i, i]),
            "accuracy": float(accuracy[class_names[i]]),
            "precision": report[class_names[i]]["precision"],
            "recall": report[class_names[i]]["recall"],
            "f1": report[class_names[i]]["f1"],
        }
        for rank, i in enumerate(order, start=1)
    ]


def write_confusion_csv(path: Path, class_names: Sequence[str], confusion: Sequence[Sequence[int]]) -> None:
    import csv

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true \\ predicted", *class_names])
        for name, row in zip(class_names, confusion):
            writer.writerow([name, *[int(v) for v in row]])


# --------------------------------------------------------------------------- figures
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_per_class(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Left: training samples (bars) and accuracy (dots) over classes sorted by training count.
    Right: accuracy against training samples."""
    plt = _pyplot()
    ranks = np.arange(len(rows))
    counts = np.array([r["train_samples"] for r in rows])
    acc = np.array([r["accuracy"] for r in rows])
    fig, (ax_rank, ax_scatter) = plt.subplots(1, 2, figsize=(13, 4.5), width_ratios=(2, 1))
    bars = ax_rank.bar(ranks, counts, color="#c9d6e8", width=1.0, label="training samples")
    ax_rank.set_xlabel("class, sorted by training samples")
    ax_rank.set_ylabel("training samples")
    if len(rows) <= 40:
        ax_rank.set_xticks(ranks, [r["class_name"] for r in rows], rotation=90, fontsize=7)
    ax_acc = ax_rank.twinx()
    (dots,) = ax_acc.plot(ranks, acc, "o", color="#c0392b", markersize=3, label="test accuracy")
    ax_acc.legend(handles=[bars, dots], loc="lower left", fontsize=8)
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.set_ylabel("test accuracy")
    ax_rank.set_title(title)
    ax_scatter.scatter(counts, acc, s=12, color="#c0392b")
    ax_scatter.set_xlabel("training samples")
    ax_scatter.set_ylabel("test accuracy")
    ax_scatter.set_ylim(-0.02, 1.02)
    ax_scatter.set_title("accuracy vs. training samples")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion(class_names: Sequence[str], confusion: Sequence[Sequence[int]], path: Path,
                   title: str) -> None:
    """Row-normalised confusion matrix (each true class sums to 1)."""
    plt = _pyplot()
    matrix = np.asarray(confusion, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    n = len(class_names)
    size = min(4 + 0.25 * n, 24)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if n <= 40:
        ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), class_names, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- command line
def analyse(ckpt_path: str | Path, out_dir: str | Path | None = None,
            overrides: Sequence[str] = (), rerun: bool = False) -> dict[str, Path]:
    """Evaluate (or reuse the evaluation of) ``ckpt_path`` and write the CSVs and figures."""
    from benchmarks.common import write_csv

    ckpt_path = Path(ckpt_path)
    check_classification_checkpoint(ckpt_path)
    out = Path(out_dir) if out_dir else ckpt_path.parent / f"{ckpt_path.stem}_per_class"
    out.mkdir(parents=True, exist_ok=True)
    cfg = eval_config(ckpt_path, overrides, out)
    results = load_or_run_evaluation(cfg, rerun)
    names, counts = training_class_counts(cfg)
    if list(results["class_names"]) != names:
        raise DataError(f"the evaluation's classes {results['class_names'][:5]}... differ from "
                         f"the datamodule's {names[:5]}...; rerun with --rerun")
    rows = per_class_rows(names, results["per_class_accuracy"], results["confusion_matrix"], counts)
    title = f"{results.get('backbone', '')} · {ckpt_path.name}"
    paths = {
        "per_class_csv": write_csv(out / "per_class_accuracy.csv", rows, CSV_COLUMNS),
        "confusion_csv": out / "confusion_matrix.csv",
        "per_class_png": out / "per_class_accuracy.png",
        "confusion_png": out / "confusion_matrix.png",
        "report_txt": out / "classification_report.txt",
    }
    paths["report_txt"].write_text(
        format_classification_report(classification_report(results["confusion_matrix"], names)) + "\n")
    write_confusion_csv(paths["confusion_csv"], names, results["confusion_matrix"])
    plot_per_class(rows, paths["per_class_png"], title)
    plot_confusion(names, results["confusion_matrix"], paths["confusion_png"], title)
    return paths


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.per_class",
        description="Per-class accuracy vs. training samples and confusion matrix of a "
                    "classification checkpoint (CSV + PNG).")
    parser.add_argument("--ckpt", help="checkpoint path (or give ckpt_path=PATH)")
    parser.add_argument("--out", help="output folder (default: <ckpt stem>_per_class beside it)")
    parser.add_argument("--data-dir", help="dataset root (data.root) if it moved since training")
    parser.add_argument("--rerun", action="store_true", help="evaluate even if PATH.eval.json exists")
    parser.add_argument("overrides", nargs="*", help="ckpt_path=PATH and other eval.py KEY=VALUE overrides")
    args = parser.parse_intermixed_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"unexpected argument(s) {bad}: overrides are KEY=VALUE")
    overrides = []
    for item in args.overrides:
        key, _, value = item.partition("=")
        if key.lstrip("+") == "ckpt_path":
            if args.ckpt and args.ckpt != value:
                parser.error("give the checkpoint once: --ckpt PATH or ckpt_path=PATH")
            args.ckpt = value
        else:
            overrides.append(item)
    if not args.ckpt:
        parser.error("no checkpoint: pass ckpt_path=PATH or --ckpt PATH")
    if args.data_dir:
        overrides.append(f"+data.root={args.data_dir}")
    args.overrides = overrides
    return args


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    args = parse_args(argv)
    paths = analyse(args.ckpt, args.out, args.overrides, args.rerun)
    for path in paths.values():
        print(f"written: {path}")
    return paths


if __name__ == "__main__":
    main()
