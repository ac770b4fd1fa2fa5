"""Running the ensemble on batches: devices, precision, input groups, TTA, and a loader that
decodes and prepares the next batches while the models run.

Models are spread round-robin over every visible GPU (Kaggle's T4 x2), run in fp16 autocast
there, and on the CPU in fp32. Before the probe batch is timed, `optimize` makes each model
faster by exact steps (BatchNorm folding, channels-last; see `optimize`), each checked on real
test images against the model's own unoptimised outputs. Each image is decoded once per decoder
and prepared once per input group (models with equal `Preprocess` settings); each model runs its TTA
views in one pass per view shape, and its views are combined (`tta_blend`) before the models are
blended. All models of a batch are launched before any result is copied back, so models on
different GPUs overlap. A prototype member (`embed` + `class_scores`) runs its views to
embeddings, which are scored and blended in class chunks (`class_chunks`) with the other
results, or at once when members are timed (the probe: its scoring is most of its cost).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .blend import BlendAccumulator, combine_views
from .budget import Unit
from .class_chunks import Embedder, chunk_probabilities, scores_in_chunks
from .config import DEFAULT_CLASS_CHUNK
from .decode import decode_image
from .errors import KernelError, TestSetError
from .optimize import CHECK_PASSES, TOLERANCE, CompileBudget, check_fits, optimize_model
from .preprocess import Decoder, Preprocess
from .transforms import to_tensor
from .tta import run_tta


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
    group: str = ""  # the config entry it comes from: its name (a folds group's, for a fold)
    fold: int | None = None  # its fold, when the entry is a folds group
    value: float | None = None  # its recorded OOF value (`budget` plans with it)


@dataclass
class PreparedBatch:
    """A batch after the loader: tensors per input group for the images that decoded."""

    decoded: np.ndarray  # positions in the batch of the images that decoded
    tensors: dict[Preprocess, list[torch.Tensor]]
    errors: list[str]  # one message per image that did not decode
    seconds: float  # time spent decoding and preparing (in a loader thread)

    def part(self, start: int, stop: int) -> PreparedBatch:
        """The decoded images `start:stop` (in decoded order) as a batch of their own."""
        return PreparedBatch(self.decoded[start:stop],
                             {p: t[start:stop] for p, t in self.tensors.items()}, [], 0.0)


def same_shape_batches(tensors: list[torch.Tensor]) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(rows, stacked batch) per input shape: keep_aspect gives several shapes."""
    order = sorted(range(len(tensors)), key=lambda r: tuple(tensors[r].shape))
    for _, same_shape in groupby(order, key=lambda r: tuple(tensors[r].shape)):
        rows = np.array(list(same_shape))
        yield rows, torch.stack([tensors[r] for r in rows])


def visible_devices() -> list[torch.device]:
    if torch.cuda.is_available():
        return [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    return [torch.device("cpu")]


def activate(logits: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "softmax":
        return logits.float().softmax(dim=1)
    if activation == "sigmoid":
        return logits.float().sigmoid()
    return logits.float()


class EnsemblePredictor:
    """Places the members on devices and runs the active units on prepared batches."""

    def __init__(self, members: list[Member], precision: str = "auto",
                 devices: list[torch.device] | None = None, tta_blend: str = "mean",
                 compile_mode: str = "off", class_chunk: int = DEFAULT_CLASS_CHUNK) -> None:
        self.members = members
        self.tta_blend = tta_blend  # how each model's views are combined (`combine_views`)
        self.devices = devices or visible_devices()
        self.placement = [self.devices[i % len(self.devices)] for i in range(len(members))]
        self.fp16 = precision == "fp16" or (precision == "auto" and self.devices[0].type == "cuda")
        self.compile_mode = compile_mode  # "auto": `optimize` may compile what pays back
        self.channels_last = [False] * len(members)  # per member, set by `optimize`
        # Classes scored at a time for prototype members (0: every class at once, as a plain
        # classifier); such a member's TTA views run its embedding, not its forward.
        self.class_chunk = class_chunk
        self.chunked = [class_chunk > 0 and scores_in_chunks(m.model) for m in members]
        # What each member's views run: its model, or its embedding (replaced by `optimize`).
        self.runs: list[nn.Module] = [Embedder(m.model) if chunked else m.model
                                      for m, chunked in zip(members, self.chunked, strict=True)]
        self.groups: dict[Preprocess, list[int]] = {}
        # Images whose probabilities (or embedding) came out NaN or infinite, per member name:
        # left out of the blend for that member (`newly_left_out`, `left_out_summary`).
        self.left_out: dict[str, int] = {}
        for index, member in enumerate(members):
            self.groups.setdefault(member.preprocess, []).append(index)
            member.model.to(self.placement[index])

    def loader_threads(self, setting: int | str) -> int:
        """The configured number, or for "auto": 2 beside a GPU, 0 on a CPU."""
        if setting != "auto":
            return int(setting)
        return 2 if self.devices[0].type == "cuda" else 0

    def describe(self) -> str:
        names = sorted({str(d) for d in self.placement})
        return f"devices {', '.join(names)}, {'fp16 autocast' if self.fp16 else 'fp32'}"

    def prepare(self, paths: list[Path]) -> PreparedBatch:
        """Decode each image once per decoder and prepare it once per input group (runs in
        loader threads). An image that any decoder cannot read is left out for every group."""
        started = time.perf_counter()
        decoders = list(dict.fromkeys(p.decoder for p in self.groups))
        images: dict[Decoder, list[np.ndarray]] = {d: [] for d in decoders}
        decoded, errors = [], []
        for position, path in enumerate(paths):
            try:
                arrays = [decode_image(path, *decoder) for decoder in decoders]
            except TestSetError as exc:
                errors.append(str(exc))
                continue
            for decoder, array in zip(decoders, arrays, strict=True):
                images[decoder].append(array)
            decoded.append(position)
        tensors = {p: [to_tensor(image, p) for image in images[p.decoder]] for p in self.groups}
        return PreparedBatch(np.array(decoded, dtype=int), tensors, errors,
                             time.perf_counter() - started)

    @staticmethod
    def _to_device(batch: torch.Tensor, device: torch.device, channels_last: bool
                   ) -> torch.Tensor:
        if device.type == "cuda":
            batch = batch.pin_memory().to(device, non_blocking=True)
        return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch

    def _views(self, m: int, batch: torch.Tensor, ops: list[str],
               model: nn.Module | None = None) -> list[torch.Tensor]:
        """Member `m`'s TTA views of `batch` (already on its device), under its precision; by
        its own model (a failure is one KernelError line), or by `model` (errors as raised)."""
        device = self.placement[m]
        with torch.autocast(device.type, dtype=torch.float16,
                            enabled=self.fp16 and device.type == "cuda"):
            return self._forward(m, batch, ops) if model is None else run_tta(model, batch, ops)

    def _forward(self, m: int, batch: torch.Tensor, ops: list[str]) -> list[torch.Tensor]:
        try:
            return run_tta(self.runs[m], batch, ops)
        except RuntimeError as exc:
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            raise KernelError(
                f"model {self.members[m].name}: forward pass failed on TTA views {', '.join(ops)}"
                f" of a {tuple(batch.shape)} batch ({first}); a model that needs a fixed input "
                "size cannot take scale:F views: drop them from its tta") from None

    @torch.inference_mode()
    def optimize(self, check: PreparedBatch, log: Callable[[str], None],
                 images_left: int = 0, seconds_left: float = 0.0,
                 accumulator: BlendAccumulator | None = None,
                 deadline: float | None = None) -> None:
        """Make each member faster by the exact steps of `optimize_model`, checked on `check`
        (real test images, every TTA view of the member) against its unoptimised outputs, one
        model at a time. Run before the probe is timed, so that the budget plans with the
        optimised costs; the check also warms the optimised model up. With `accumulator`, the
        unoptimised outputs (every view) are blended into it: they are `check`'s predictions.
        With `compile: auto`, `images_left` and `seconds_left` decide if compiling pays back.
        With `deadline` (a `time.monotonic()` value), a member whose check would eat too much of
        the time left runs as loaded (see `optimize.check_fits`)."""
        for m, member in enumerate(self.members):
            tensors = check.tensors.get(member.preprocess, [])
            if not tensors:
                log(f"optimise {member.name}: no decoded image to check on; runs as loaded")
                continue
            device = self.placement[m]
            batches = list(same_shape_batches(tensors))

            def run(model: nn.Module | None, channels_last: bool, m: int = m, device=device,
                    batches=batches) -> list[torch.Tensor]:
                return [self._output(m, view).cpu() for _, batch in batches
                        for view in self._views(m, self._to_device(batch, device, channels_last),
                                                self.members[m].tta, model)]

            started = time.perf_counter()
            reference = run(None, False)
            reference_seconds = time.perf_counter() - started
            if accumulator is not None:
                views = len(member.tta)  # run_tta gives one output per view, in order
                self._add([(m, check.decoded[rows], reference[i * views:(i + 1) * views])
                           for i, (rows, _) in enumerate(batches)], accumulator)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and not check_fits(reference_seconds, left):
                log(f"optimise {member.name}: skipped, the check would take about "
                    f"{CHECK_PASSES * reference_seconds:.1f} s of the {max(left, 0):.1f} s left "
                    "before the deadline; runs as loaded")
                continue
            budget = (CompileBudget(images_left, seconds_left, len(tensors))
                      if self.compile_mode == "auto" else None)
            tolerance = TOLERANCE["fp16" if self.fp16 and device.type == "cuda" else "fp32"]
            result = optimize_model(self.runs[m], run, tolerance, budget, reference)
            self.runs[m], self.channels_last[m] = result.model, result.channels_last
            if not self.chunked[m]:
                member.model = result.model
            log(f"optimise {member.name}: {result.describe()}")

    @torch.inference_mode()
    def predict(self, prepared: PreparedBatch, active: set[Unit], accumulator: BlendAccumulator,
                timings: dict[int, float] | None = None,
                per_member: dict[int, np.ndarray] | None = None) -> None:
        """Add each member's probabilities for the decoded rows of `prepared` to `accumulator`:
        its active views combined by `tta_blend` (after its threshold shift), at its weight.

        With `timings`, each member's time is measured (devices synchronised after each). With
        `per_member` (member index -> rows x classes array of the batch), each member's views,
        combined without its shift, are also written into its rows there."""
        active_ops = {(unit.member, unit.op) for unit in active}
        ops_of = {m: [op for op in member.tta if (m, op) in active_ops]
                  for m, member in enumerate(self.members)}
        pending: list[tuple[int, np.ndarray, list[torch.Tensor]]] = []
        for preprocess, indices in self.groups.items():
            indices = [m for m in indices if ops_of[m]]
            tensors = prepared.tensors[preprocess]
            if not indices or not tensors:
                continue
            for index, batch in same_shape_batches(tensors):
                on_device: dict[tuple[torch.device, bool], torch.Tensor] = {}
                for m in indices:
                    device, started = self.placement[m], time.perf_counter()
                    layout = (device, self.channels_last[m])
                    if layout not in on_device:
                        on_device[layout] = self._to_device(batch, *layout)
                    views = [self._output(m, view)
                             for view in self._views(m, on_device[layout], ops_of[m])]
                    work = (m, prepared.decoded[index], views)
                    if self.chunked[m] and timings is not None:
                        # Timed (the probe): its class scoring is most of its work.
                        self._add([work], accumulator, per_member)
                    else:
                        pending.append(work)
                    if timings is not None:
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        timings[m] = timings.get(m, 0.0) + time.perf_counter() - started
        # Copy back only now: the GPUs have all their work queued and run side by side.
        self._add(pending, accumulator, per_member)

    def _output(self, m: int, view: torch.Tensor) -> torch.Tensor:
        """A view's output as blended: activated class scores, or a chunked member's embedding
        (activated per class chunk in `_add`)."""
        return view.float() if self.chunked[m] else activate(view, self.members[m].activation)

    def _add(self, pending: list[tuple[int, np.ndarray, list[torch.Tensor]]],
             accumulator: BlendAccumulator, per_member: dict[int, np.ndarray] | None = None
             ) -> None:
        """Blend each (member, rows, views): its views combined (after its threshold shift)."""
        for m, rows, views in pending:
            member = self.members[m]
            if self.chunked[m]:
                finite = torch.stack([v.isfinite().all(dim=1) for v in views]).all(dim=0).cpu()
                kept = self._finite(m, rows, finite.numpy())
                if per_member is not None:
                    per_member[m][rows] = np.nan  # what `predict` refuses to write, if left
                if kept.size:
                    index = torch.as_tensor(kept, device=views[0].device)
                    self._add_in_chunks(m, rows[kept], [v[index] for v in views], accumulator,
                                        per_member)
                continue
            probs = [view.cpu().numpy() for view in views]
            blended = combine_views(probs, self.tta_blend, member.threshold_shift)
            kept = self._finite(m, rows, np.isfinite(blended).all(axis=1))
            accumulator.add(blended[kept], member.weight, rows=rows[kept])
            if per_member is not None:
                per_member[m][rows] = combine_views(probs, self.tta_blend)

    def _finite(self, m: int, rows: np.ndarray, finite: np.ndarray) -> np.ndarray:
        """The positions of `rows` whose outputs are finite; the others are counted as left out.
        A NaN weight or an overflow would otherwise turn the whole blend of those rows into NaN
        and every label into the first class."""
        if not finite.all():
            name = self.members[m].name
            self.left_out[name] = self.left_out.get(name, 0) + int((~finite).sum())
        return np.flatnonzero(finite)

    def newly_left_out(self, reported: set[str]) -> list[str]:
        """Members left out of the blend for some image (see `_finite`) that are not in
        `reported` yet; they are added to it, so that a log names each member once."""
        new = [name for name in self.left_out if name not in reported]
        reported.update(new)
        return new

    def left_out_summary(self) -> str | None:
        """One line for the end of the run: each member and its images left out, if any."""
        if not self.left_out:
            return None
        return "left out of the blend for non-finite outputs: " + ", ".join(
            f"{name} ({images} images)" for name, images in self.left_out.items())

    def _add_in_chunks(self, m: int, rows: np.ndarray, embeddings: list[torch.Tensor],
                       accumulator: BlendAccumulator, per_member: dict[int, np.ndarray] | None
                       ) -> None:
        """A prototype member's views (embeddings), blended one class chunk at a time."""
        member = self.members[m]
        for columns, outputs in chunk_probabilities(member.model, embeddings, member.activation,
                                                    self.class_chunk):
            probs = [output.cpu().numpy() for output in outputs]
            accumulator.add_columns(combine_views(probs, self.tta_blend, member.threshold_shift),
                                    member.weight, rows, columns)
            if per_member is not None:
                per_member[m][rows, columns] = combine_views(probs, self.tta_blend)
        accumulator.count(member.weight, rows)


def prefetch(items: Iterable, work: Callable, threads: int) -> Iterator[tuple]:
    """(item, work(item)) in order, with up to `threads` items worked on ahead in threads;
    `threads=0` works in the calling thread."""
    if threads <= 0:
        for item in items:
            yield item, work(item)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="loader") as pool:
        queue: deque = deque()
        iterator = iter(items)
        for item in iterator:
            queue.append((item, pool.submit(work, item)))
            if len(queue) > threads:
                done, future = queue.popleft()
                yield done, future.result()
        while queue:
            done, future = queue.popleft()
            yield done, future.result()
