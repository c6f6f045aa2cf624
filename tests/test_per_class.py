"""analysis.per_class on a checkpoint of a tiny synthetic training run with unequal class sizes."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from analysis import per_class
from data import synthetic
from data.classification import ImageFolderDataModule
from tests.helpers import compose_config

IMAGES_PER_CLASS = 12
GENERATOR_SIZE = 72
NUM_CLASSES = 8  # configs/task/classification.yaml synthetic.num_classes


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def long_tail_checkpoint(tmp_path_factory) -> Path:
    """Write the synthetic image folder, drop images so class sizes differ, train 1 epoch."""
    from train import train

    root = tmp_path_factory.mktemp("long_tail")
    folder = root / "synthetic" / "classification"
    names = synthetic.write_image_folder(folder, num_classes=NUM_CLASSES,
                                         images_per_class=IMAGES_PER_CLASS, image_size=GENERATOR_SIZE)
    for index, name in enumerate(names):  # class i keeps 12 - i images (the marker still matches)
        for image in sorted((folder / name).iterdir())[IMAGES_PER_CLASS - index:]:
            image.unlink()
    # The image folder read by the real-dataset datamodule (data=flowers with a generic layout).
    cfg = compose_config("train", [
        "task=classification", "data=flowers", f"data.root={folder}", "data.layout=imagefolder",
        f"data.num_classes={NUM_CLASSES}", "image_size=64", "backbone=mv2_e2",
        "backbone.width_mult=0.35", "batch_size=8", "trainer.max_epochs=1", "logger=csv",
        "test=false",
    ], root / "run")
    train(cfg)
    return next((root / "run" / "checkpoints").glob("best_*.ckpt"))


def test_per_class_csv_and_figures(long_tail_checkpoint, tmp_path):
    out = tmp_path / "analysis"
    paths = per_class.main([f"ckpt_path={long_tail_checkpoint}", "--out", str(out), "num_workers=0",
                            "trainer.accelerator=cpu", "+trainer.enable_progress_bar=false"])
    rows = read_csv(paths["per_class_csv"])

    datamodule = ImageFolderDataModule(
        root=str(long_tail_checkpoint.parents[2] / "synthetic" / "classification"), image_size=64)
    datamodule.setup("fit")
    expected_counts = dict(zip(datamodule.class_names, datamodule.train_class_counts))
    assert len(rows) == NUM_CLASSES == len(expected_counts)
    assert {r["class_name"]: int(r["train_samples"]) for r in rows} == expected_counts
    assert len(set(expected_counts.values())) > 1  # the class sizes really differ
    counts = [int(r["train_samples"]) for r in rows]
    assert counts == sorted(counts, reverse=True)
    assert [int(r["rank"]) for r in rows] == list(range(1, NUM_CLASSES + 1))

    evaluation = json.loads(Path(str(long_tail_checkpoint) + ".eval.json").read_text())
    for row in rows:
        accuracy = float(row["accuracy"])
        assert 0.0 <= accuracy <= 1.0
        assert accuracy == pytest.approx(evaluation["per_class_accuracy"][row["class_name"]])
        # Per-class accuracy is the recall read off the confusion matrix's row.
        assert accuracy == pytest.approx(int(row["correct"]) / int(row["test_samples"]))

    with paths["confusion_csv"].open(newline="") as handle:
        matrix = list(csv.reader(handle))
    assert matrix[0][1:] == evaluation["class_names"]
    assert [[int(v) for v in line[1:]] for line in matrix[1:]] == evaluation["confusion_matrix"]
    for key in ("per_class_png", "confusion_png"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A second run reuses the evaluation instead of testing the checkpoint again.
    eval_json = Path(str(long_tail_checkpoint) + ".eval.json")
    before = eval_json.stat().st_mtime_ns
    per_class.main(["--ckpt", str(long_tail_checkpoint), "--out", str(out), "num_workers=0"])
    assert eval_json.stat().st_mtime_ns == before


def test_rows_are_sorted_by_training_samples_then_class_index():
    rows = per_class.per_class_rows(
        ["a", "b", "c"], {"a": 0.5, "b": 1.0, "c": 0.0},
        [[1, 1, 0], [0, 3, 0], [2, 0, 0]], train_counts=[5, 9, 5])
    assert [r["class_name"] for r in rows] == ["b", "a", "c"]
    assert [(r["test_samples"], r["correct"]) for r in rows] == [(3, 3), (2, 1), (2, 0)]


def test_non_classification_or_missing_checkpoint_is_explained(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        per_class.main([f"ckpt_path={tmp_path / 'missing.ckpt'}"])
    assert exit_info.value.code == 2
    assert "missing.ckpt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        per_class.main([])
    assert "ckpt_path=PATH" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["detection", "segmentation"])
def test_per_class_analysis_refuses_tasks_without_it(name):
    """Which tasks the analysis applies to comes from the task registry (TaskSpec.per_class_analysis)."""
    from analysis.per_class import check_classification_checkpoint
    from errors import CheckpointError
    from tests.helpers import FIXTURES

    with pytest.raises(CheckpointError, match=f"is a {name} checkpoint.*for classification checkpoints"):
        check_classification_checkpoint(FIXTURES / "legacy_checkpoints" / f"{name}.pt")
    check_classification_checkpoint(FIXTURES / "legacy_checkpoints" / "classification.pt")
