"""What each exact optimisation gains on its own: forward passes of one model (random weights,
BatchNorm statistics as after training) on a batch already in memory, eager fp32 against the
runtime's steps (`inference_core.optimize`): BatchNorm folding, channels-last, both, and with
`--compile` also torch.compile on top (its compile time measured).

Variants are timed interleaved (a shared VM drifts), `repeats` rounds, the fastest kept; every
variant's outputs are compared with eager's (max absolute softmax difference).

    .venv/bin/python -m benchmarks.optimizations [--compile] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from torch import nn

from inference_core.model_factory import create_model
from inference_core.optimize import fold_batchnorm

# (arch, input size, images): two TTA views of `images` make one forward batch.
MODELS = [("torchvision.resnet18", 160, 32), ("se_resnext50_32x4d", 128, 16),
          ("torchvision.mobilenet_v3_small", 128, 32)]


def _trained_like(model: nn.Module) -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean \
                    is not None:
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
    return model.eval()


def _variants(model: nn.Module, compile_model: bool) -> dict[str, tuple[nn.Module, bool]]:
    folded = fold_batchnorm(model)
    both = fold_batchnorm(model).to(memory_format=torch.channels_last)
    variants = {"eager": (model, False), "fold": (folded, False),
                "channels_last": (_channels_last_copy(model), True),
                "fold_channels_last": (both, True)}
    if compile_model:
        variants["fold_channels_last_compile"] = (torch.compile(both), True)
    return variants


def _channels_last_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def measure_model(arch: str, size: int, images: int, repeats: int = 5,
                  compile_model: bool = False) -> dict:
    torch.manual_seed(0)
    model = _trained_like(create_model(arch, num_classes=10))
    batch = torch.rand(2 * images, 3, size, size)
    best: dict[str, float] = {}
    difference: dict[str, float] = {}
    first_call: dict[str, float] = {}
    with torch.inference_mode():
        variants = _variants(model, compile_model)
        reference = model(batch).softmax(1)
        for name, (candidate, channels_last) in variants.items():
            x = batch.contiguous(memory_format=torch.channels_last) if channels_last else batch
            started = time.perf_counter()
            out = candidate(x)  # warm-up (and, compiled, the compile itself)
            first_call[name] = round(time.perf_counter() - started, 2)
            difference[name] = float((out.softmax(1) - reference).abs().max())
        for _ in range(repeats):
            for name, (candidate, channels_last) in variants.items():
                x = batch.contiguous(memory_format=torch.channels_last) if channels_last \
                    else batch
                started = time.perf_counter()
                candidate(x)
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - started)
    return {"arch": arch, "input_size": size, "batch": 2 * images, "repeats": repeats,
            "seconds": {k: round(v, 3) for k, v in best.items()},
            "speedup": {k: round(best["eager"] / v, 2) for k, v in best.items()},
            "max_difference": {k: float(f"{v:.1e}") for k, v in difference.items()},
            "first_call_seconds": first_call}


def measure(repeats: int = 5, compile_model: bool = False) -> list[dict]:
    return [measure_model(arch, size, images, repeats, compile_model)
            for arch, size, images in MODELS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(measure(args.repeats, args.compile), indent=2))


if __name__ == "__main__":
    main()
