"""Throughput mode 4 (``--loop``): a real train.py run vs the raw step."""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from benchmarks.task_steps import Size, ours_loss, task_optimizer, train_step_fn
from benchmarks.timing import Runtime, images_per_second, table, time_runs
from errors import ConfigError
from tasks.registry import get_task


class BatchTimer(L.Callback):
    """Timestamps every training batch start/end and epoch start, on the wall clock and on the
    process CPU clock (``time.process_time``: all threads of this process, not the data workers);
    writes them as JSON at the end of training.

    Usable from a config: ``+callbacks.batch_timer._target_=benchmarks.throughput_loop.BatchTimer``
    ``+callbacks.batch_timer.output=timing.json``. On CUDA it synchronises at every mark, which
    stops the host from queueing ahead across batches: the loop it measures is, if anything,
    slightly slower than an untimed one.
    """

    def __init__(self, output: str) -> None:
        self.output = output
        self.epochs: list[dict[str, Any]] = []

    @staticmethod
    def _marks(pl_module: L.LightningModule) -> tuple[float, float]:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter(), time.process_time()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        wall, cpu = self._marks(pl_module)
        self.epochs.append({"start": wall, "cpu_start": cpu, "batches": []})

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        wall, cpu = self._marks(pl_module)
        self.epochs[-1]["batches"].append({"start": wall, "cpu_start": cpu, "images": int(batch[0].shape[0])})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        wall, cpu = self._marks(pl_module)
        self.epochs[-1]["batches"][-1].update(end=wall, cpu_end=cpu)

    def on_train_end(self, trainer, pl_module) -> None:
        Path(self.output).write_text(json.dumps({"epochs": self.epochs}))


@dataclass
class LoopTiming:
    images: int
    wall_seconds: float  # from the first timed batch start to the last batch end, per epoch
    step_seconds: float  # sum over timed batches of batch end - batch start
    gap_seconds: float  # wall - step: data fetch and everything between two batches

    @property
    def wall_ips(self) -> float:
        return self.images / self.wall_seconds

    @property
    def step_ips(self) -> float:
        return self.images / self.step_seconds


def summarise_loop(epochs: Sequence[Mapping[str, Any]], skip_first: int, clock: str = "wall") -> LoopTiming:
    """Steady throughput of the epochs: the first ``skip_first`` batches of the first epoch are
    warm-up; later epochs count from their epoch start (their first data fetch included).
    ``clock`` "wall" reads the ``start``/``end`` marks, "cpu" the ``cpu_start``/``cpu_end`` ones."""
    if clock not in ("wall", "cpu"):
        raise ConfigError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    begin, end = ("start", "end") if clock == "wall" else ("cpu_start", "cpu_end")
    images = wall = step = 0.0
    for number, epoch in enumerate(epochs):
        batches = [b for b in epoch["batches"] if end in b]
        if number == 0:
            batches = batches[skip_first:]
            start = batches[0][begin] if batches else None
        else:
            start = epoch[begin]
        if not batches:
            continue
        images += sum(b["images"] for b in batches)
        wall += batches[-1][end] - start
        step += sum(b[end] - b[begin] for b in batches)
    if images == 0:
        raise ConfigError(f"no timed batches: the epochs are not longer than the {skip_first} warm-up batches")
    return LoopTiming(int(images), wall, step, wall - step)


def compose_train_config(overrides: Sequence[str]):
    """``configs/train.yaml`` composed with ``overrides`` as train.py would (no Hydra run dir)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    config_dir = str(Path(__file__).resolve().parents[1] / "configs")
    with initialize_config_dir(version_base="1.3", config_dir=config_dir):
        return compose("train", overrides=list(overrides))


def loop_overrides(task: str, backbone: str, size: Size, steps_per_epoch: int, epochs: int,
                   synthetic_dir: Path, output_dir: Path, timer_output: Path, runtime: Runtime,
                   num_workers: int | None) -> list[str]:
    count = steps_per_epoch * size.batch_size
    generator = [f"synthetic.generator.{key}={value}"
                 for key, value in get_task(task).synthetic_train_images(count).items()]
    overrides = [
        f"task={task}", "data=synthetic", f"backbone={backbone}",
        f"paths.synthetic_dir={synthetic_dir}", f"paths.output_dir={output_dir}", f"paths.log_dir={output_dir}",
        f"batch_size={size.batch_size}", f"synthetic.image_size={size.image_size}", *generator,
        f"trainer.max_epochs={epochs}", "++trainer.limit_val_batches=0", "test=false",
        "++synthetic.warmup_epochs=0",  # lr warm-up (segmentation) must fit in a short run
        f"trainer.accelerator={'gpu' if runtime.cuda else 'cpu'}",
        "+callbacks.batch_timer._target_=benchmarks.throughput_loop.BatchTimer",
        f"+callbacks.batch_timer.output={timer_output}",
    ]
    if num_workers is not None:
        overrides.append(f"num_workers={num_workers}")
    return overrides


def raw_step_for(cfg, runtime: Runtime, num_batches: int = 8) -> tuple[Callable[[], None], int]:
    """The raw training step on the model and real batches of ``cfg`` (as train.py builds them:
    same model settings, datamodule, batch and image size); returns it and the batch size.

    The step cycles over the first ``num_batches`` batches: training on one batch over and over
    memorises it, and the vanishing loss and gradients can turn into denormal floats, which are
    slow on CPUs and would make the raw step look slower than real training.
    """
    import itertools

    from hydra.utils import instantiate

    torch.manual_seed(0)
    datamodule = instantiate(cfg.data, num_workers=0)
    datamodule.setup("fit")
    model = runtime.place_model(instantiate(cfg.model))
    model.input_normalization = getattr(datamodule, "input_normalization", None)
    batches = []
    for images, target in itertools.islice(datamodule.train_dataloader(), num_batches):
        if isinstance(target, Tensor):
            target = target.to(runtime.device)
        else:
            target = [{k: v.to(runtime.device) for k, v in t.items()} for t in target]
        # uint8 from the loader: normalised (and distorted) on the device, as in training
        images = model.prepare_images(images.to(runtime.device), (images, target))
        batches.append((runtime.place_images(images), target))
    cycle = itertools.cycle(batches)
    step = train_step_fn(model, lambda: ours_loss(model, next(cycle)), task_optimizer(model), runtime)
    return step, int(batches[0][0].shape[0])


def benchmark_loop(task: str, backbone: str, size: Size, runtime: Runtime, args) -> dict[str, Any]:
    """``--loop-repeats`` real train.py fits alternating with raw-step measurements
    (raw, fit, raw, fit, ..., raw); each fit is compared to the mean of the raw rates measured
    right before and after it, so a change of machine load hits both sides alike."""
    from omegaconf import open_dict

    from train import train

    fits: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="throughput-loop-") as tmp:
        tmp = Path(tmp)
        synthetic_dir = Path(args.synthetic_dir) if args.synthetic_dir else tmp / "synthetic"

        def config(number: int):
            cfg = compose_train_config(loop_overrides(
                task, backbone, size, args.loop_steps, args.loop_epochs, synthetic_dir,
                tmp / f"run{number}", tmp / f"batch_timing{number}.json", runtime, args.num_workers))
            with open_dict(cfg):
                cfg.trainer.enable_model_summary = False
            return cfg

        cfg = config(0)
        raw_step, batch_size = raw_step_for(cfg, runtime)

        def measure_raw() -> tuple[float, float]:
            """(median wall images/s, images per process-CPU second) of the raw step."""
            cpu = time.process_time()
            seconds = time_runs({"raw": raw_step}, runtime, args.steps, args.repeats, 0, clock="wall")["raw"]
            cpu = time.process_time() - cpu
            images = batch_size * args.steps * args.repeats
            return statistics.median(images_per_second(seconds, batch_size, args.steps)), images / cpu

        for _ in range(args.warmup):
            raw_step()
        raw, raw_cpu = zip(*[measure_raw()])
        raw, raw_cpu = list(raw), list(raw_cpu)
        for number in range(args.loop_repeats):
            cfg = config(number)
            start = time.perf_counter()
            train(cfg)
            fit_seconds = time.perf_counter() - start
            epochs = json.loads((tmp / f"batch_timing{number}.json").read_text())["epochs"]
            timing = summarise_loop(epochs, args.loop_skip)
            cpu_timing = summarise_loop(epochs, args.loop_skip, clock="cpu")
            wall_rate, cpu_rate = measure_raw()
            raw.append(wall_rate)
            raw_cpu.append(cpu_rate)
            around, around_cpu = (raw[-2] + raw[-1]) / 2, (raw_cpu[-2] + raw_cpu[-1]) / 2
            fits.append({"raw_around": around, "loop": timing.wall_ips, "step_only": timing.step_ips,
                         "ratio": timing.wall_ips / around, "step_only_ratio": timing.step_ips / around,
                         "cpu_ratio": cpu_timing.wall_ips / around_cpu,
                         "cpu_step_only_ratio": cpu_timing.step_ips / around_cpu,
                         "gap_share": timing.gap_seconds / timing.wall_seconds,
                         "images": timing.images, "fit_seconds": fit_seconds})

    ratio = statistics.median(f["ratio"] for f in fits)
    workers = int(cfg.num_workers)
    print(f"\n### train.py loop vs raw step · {task} {backbone} · {runtime.device.type} {runtime.precision} · "
          f"{size.image_size} px, batch {size.batch_size}, num_workers {workers}\n")
    print(table(
        ["fit", "raw step img/s (mean before/after)", "train.py epoch img/s", "epoch ÷ raw",
         "inside steps img/s", "steps ÷ raw", "between batches", "timed images"],
        [[k + 1, f["raw_around"], f["loop"], f["ratio"], f["step_only"], f["step_only_ratio"],
          f"{100 * f['gap_share']:.1f}%", f["images"]] for k, f in enumerate(fits)]))
    print(f"\nraw step img/s in order measured: {', '.join(f'{r:.2f}' for r in raw)}")
    print("process CPU time (this process's threads, not the data workers; robust to other load "
          "when torch runs one thread): train.py epoch ÷ raw = "
          + ", ".join(f"{f['cpu_ratio']:.3f}" for f in fits) + "; inside steps ÷ raw = "
          + ", ".join(f"{f['cpu_step_only_ratio']:.3f}" for f in fits))
    verdict = "meets" if ratio >= 0.8 else "MISSES"
    print(f"target train.py >= 0.8 x raw step: {verdict} (median ratio {ratio:.2f})")
    return {
        "kind": "loop", "task": task, "model": backbone, "device": runtime.device.type,
        "precision": runtime.precision, "image_size": size.image_size, "batch_size": size.batch_size,
        "num_workers": workers, "fits": len(fits), "loop_ratio": ratio,
        "step_only_ratio": statistics.median(f["step_only_ratio"] for f in fits),
        "cpu_time_ratio": statistics.median(f["cpu_ratio"] for f in fits),
        "cpu_time_step_only_ratio": statistics.median(f["cpu_step_only_ratio"] for f in fits),
        "gap_share": statistics.median(f["gap_share"] for f in fits),
        "raw_images_per_s": statistics.median(raw),
        "loop_images_per_s": statistics.median(f["loop"] for f in fits),
    }
