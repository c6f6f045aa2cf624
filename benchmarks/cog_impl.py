"""Times the ChannelOverlapConv2d implementations (forward + backward) at MobileNet shapes.

Usage: python -m benchmarks.cog_impl [--device cpu|cuda] [--batch 16] [--threads N] [--rounds 5]
       [--clock wall|cpu]   (on a busy shared machine: --threads 1 --clock cpu)

Shapes are COG expansion convs of a 224-px COG-MobileNet: (in-channels, resolution) of blocks
in the 24/32/64/96-channel stages, times expansion ratios 2/4/6. All implementations are timed
in one process, interleaved over several rounds (best kept) so machine noise hits them
alike. The result fills ``_FASTEST_IMPL`` in backbones/pointwise/cog.py.
"""
from __future__ import annotations

import argparse
import math
import time

import torch
from torch.utils import benchmark

from backbones.pointwise.cog import IMPLS, ChannelOverlapConv2d

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
# (in_channels, spatial size) of COG expansion convs at 224 px input.
SHAPES = ((24, 56), (32, 28), (64, 14), (96, 14))
EXPANSIONS = (2, 4, 6)


def time_impl(conv: ChannelOverlapConv2d, x: torch.Tensor, grad: torch.Tensor, impl: str,
              min_run_time: float, clock) -> float:
    """Seconds of one forward + backward with ``impl`` (fastest timed block: on a shared machine
    the minimum is the estimate least inflated by other processes)."""
    conv.impl = impl

    def step() -> None:
        x.grad = None
        conv.weight.grad = None
        conv(x).backward(grad)
        if x.is_cuda:
            torch.cuda.synchronize()

    step()  # warm-up (allocator, kernel selection)
    timer = benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads(),
                            timer=clock)
    return min(timer.blocked_autorange(min_run_time=min_run_time).times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved repeats, best kept")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="wall: elapsed time; cpu: process CPU time, robust on a shared, "
                             "oversubscribed machine when used with --threads 1")
    args = parser.parse_args()
    if args.clock == "cpu" and args.device != "cpu":
        parser.error("--clock cpu only measures CPU work; use --clock wall on accelerators")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    print(f"device={device} threads={torch.get_num_threads()} batch={args.batch} clock={args.clock} "
          f"torch={torch.__version__}")
    header = f"{'in':>4} {'out':>4} {'px':>4} | " + " | ".join(f"{i:>9}" for i in IMPLS) + " | fastest"
    print(header + "\n" + "-" * len(header))
    totals = dict.fromkeys(IMPLS, 0.0)
    log_ratio = dict.fromkeys(IMPLS, 0.0)  # for the geometric mean relative to the best
    wins = dict.fromkeys(IMPLS, 0)
    for in_ch, size in SHAPES:
        for t in EXPANSIONS:
            out_ch = in_ch * t
            conv = ChannelOverlapConv2d(in_ch, out_ch, groups=4, overlap=1).to(device)
            x = torch.randn(args.batch, in_ch, size, size, device=device, requires_grad=True)
            grad = torch.randn(args.batch, out_ch, size, size, device=device)
            best = dict.fromkeys(IMPLS, math.inf)
            for _ in range(args.rounds):
                for impl in IMPLS:
                    best[impl] = min(best[impl], time_impl(conv, x, grad, impl, args.min_run_time,
                                                           CLOCKS[args.clock]))
            fastest = min(best, key=best.get)
            wins[fastest] += 1
            for impl in IMPLS:
                totals[impl] += best[impl]
                log_ratio[impl] += math.log(best[impl] / best[fastest])
            cells = " | ".join(f"{best[i] * 1e3:7.2f}ms" for i in IMPLS)
            print(f"{in_ch:>4} {out_ch:>4} {size:>4} | {cells} | {fastest}")
    n = len(SHAPES) * len(EXPANSIONS)
    print("-" * len(header))
    print("total      | " + " | ".join(f"{totals[i] * 1e3:7.1f}ms" for i in IMPLS))
    print("geo-mean x | " + " | ".join(f"{math.exp(log_ratio[i] / n):9.3f}" for i in IMPLS)
          + "   (time / fastest per shape)")
    print("wins       | " + " | ".join(f"{wins[i]:>9}" for i in IMPLS))
    print(f"fastest overall (total time): {min(totals, key=totals.get)}")


if __name__ == "__main__":
    main()
