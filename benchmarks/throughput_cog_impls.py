"""Throughput mode 3 (``--cog-impls``): COG implementations on whole models."""
from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.task_steps import (
    Size, build_task_model, make_batch, ours_loss, task_optimizer, train_step_fn
)
from benchmarks.timing import (
    Runtime, images_per_second, paired_ratio, spread_percent, table, time_runs
)


def pointwise_layers_with_impls(model: nn.Module) -> list[nn.Module]:
    """The pointwise layers of ``model`` that offer several implementations (COG)."""
    from backbones.pointwise import PointwiseLayer

    return [m for m in model.modules() if isinstance(m, PointwiseLayer) and m.impls]


def set_pointwise_impl(model: nn.Module, impl: str) -> int:
    """Set ``impl`` on every pointwise layer of ``model`` offering it; returns how many."""
    layers = [m for m in pointwise_layers_with_impls(model) if impl in m.impls]
    for layer in layers:
        layer.set_impl(impl)
    return len(layers)


def check_impls_agree(model: nn.Module, images: Tensor, impls: Sequence[str], runtime: Runtime) -> float:
    """Largest relative output difference between the implementations (eval mode, same weights)."""
    outputs = []
    model.eval()
    with torch.inference_mode(), runtime.autocast():
        for impl in impls:
            set_pointwise_impl(model, impl)
            out = model(images[:2])
            outputs.append((out[0] if isinstance(out, tuple) else out).float())
    scale = outputs[0].abs().max().clamp(min=1e-12)
    return max(float((o - outputs[0]).abs().max() / scale) for o in outputs[1:])


class CompileTimeout(Exception):
    """Compilation ran past --compile-timeout."""


def caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` or an exception in its cause/context chain is a ``kind``."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise CompileTimeout in the main thread after ``seconds`` (POSIX SIGALRM; elsewhere no limit).

    torch.compile on CPU builds C++ kernels and can take many minutes on a small machine; the
    benchmark reports that instead of hanging.
    """
    import signal
    import threading

    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise CompileTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def benchmark_cog_impls(task: str, backbone: str, size: Size, runtime: Runtime, steps: int,
                        repeats: int, warmup: int, try_compile: bool,
                        compile_timeout: float = 900.0) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    batch = make_batch(task, size, runtime)
    model = runtime.place_model(build_task_model(task, backbone))
    layers = pointwise_layers_with_impls(model)
    if not layers:
        raise SystemExit(f"error: {backbone} has no pointwise layer with several implementations; "
                         "--cog-impls needs e.g. cog_* backbones")
    impls = tuple(layers[0].impls)
    auto = layers[0].resolved_impl(runtime.device) if layers[0].impl == "auto" else layers[0].impl
    difference = check_impls_agree(model, batch[0], impls, runtime)
    optimizer = task_optimizer(model)
    raw_step = train_step_fn(model, lambda: ours_loss(model, batch), optimizer, runtime)

    current = [None]

    def with_impl(impl: str) -> Callable[[], None]:
        def step() -> None:
            if current[0] != impl:  # switch once per timed run, not on every step
                set_pointwise_impl(model, impl)
                current[0] = impl
            raw_step()
        return step

    seconds = time_runs({impl: with_impl(impl) for impl in impls}, runtime, steps, repeats, warmup)
    ips = {k: images_per_second(v, size.batch_size, steps) for k, v in seconds.items()}
    best = max(ips, key=lambda k: statistics.median(ips[k]))
    rows = [{"impl": impl, "images_per_s": ips[impl], "vs_best_eager": paired_ratio(ips[impl], ips[best])}
            for impl in impls]

    compile_note = "not tried (--no-compile)"
    if try_compile:
        compiled = copy.deepcopy(model)
        set_pointwise_impl(compiled, best)
        compiled.compile()  # compiles __call__ in place: training_step's self(images) runs it
        compiled_optimizer = task_optimizer(compiled)
        compiled_step = train_step_fn(compiled, lambda: ours_loss(compiled, batch), compiled_optimizer,
                                      runtime)
        start = time.perf_counter()
        try:
            with time_limit(compile_timeout):
                compiled_step()
                runtime.synchronize()
        except Exception as exc:  # noqa: BLE001 - any compiler failure is a result to report
            if caused_by(exc, CompileTimeout):  # torch._dynamo may wrap it in its own error
                compile_note = (f"gave up: the first compiled training step (compilation) did not "
                                f"finish within {compile_timeout:.0f} s (--compile-timeout)")
            else:
                compile_note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        else:
            compile_seconds = time.perf_counter() - start
            seconds = time_runs({best: with_impl(best), "compile": compiled_step}, runtime, steps,
                                repeats, warmup)
            pair = {k: images_per_second(v, size.batch_size, steps) for k, v in seconds.items()}
            rows.append({"impl": f"torch.compile({best})", "images_per_s": pair["compile"],
                         "vs_best_eager": paired_ratio(pair["compile"], pair[best])})
            compile_note = f"first compiled step (compilation) took {compile_seconds:.0f} s"

    print(f"\n### COG implementations · {task} {backbone} · {runtime.device.type} {runtime.precision} · "
          f"{size.image_size} px, batch {size.batch_size} (training step)"
          f"{'' if runtime.clock == 'wall' else ' · CPU-time clock'}\n")
    print(table(["impl", f"train {runtime.unit}", "spread", "÷ best eager"],
                [[r["impl"], statistics.median(r["images_per_s"]),
                  f"±{spread_percent(r['images_per_s']) / 2:.0f}%", r["vs_best_eager"]] for r in rows]))
    print(f"\nfastest eager: {best}; `auto` on {runtime.device.type} selects: {auto}"
          + ("" if auto == best else "  <-- the auto table disagrees with this measurement"))
    print(f"largest relative output difference between impls: {difference:.2e}")
    print(f"torch.compile: {compile_note}")
    return [{"kind": "cog_impl", "task": task, "model": backbone, "mode": "train", "impl": r["impl"],
             "device": runtime.device.type, "precision": runtime.precision, "clock": runtime.clock,
             "image_size": size.image_size,
             "batch_size": size.batch_size, "steps": steps, "repeats": len(r["images_per_s"]),
             "images_per_s_median": statistics.median(r["images_per_s"]),
             "images_per_s_min": min(r["images_per_s"]), "images_per_s_max": max(r["images_per_s"]),
             "vs_best_eager": r["vs_best_eager"], "auto_impl": auto} for r in rows]
