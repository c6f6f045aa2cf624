"""benchmarks/throughput*.py, task_steps.py, timing.py: step functions per task, interleaved timing, ratios, loop timing,
COG implementation switching and the --quick command line. No absolute timings are asserted."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from benchmarks import task_steps as steps
from benchmarks import throughput as tp
from benchmarks import throughput_cog_impls as cog_impls
from benchmarks import throughput_data as data_mode
from benchmarks import throughput_loop as loop
from benchmarks import throughput_models as models
from benchmarks import timing

REPO = Path(__file__).resolve().parents[1]
# The tasks' self.log() calls warn outside a Trainer; the benchmark calls training_step directly.
pytestmark = pytest.mark.filterwarnings("ignore:.*self.trainer. reference is not registered")
CPU = timing.Runtime(torch.device("cpu"))
# Tiny inputs per task (detection needs >= 2 images: its last extra layer is a 1x1 BatchNorm).
TINY = {"classification": steps.Size(64, 2), "detection": steps.Size(96, 2), "segmentation": steps.Size(64, 2)}


def _parameters(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("task", steps.TASKS)
def test_step_functions_train_and_infer_ours_and_reference(task):
    """A training step changes the weights and leaves no gradients behind; an inference step
    changes nothing; both give positive images/s through the interleaved timer."""
    size = TINY[task]
    batch = steps.make_batch(task, size, CPU)
    ours = steps.ours_entry(task, {"name": "cog_e2", "width_mult": 0.35}, batch, CPU, label="ours")
    settings = dict(ours.model.hparams.optimizer)
    reference = steps.reference_entry(task, size, batch, CPU, settings)
    for entry in (ours, reference):
        before = _parameters(entry.model)
        entry.infer()
        assert all(torch.equal(a, b) for a, b in zip(before, entry.model.parameters()))
        entry.train()
        assert entry.model.training
        assert any(not torch.equal(a, b) for a, b in zip(before, entry.model.parameters()))
        assert all(p.grad is None for p in entry.model.parameters())

    seconds = timing.time_runs({"ours": ours.infer, "reference": reference.infer}, CPU,
                           num_steps=1, repeats=2, warmup=0)
    rates = {k: timing.images_per_second(v, size.batch_size, 1) for k, v in seconds.items()}
    assert all(len(v) == 2 and all(r > 0 for r in v) for v in rates.values())
    assert timing.paired_ratio(rates["ours"], rates["reference"]) > 0


def test_make_batch_follows_the_task_batch_formats():
    size = steps.Size(64, 3)
    images, labels = steps.make_batch("classification", size, CPU, num_classes=7)
    assert images.shape == (3, 3, 64, 64) and labels.dtype == torch.long and labels.max() < 7
    images, targets = steps.make_batch("detection", size, CPU, num_classes=5)
    assert len(targets) == 3
    for t in targets:
        boxes = t["boxes"]
        assert (boxes[:, 2:] > boxes[:, :2]).all() and boxes.min() >= 0 and boxes.max() <= 64
        assert t["labels"].min() >= 1 and t["labels"].max() <= 5  # 0 is background
    _, masks = steps.make_batch("segmentation", size, CPU, num_classes=4)
    values = set(masks.unique().tolist())
    assert 255 in values and values - {255} <= set(range(4))


def test_time_runs_interleaves_with_rotating_order_after_warmup():
    calls: list[str] = []
    steps = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    seconds = timing.time_runs(steps, CPU, num_steps=2, repeats=3, warmup=1)
    assert calls[:3] == ["a", "b", "c"]  # warm-up, one each
    timed = calls[3:]
    runs = [timed[i] for i in range(0, len(timed), 2)]
    assert runs == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(v) == 3 and all(s > 0 for s in v) for v in seconds.values())
    with pytest.raises(ValueError, match="steps >= 1"):
        timing.time_runs(steps, CPU, num_steps=0, repeats=1, warmup=0)


def test_cpu_clock_counts_work_not_sleep():
    import time

    def busy() -> None:
        end = time.process_time() + 0.02
        while time.process_time() < end:
            pass

    steps = {"sleep": lambda: time.sleep(0.05), "busy": busy}
    cpu = timing.time_runs(steps, CPU, num_steps=1, repeats=2, warmup=0, clock="cpu")
    wall = timing.time_runs(steps, CPU, num_steps=1, repeats=2, warmup=0, clock="wall")
    assert max(cpu["sleep"]) < 0.02 <= min(cpu["busy"])
    assert min(wall["sleep"]) >= 0.05
    with pytest.raises(ValueError, match="clock"):
        timing.time_runs(steps, CPU, num_steps=1, repeats=1, warmup=0, clock="gpu")


def test_paired_ratio_is_the_median_of_per_repeat_ratios():
    # A noisy repeat slows both series alike; the ratio of medians would be 10/12, the paired
    # median sees 2 in every repeat.
    ours = [20.0, 10.0, 24.0]
    reference = [10.0, 5.0, 12.0]
    assert timing.paired_ratio(ours, reference) == pytest.approx(2.0)
    assert timing.paired_ratio([1.0, 3.0, 8.0], [1.0, 1.0, 1.0]) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="equally long"):
        timing.paired_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="non-positive"):
        timing.paired_ratio([1.0], [0.0])


def _result(task: str, label: str, train: list[float], infer: list[float]) -> models.ModelResult:
    return models.ModelResult(task, label, CPU, steps.Size(64, 2), train, infer)


def test_ratio_rows_reference_and_cog_vs_mv2():
    results = [
        _result("classification", "mv2_e6", [12.0, 6.0], [30.0, 30.0]),
        _result("classification", "cog_e6", [6.0, 6.0], [15.0, 60.0]),
        _result("classification", steps.REFERENCE_LABEL["classification"], [10.0, 5.0], [20.0, 20.0]),
    ]
    rows = {row[2]: row for row in models.ratio_rows(results)}
    same_arch = rows[f"mv2_e6 / {steps.REFERENCE_LABEL['classification']}"]
    assert same_arch[3] == pytest.approx(1.2) and same_arch[4] == pytest.approx(1.5)
    assert same_arch[5].startswith(">= 1.0")
    cog = rows["cog_e6 / mv2_e6"]
    assert cog[3] == pytest.approx((0.5 + 1.0) / 2) and cog[4] == pytest.approx((0.5 + 2.0) / 2)
    assert len(rows) == 3  # two vs the reference, one COG vs MV2


def test_summarise_loop_skips_warmup_and_splits_step_from_gap():
    epochs = [
        {"start": 0.0, "batches": [{"start": 0.0, "end": 5.0, "images": 4},  # warm-up
                                   {"start": 6.0, "end": 7.0, "images": 4},
                                   {"start": 8.0, "end": 9.0, "images": 4}]},
        {"start": 20.0, "batches": [{"start": 21.0, "end": 22.0, "images": 4},
                                    {"start": 22.5, "end": 23.5, "images": 2}]},
    ]
    summary = loop.summarise_loop(epochs, skip_first=1)
    assert summary.images == 14
    assert summary.wall_seconds == pytest.approx(3.0 + 3.5)
    assert summary.step_seconds == pytest.approx(4.0)
    assert summary.gap_seconds == pytest.approx(2.5)
    assert summary.wall_ips == pytest.approx(14 / 6.5)
    with pytest.raises(ValueError, match="warm-up"):
        loop.summarise_loop(epochs[:1], skip_first=3)
    # The CPU clock reads its own marks: here each CPU mark is half the wall mark.
    for epoch in epochs:
        epoch["cpu_start"] = epoch["start"] / 2
        for batch in epoch["batches"]:
            batch["cpu_start"], batch["cpu_end"] = batch["start"] / 2, batch["end"] / 2
    cpu = loop.summarise_loop(epochs, skip_first=1, clock="cpu")
    assert cpu.images == 14 and cpu.wall_seconds == pytest.approx(6.5 / 2)


class _TinyModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.slow
def test_batch_timer_records_every_batch_in_a_real_fit(tmp_path):
    data = torch.utils.data.TensorDataset(torch.randn(12, 4), torch.zeros(12))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    output = tmp_path / "timing.json"
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[loop.BatchTimer(str(output))])
    trainer.fit(_TinyModule(), loader)
    epochs = json.loads(output.read_text())["epochs"]
    assert len(epochs) == 2
    for epoch in epochs:
        assert [b["images"] for b in epoch["batches"]] == [4, 4, 4]
        assert all(epoch["start"] <= b["start"] < b["end"] for b in epoch["batches"])
        assert all(epoch["cpu_start"] <= b["cpu_start"] <= b["cpu_end"] for b in epoch["batches"])
    assert loop.summarise_loop(epochs, skip_first=1).images == 20


def test_cog_impls_switch_every_layer_and_agree():
    from backbones.pointwise.cog import IMPLS

    model = steps.build_task_model("classification", {"name": "cog_e2", "width_mult": 0.35}, num_classes=5)
    count = cog_impls.set_pointwise_impl(model, "roll")
    assert count > 0
    impls = [m.impl for m in model.modules() if hasattr(m, "overlap")]
    assert impls == ["roll"] * count
    images = torch.randn(2, 3, 64, 64)
    assert cog_impls.check_impls_agree(model, images, IMPLS, CPU) < 1e-4


@pytest.mark.parametrize("task", steps.TASKS)
def test_data_pipeline_reads_the_synthetic_set_through_the_real_datamodule(task, tmp_path):
    dataset = data_mode.synthetic_train_dataset(task, tmp_path, image_size=64, source_size=64, count=4)
    image, target = dataset[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8  # normalised on the device
    if task == "segmentation":
        assert target.shape == (64, 64)
    rates = data_mode.benchmark_data(task, tmp_path, image_size=64, source_size=64, count=4, repeats=2)
    assert len(rates) == 2 and all(r > 0 for r in rates)


def test_time_limit_interrupts_a_long_call_and_is_found_through_wrapping():
    import time

    with pytest.raises(cog_impls.CompileTimeout):
        with cog_impls.time_limit(0.05):
            time.sleep(5)
    with cog_impls.time_limit(5):  # a call within the limit is untouched and the alarm is cleared
        time.sleep(0.01)
    try:
        try:
            raise cog_impls.CompileTimeout()
        except cog_impls.CompileTimeout as inner:
            raise RuntimeError("backend compiler failed") from inner
    except RuntimeError as wrapped:
        assert cog_impls.caused_by(wrapped, cog_impls.CompileTimeout)
        assert not cog_impls.caused_by(wrapped, KeyError)


def test_unknown_task_or_backbone_is_explained():
    with pytest.raises(SystemExit, match="valid: classification, detection, segmentation"):
        tp.parse_args(["--tasks", "classification,segmantation"])
    with pytest.raises(SystemExit, match="mv2_e2"):
        tp.parse_args(["--backbones", "resnet50"])
    with pytest.raises(SystemExit, match="--steps must be >= 1"):
        tp.parse_args(["--steps", "0"])


QUICK_ARGS = ["--quick", "--tasks", "classification", "--backbones", "mv2_e6,cog_e6", "--image-size", "64",
              "--batch-size", "2", "--steps", "1", "--repeats", "1", "--warmup", "0", "--device", "cpu"]


def _check_quick_output(stdout: str, csv_path: Path) -> None:
    assert "--quick" in stdout
    assert "mv2_e6 / tv mobilenet_v2" in stdout and "cog_e6 / mv2_e6" in stdout
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    measured = [r for r in rows if r["kind"] == "model"]
    measured_models = {(r["model"], r["mode"]) for r in measured}
    assert measured_models == {(m, mode) for m in ("mv2_e6", "cog_e6", "tv mobilenet_v2") for mode in ("train", "infer")}
    assert all(float(r["images_per_s_median"]) > 0 and r["image_size"] == "64" for r in measured)
    ratios = {r["model"]: r for r in rows if r["kind"] == "ratio"}
    assert set(ratios) == {"mv2_e6 / tv mobilenet_v2", "cog_e6 / tv mobilenet_v2", "cog_e6 / mv2_e6"}
    # One repeat: the ratio is exactly the quotient of the two measured rates.
    rate = {(r["model"], r["mode"]): float(r["images_per_s_median"]) for r in measured}
    assert float(ratios["cog_e6 / mv2_e6"]["train_ratio"]) == pytest.approx(
        rate["cog_e6", "train"] / rate["mv2_e6", "train"], rel=1e-6)


def test_quick_cli_in_process(tmp_path, capsys):
    out = tmp_path / "throughput.csv"
    assert tp.main([*QUICK_ARGS, "--csv", str(out)]) == 0
    _check_quick_output(capsys.readouterr().out, out)


@pytest.mark.slow
def test_quick_cli_subprocess(tmp_path):
    """``python -m benchmarks.throughput --quick`` as a user runs it (interpreter start-up and
    imports alone take 30+ s on a loaded 2-core machine, hence slow)."""
    out = tmp_path / "throughput.csv"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.throughput", *QUICK_ARGS, "--threads", "1",
                           "--csv", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_quick_output(proc.stdout, out)
