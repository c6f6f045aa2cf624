"""Training and inference throughput (images/s) of the task models against torchvision's own.

    python -m benchmarks.throughput                                   # all tasks, thesis sizes
    python -m benchmarks.throughput --quick                           # small sizes, a quick look
    python -m benchmarks.throughput --tasks classification --backbones mv2_e6,cog_e6 --csv out.csv
    python -m benchmarks.throughput --data --no-models                # data pipeline alone
    python -m benchmarks.throughput --cog-impls                       # COG implementations, whole models
    python -m benchmarks.throughput --loop                            # train.py epoch vs raw step

What one step is:
- training: the task's own ``training_step`` (loss, metric updates; ``self.log`` is a no-op
  without a Trainer), ``backward``, the task's optimizer (``tasks.base.build_optimizer`` with the
  task's ``optimizer`` settings: AdamW for classification/segmentation, SGD for detection; the
  per-iteration lr schedule is left out, it costs microseconds) and ``zero_grad``; model in train
  mode. The torchvision references use their own loss (cross-entropy; SSD's built-in MultiBox
  loss) with the same optimizer settings.
- inference: eval mode under ``torch.inference_mode``; for detection forward + post-processing
  (ours: ``DetectionTask.detect``, torchvision: its eval-mode forward, which includes NMS).

References: ``mobilenet_v2`` (the same architecture as ``mv2_e6``),
``ssdlite320_mobilenet_v3_large`` (resize set to our input size, so both see the same pixels) and
``deeplabv3_mobilenet_v3_large`` (aux_loss=False), all from scratch (no weights).

CPU runs fp32; CUDA runs bf16 autocast with channels_last and synchronises around every timed
run. Each run is ``--steps`` steps after ``--warmup`` steps; all models of a task alternate run
by run (the order rotating each repeat) so machine noise hits them alike. Tables give the median
over ``--repeats`` runs; a ratio is the median of the per-repeat ratios. On a shared CPU machine
use ``--threads 1 --clock cpu``: wall time there mostly measures the other processes, and
several intra-op threads stall each other when the cores are oversubscribed, while the CPU time
of a one-thread process counts the work itself.

Other modes:
- ``--data``: ``dataset[i]`` (read, decode, training augmentation) images/s in one process, on a
  synthetic set written by data/synthetic/'s writers, read by the task's real datamodule.
- ``--cog-impls``: whole-model training steps of cog_* backbones with every
  ``ChannelOverlapConv2d`` implementation, plus ``torch.compile`` of the fastest (given up after
  ``--compile-timeout`` seconds), checked against the ``auto`` table.
- ``--loop``: real ``train.py`` fits on ``data=synthetic`` (validation and test off) with a
  ``BatchTimer`` callback, alternating with raw-step measurements on the same model and batch
  (raw, fit, raw, fit, ..., raw); each fit is compared to the raw rate around it.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import torch

from benchmarks.common import write_csv
from benchmarks.task_steps import BACKBONES, QUICK_SIZES, Size, TASKS, THESIS_SIZES
from benchmarks.throughput_cog_impls import benchmark_cog_impls
from benchmarks.throughput_data import report_data
from benchmarks.throughput_loop import benchmark_loop
from benchmarks.throughput_models import ModelResult, benchmark_task, report_models
from benchmarks.timing import CLOCKS, describe_machine, oversubscribed, resolve_devices
from errors import exit_on_user_error


def _choices(value: str, valid: Sequence[str], what: str) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in valid]
    if unknown or not chosen:
        raise SystemExit(f"error: unknown {what} {unknown or value!r}; valid: {', '.join(valid)}")
    return chosen


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma list of %(default)s")
    parser.add_argument("--backbones", default=",".join(BACKBONES), help="comma list (default %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (cpu, + cuda if present), cpu, cuda")
    parser.add_argument("--quick", action="store_true", help="small images and batches (CPU smoke run)")
    parser.add_argument("--batch-size", type=int, help="override every task's batch size")
    parser.add_argument("--image-size", type=int, help="override every task's image size")
    parser.add_argument("--steps", type=int, default=3, help="steps per timed run (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per model (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default %(default)s)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="CPU timings: wall seconds (default) or this process's CPU seconds, "
                             "which on a shared machine with --threads 1 count work, not waiting")
    parser.add_argument("--csv", help="write all measurements to this CSV file")
    parser.add_argument("--no-models", action="store_true", help="skip the ours-vs-torchvision model timing")
    parser.add_argument("--data", action="store_true", help="also time the data pipeline alone")
    parser.add_argument("--data-images", type=int, default=48, help="images per data pass (default %(default)s)")
    parser.add_argument("--data-source-size", type=int, default=400,
                        help="side of the synthetic source images for --data (default %(default)s, ~VOC)")
    parser.add_argument("--cog-impls", action="store_true",
                        help="only: time whole-model training steps per ChannelOverlapConv2d impl")
    parser.add_argument("--no-compile", action="store_true", help="--cog-impls without torch.compile")
    parser.add_argument("--compile-timeout", type=float, default=900.0,
                        help="--cog-impls: give up compiling after this many seconds (default %(default)s)")
    parser.add_argument("--loop", action="store_true", help="only: train.py epoch vs raw step")
    parser.add_argument("--loop-repeats", type=int, default=3,
                        help="--loop: train.py fits, each between two raw-step measurements (default %(default)s)")
    parser.add_argument("--loop-epochs", type=int, default=1, help="--loop: epochs per fit (default %(default)s)")
    parser.add_argument("--loop-steps", type=int, default=20, help="training steps per epoch for --loop")
    parser.add_argument("--loop-skip", type=int, default=3, help="warm-up batches not counted in --loop")
    parser.add_argument("--num-workers", type=int, help="--loop: data workers (default: the config's)")
    parser.add_argument("--synthetic-dir", help="where --loop/--data write the synthetic set (default: temp)")
    args = parser.parse_args(argv)
    args.tasks = _choices(args.tasks, TASKS, "task")
    from backbones import list_backbones
    args.backbones = _choices(args.backbones, list_backbones(), "backbone")
    for name in ("steps", "repeats", "batch_size", "image_size", "loop_steps", "loop_epochs", "loop_repeats",
                 "data_images"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be >= 1, got {value}")
    return args


def task_size(task: str, args: argparse.Namespace) -> Size:
    base = (QUICK_SIZES if args.quick else THESIS_SIZES)[task]
    return Size(args.image_size or base.image_size, args.batch_size or base.batch_size)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runtimes = resolve_devices(args.device, args.clock)
    sizes = {task: task_size(task, args) for task in args.tasks}
    quick = " (--quick: reduced image and batch sizes, not the thesis settings)" if args.quick else ""
    print("# throughput" + quick)
    for runtime in runtimes:
        print(f"{runtime.device.type}: {describe_machine(runtime.device)}; {runtime.precision}")
        if runtime.cuda:
            torch.backends.cudnn.benchmark = True
    print(f"steps per run {args.steps}, repeats {args.repeats}, warm-up steps {args.warmup}")
    if oversubscribed():
        print("warning: the machine's load exceeds its cores; multi-threaded CPU timings collapse "
              "when threads wait on each other at every op (measured 10x slower on a loaded 2-core "
              "machine): prefer --threads 1 --clock cpu on a shared machine")
    if args.clock == "cpu" and torch.get_num_threads() > 1:
        print("note: --clock cpu with several torch threads also counts their spin-waiting; "
              "use --threads 1 for CPU-time numbers that mean work done")
    csv_rows: list[dict[str, Any]] = []

    if args.cog_impls:
        cog = [b for b in args.backbones if b.startswith("cog_")] or ["cog_e2", "cog_e6"]
        for runtime in runtimes:
            for task in args.tasks:
                for backbone in cog:
                    csv_rows += benchmark_cog_impls(task, backbone, sizes[task], runtime, args.steps,
                                                    args.repeats, args.warmup, not args.no_compile,
                                                    args.compile_timeout)
    elif args.loop:
        runtime = next((r for r in runtimes if r.cuda), runtimes[0])  # train.py's device: GPU if any
        for task in args.tasks:
            for backbone in args.backbones:
                csv_rows.append(benchmark_loop(task, backbone, sizes[task], runtime, args))
    else:
        results: list[ModelResult] = []
        if not args.no_models:
            for runtime in runtimes:
                for task in args.tasks:
                    print(f"... {task} on {runtime.device.type}", file=sys.stderr, flush=True)
                    results += benchmark_task(task, args.backbones, sizes[task], runtime,
                                              args.steps, args.repeats, args.warmup)
            csv_rows += report_models(results, args.steps)
        if args.data:
            csv_rows += report_data(args, sizes, results)
    if args.csv:
        write_csv(args.csv, csv_rows)
        print(f"\nwrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_user_error(main)())  # bad input: one line, exit status 2
