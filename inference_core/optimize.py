"""Exact per-model optimisations, applied before the probe batch is timed and checked on it.

Each step is kept only when the model still runs on the check batch (real test images, every TTA
view of the model, every image shape the batch has) and its outputs stay within `TOLERANCE` of
its own unoptimised outputs; otherwise the model runs without that step, and a log line says why:

- fold: every eval-mode BatchNorm that is the only user of a convolution's output is folded into
  that convolution's weights (found by a torch.fx trace), which saves a pass over each
  activation. A model whose forward cannot be traced (control flow on tensor values, ...) runs
  unfolded.
- channels_last: 4-D weights and inputs in NHWC, the layout oneDNN (CPU) and cuDNN (GPU) convolve
  fastest. A model that needs NCHW strides (`.view` on a conv output) runs without it.
- compile (only with `compile: auto`): `torch.compile`, when the model's remaining work, projected
  from its measured time on the check batch, pays back a conservative guess of the compile time;
  then kept only if it compiled, is equal, and ran faster on the check batch.

The check itself is skipped when it would eat the time the models need to predict (a tight
budget, or a start-up that took most of it): the model then runs as loaded.

Reduced precision is no step here: fp16 autocast is the predictor's (GPU or `precision: fp16`);
its outputs are compared with the unoptimised model under the same autocast.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import fx, nn

TOLERANCE = {"fp32": 1e-4, "fp16": 5e-3}  # max |probability difference| to the unoptimised model

# torch.compile on CPU: ResNet-18 took about 37 s to compile on a quiet 2-core machine; a model is
# compiled up to three times (the check batch, full batches, then any other shape, dynamic).
COMPILE_SECONDS_GUESS = 60.0
COMPILE_PASSES = 3
COMPILE_GAIN_GUESS = 0.1  # fraction of forward time assumed saved (fold + channels-last first)
COMPILE_BUDGET_SHARE = 0.1  # never put more than this share of the time left into compiling

# The check runs a model's check batch up to this many times after its unoptimised pass (both
# steps at once; if that fails, each step alone), and may take at most this share of the time
# left before the deadline: the rest is the models' time to predict.
CHECK_PASSES = 3
CHECK_BUDGET_SHARE = 0.25

# run(model, channels_last) -> the model's (activated) outputs on the check batch, on the CPU.
Run = Callable[[nn.Module, bool], list[torch.Tensor]]


@dataclass
class Optimized:
    model: nn.Module
    channels_last: bool
    steps: list[str] = field(default_factory=list)  # the steps kept, in order
    notes: list[str] = field(default_factory=list)  # why each other step was left out
    max_difference: float = 0.0  # of the kept model to the unoptimised one, on the check batch

    def describe(self) -> str:
        kept = ", ".join(self.steps) if self.steps else "none (runs as loaded)"
        text = f"{kept}; max difference to unoptimised {self.max_difference:.1e}"
        return text + "".join(f"; {note}" for note in self.notes)


@dataclass(frozen=True)
class CompileBudget:
    """What `compile: auto` decides with: the images the model has left and the seconds left."""

    images_left: int
    seconds_left: float
    check_images: int  # images in the check batch (its time is measured per image)


def compile_pays_back(projected_seconds: float, seconds_left: float) -> bool:
    """Whether compiling a model whose remaining forward passes are projected to take
    `projected_seconds` is worth it: the conservatively guessed saving must exceed the guessed
    compile time, and that time must be a small share of what is left."""
    cost = COMPILE_SECONDS_GUESS * COMPILE_PASSES
    return projected_seconds * COMPILE_GAIN_GUESS > cost and \
        cost <= COMPILE_BUDGET_SHARE * seconds_left


def check_fits(reference_seconds: float, seconds_left: float) -> bool:
    """Whether checking a model whose unoptimised pass over the check batch took
    `reference_seconds` fits in its share of the `seconds_left` before the deadline; a model
    whose check does not fit runs as loaded."""
    return CHECK_PASSES * reference_seconds <= CHECK_BUDGET_SHARE * seconds_left


_CONV_OF_BATCHNORM = {nn.BatchNorm1d: nn.Conv1d, nn.BatchNorm2d: nn.Conv2d,
                      nn.BatchNorm3d: nn.Conv3d}


def fold_batchnorm(model: nn.Module) -> fx.GraphModule:
    """`model` traced by torch.fx, with each eval-mode BatchNorm that is the only user of a
    convolution's output folded into a new copy of that convolution; raises when the model
    cannot be traced. `model` is not changed: the result shares its other modules and weights
    (no copy of the whole model), and only the folded convolutions get new weights."""
    traced = fx.symbolic_trace(model)
    modules = dict(traced.named_modules())
    calls: dict[str, int] = {}
    for node in traced.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(traced.graph.nodes):
        batchnorm = modules.get(node.target) if node.op == "call_module" else None
        source = node.args[0] if node.args else None
        if (type(batchnorm) not in _CONV_OF_BATCHNORM or batchnorm.training
                or batchnorm.running_mean is None or not isinstance(source, fx.Node)
                or source.op != "call_module" or len(source.users) != 1
                or type(modules.get(source.target)) is not _CONV_OF_BATCHNORM[type(batchnorm)]
                or calls[source.target] != 1 or calls[node.target] != 1):
            continue  # folding here would change another use of the convolution or its output
        parent, _, name = source.target.rpartition(".")
        if parent and traced.get_submodule(parent) is model.get_submodule(parent):
            continue  # the trace shares this container with `model`: never change the original
        setattr(traced.get_submodule(parent), name,
                _folded(modules[source.target], batchnorm))
        node.replace_all_uses_with(source)
        traced.graph.erase_node(node)
    traced.recompile()
    traced.delete_all_unused_submodules()  # the folded BatchNorms (from the trace's containers)
    return traced


def _folded(conv: nn.Module, batchnorm: nn.Module) -> nn.Module:
    """A shallow copy of `conv` with `batchnorm` (eval mode) folded into new weights."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    # Plain tensors (not inference tensors), so the folded model also runs outside inference mode.
    with torch.inference_mode(False), torch.no_grad():
        weight, bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, batchnorm.running_mean, batchnorm.running_var,
            batchnorm.eps, batchnorm.weight, batchnorm.bias)
    folded = copy.copy(conv)
    folded._parameters = {**conv._parameters, "weight": weight, "bias": bias}
    return folded


def _layout(model: nn.Module, channels_last: bool) -> nn.Module:
    """`model` with its 4-D weights in NHWC (or back in NCHW: exact, the values do not change)."""
    return model.to(memory_format=torch.channels_last if channels_last
                    else torch.contiguous_format)


def _difference(reference: list[torch.Tensor], outputs: list[torch.Tensor]) -> float:
    if len(reference) != len(outputs) or any(r.shape != o.shape
                                             for r, o in zip(reference, outputs, strict=True)):
        return float("inf")
    return max((float((r.float() - o.float()).abs().max()) for r, o in
                zip(reference, outputs, strict=True) if r.numel()), default=0.0)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:160]}" if text else type(exc).__name__


def optimize_model(model: nn.Module, run: Run, tolerance: float,
                   compile_budget: CompileBudget | None = None,
                   reference: list[torch.Tensor] | None = None) -> Optimized:
    """Apply fold, channels-last and (with `compile_budget`) compile to `model`, each kept only
    when `run` on the result works and stays within `tolerance` of `reference` (default: `run`
    on `model` as given, whose errors are the caller's to report).

    `model` itself may be changed in place by the layout step; it is never left half-changed."""
    if reference is None:
        reference = run(model, False)
    best = Optimized(model, False)

    def attempt(steps: list[str], build: Callable[[], tuple[nn.Module, bool]],
                undo: Callable[[], None] = lambda: None) -> str | None:
        """Keep what `build` gives if it is equal; else undo and say why not."""
        try:
            candidate, channels_last = build()
            difference = _difference(reference, run(candidate, channels_last))
        except Exception as exc:  # any failure means: run without this step
            undo()
            return _reason(exc)
        if difference > tolerance:
            undo()
            return f"outputs differ by {difference:.1e} > {tolerance:g}"
        best.model, best.channels_last = candidate, channels_last
        best.max_difference = max(best.max_difference, difference)
        best.steps += steps
        return None

    # Most models take both steps, checked in one pass; otherwise one step at a time, so that
    # the model keeps what works and the log says which step was left out and why.
    both = attempt(["fold", "channels-last"], lambda: (_layout(fold_batchnorm(model), True), True),
                   undo=lambda: _layout(model, False))
    if both is not None:
        for step, build, undo in (
                ("fold", lambda: (fold_batchnorm(best.model), False), lambda: None),
                ("channels-last", lambda: (_layout(best.model, True), True),
                 lambda: _layout(best.model, False))):
            reason = attempt([step], build, undo)
            if reason is not None:
                best.notes.append(f"{step} left out ({reason})")
    if compile_budget is not None:
        _maybe_compile(best, run, attempt, compile_budget)
    return best


def _timed(run: Run, model: nn.Module, channels_last: bool) -> float:
    started = time.perf_counter()
    run(model, channels_last)
    return time.perf_counter() - started


def _maybe_compile(best: Optimized, run: Run, attempt: Callable, budget: CompileBudget) -> None:
    """torch.compile `best.model` when the projected remaining work pays the compile back, and
    keep it only when equal and measured faster on the check batch."""
    uncompiled = _timed(run, best.model, best.channels_last)
    projected = uncompiled / max(budget.check_images, 1) * budget.images_left
    if not compile_pays_back(projected, budget.seconds_left):
        best.notes.append(f"compile not tried (projected {projected:.0f} s of forward passes "
                          f"would not pay back about {COMPILE_SECONDS_GUESS * COMPILE_PASSES:.0f}"
                          " s of compiling)")
        return
    previous, channels_last = best.model, best.channels_last
    started = time.perf_counter()
    reason = attempt(["compile"], lambda: (torch.compile(previous), channels_last))
    if reason is not None:
        best.notes.append(f"compile left out ({reason})")
        return
    compile_seconds = time.perf_counter() - started
    compiled = _timed(run, best.model, channels_last)
    if compiled >= uncompiled:
        best.model, best.steps = previous, best.steps[:-1]
        best.notes.append(f"compile left out (compiled in {compile_seconds:.0f} s but not faster"
                          f" on the check batch: {compiled:.2f} s vs {uncompiled:.2f} s)")
        return
    best.notes.append(f"compiled in {compile_seconds:.0f} s, {uncompiled / compiled:.2f}x faster "
                      "on the check batch")
