"""The kernel's main loop: test set -> models -> batched TTA -> streaming blend -> submission.

Work is batch-major: each batch of test images is decoded once, prepared once per preprocessing
group, run through every model and blended at once, then written out; memory is one batch of
images plus the models, whatever the size of the test set.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .blend import BlendAccumulator
from .checkpoint import load_checkpoint, model_from_checkpoint
from .config import validate_config
from .data import Preprocess, TestSet, decode_image, find_input_root, resolve_test_set, to_tensor
from .errors import CheckpointError, KernelError
from .submission import SubmissionWriter
from .tta import run_tta

BUDGET_ENV = "KERNELPACK_BUDGET_SECONDS"

Log = Callable[[str], None]


@dataclass
class Member:
    """One model of the ensemble, loaded and ready."""

    name: str
    model: nn.Module
    preprocess: Preprocess
    weight: float
    threshold_shift: float
    tta: list[str]
    activation: str
    num_classes: int
    classes: list | None


@dataclass
class RunSummary:
    submission: Path
    rows: int
    members: list[str]
    seconds: float


def make_log(start: float, stream=sys.stdout) -> Log:
    """Lines stamped with the seconds since the kernel started, flushed for Kaggle's log viewer."""

    def log(message: str) -> None:
        print(f"[{time.monotonic() - start:8.1f}s] {message}", file=stream, flush=True)

    return log


def _activate(logits: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "softmax":
        return logits.float().softmax(dim=1)
    if activation == "sigmoid":
        return logits.float().sigmoid()
    return logits.float()


def load_members(config: dict, input_root: Path, device: torch.device, log: Log) -> list[Member]:
    default_activation = "sigmoid" if config["submission"]["format"] == "multilabel" else "softmax"
    members = []
    for i, entry in enumerate(config["models"]):
        path = input_root / (entry["path"] or "")
        if not entry["path"] or not path.is_file():
            raise CheckpointError(
                f"models[{i}] {entry['name']!r}: checkpoint {entry['path']} not found under "
                f"{input_root}; attach the dataset that holds it or fix models[{i}].path"
            )
        checkpoint = load_checkpoint(path)
        model_config = checkpoint["config"]
        stored_name = model_config.get("name")
        if stored_name not in (None, entry["name"]):
            raise CheckpointError(
                f"models[{i}] {entry['name']!r}: {entry['path']} holds model {stored_name!r}; "
                f"point models[{i}].path at the right file or rename the entry"
            )
        model = model_from_checkpoint(checkpoint, str(path)).to(device)
        members.append(Member(
            name=entry["name"],
            model=model,
            preprocess=Preprocess.from_checkpoint_config(model_config, str(path)),
            weight=entry["weight"],
            threshold_shift=entry["threshold_shift"],
            tta=entry["tta"] or config["tta"],
            activation=model_config.get("activation", default_activation),
            num_classes=checkpoint["num_classes"],
            classes=model_config.get("classes"),
        ))
        log(f"loaded {entry['name']} ({checkpoint['arch']}, {checkpoint['num_classes']} classes) "
            f"from {entry['path']}")
    widths = {m.num_classes for m in members}
    if len(widths) > 1:
        raise CheckpointError(
            "models disagree on the number of classes ("
            + ", ".join(f"{m.name}: {m.num_classes}" for m in members)
            + "); an ensemble must share one label space"
        )
    return members


def _classes(config: dict, members: list[Member]) -> list:
    num_classes = members[0].num_classes
    classes = config["submission"]["classes"] or members[0].classes or list(range(num_classes))
    if len(classes) != num_classes:
        raise KernelError(f"submission.classes has {len(classes)} labels but the models have "
                          f"{num_classes} outputs; list one label per output")
    return classes


def _predict_batch(images: list[np.ndarray], groups: dict[Preprocess, list[Member]],
                   accumulator: BlendAccumulator, device: torch.device) -> None:
    for preprocess, members in groups.items():
        tensors = [to_tensor(image, preprocess) for image in images]
        # keep_aspect gives several shapes: run each shape as its own sub-batch.
        rows = sorted(range(len(tensors)), key=lambda r: tuple(tensors[r].shape))
        for _, same_shape in groupby(rows, key=lambda r: tuple(tensors[r].shape)):
            index = np.array(list(same_shape))
            batch = torch.stack([tensors[r] for r in index]).to(device)
            for member in members:
                views = run_tta(member.model, batch, member.tta)
                for view in views:
                    probs = _activate(view, member.activation).cpu().numpy()
                    accumulator.add(probs, member.weight / len(views), rows=index,
                                    threshold_shift=member.threshold_shift)


def run_kernel(config: dict, working_dir: str | os.PathLike = ".", log: Log | None = None,
               progress: bool = True, key: bytes | None = None) -> RunSummary:
    """Predict the test set with the ensemble and write the submission into `working_dir`."""
    start = time.monotonic()
    log = log or make_log(start)
    config = validate_config(config)
    budget = float(os.environ.get(BUDGET_ENV, config["budget"]["seconds"]))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log(f"kernelpack runtime: torch {torch.__version__}, device {device}, budget {budget:.0f} s")

    input_root = find_input_root(config["input_roots"])
    test_set: TestSet = resolve_test_set(config["test"], input_root,
                                         config["submission"]["id_column"])
    log(f"test set: {len(test_set)} images in {input_root / config['test']['images']}")
    members = [m for m in load_members(config, input_root, device, log) if m.weight > 0]
    classes = _classes(config, members)
    groups: dict[Preprocess, list[Member]] = {}
    for member in members:
        groups.setdefault(member.preprocess, []).append(member)
    log(f"ensemble: {len(members)} models in {len(groups)} input groups, blend "
        f"{config['blend']}, tta {sorted({op for m in members for op in m.tta})}")

    target = Path(working_dir) / config["submission"]["file"]
    batch_size = config["batch_size"]
    # Outside a terminal (Kaggle's log viewer) one progress line every 30 s is plenty.
    bar = tqdm(total=len(test_set), desc="predict", unit="img", file=sys.stdout,
               mininterval=1.0 if sys.stdout.isatty() else 30.0, disable=not progress)
    with torch.inference_mode(), SubmissionWriter(target, config["submission"], classes) as out:
        for begin in range(0, len(test_set), batch_size):
            paths = test_set.paths[begin:begin + batch_size]
            accumulator = BlendAccumulator(len(paths), len(classes), config["blend"])
            _predict_batch([decode_image(p) for p in paths], groups, accumulator, device)
            out.write(test_set.ids[begin:begin + batch_size], accumulator.result())
            bar.update(len(paths))
    bar.close()
    seconds = time.monotonic() - start
    log(f"wrote {target} ({len(test_set)} rows) in {seconds:.1f} s of a {budget:.0f} s budget")
    return RunSummary(target, len(test_set), [m.name for m in members], seconds)


def main(config: dict, key: bytes | None = None) -> int:
    """Kernel entry point: run, and turn a KernelError into one readable line and exit code 1."""
    try:
        run_kernel(config, key=key)
    except KernelError as exc:
        print(f"kernel error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
