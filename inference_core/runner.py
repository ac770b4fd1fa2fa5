"""The kernel's main loop: discover models -> plan the budget -> predict, blend, write.

Work is batch-major: each batch of test images is decoded once, prepared once per preprocessing
group, run through every planned model view and blended at once, then written out; memory is one
batch of images plus the models, whatever the size of the test set. The first batch is the probe:
it runs every view, and its timings plan the rest of the run (see `budget`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm  # text, never a widget: a notebook run is read in its log

from .blend import BlendAccumulator
from .budget import DeadlineGuard, Unit, rank_units
from .checkpoint import load_checkpoint, model_from_checkpoint
from .config import EnsembleConfig
from .data import (
    TestSet,
    find_input_root,
    resolve_test_set,
)
from .discovery import (
    Discovery,
    FoundModel,
    check_missing,
    match_models,
    scan_input_roots,
)
from .errors import CheckpointError, KernelError
from .fallback import FallbackPrior
from .model_config import ModelConfig
from .predict import EnsemblePredictor, Member, PreparedBatch, prefetch
from .probe import PROBE_IMAGES, batch_bounds, plan_from_probe
from .submission import SubmissionWriter

Log = Callable[[str], None]


@dataclass
class RunSummary:
    submission: Path
    rows: int
    members: list[str]
    seconds: float
    fallback_rows: int = 0
    dropped: tuple[str, ...] = ()  # model views left out at the end
    added: tuple[str, ...] = ()  # model views the deadline guard added back during the run
    predict_seconds: float = 0.0  # from the first batch to the written submission


def make_log(start: float, stream=sys.stdout) -> Log:
    """Lines stamped with the seconds since the kernel started, flushed for Kaggle's log viewer."""

    def log(message: str) -> None:
        print(f"[{time.monotonic() - start:8.1f}s] {message}", file=stream, flush=True)

    return log


def load_members(config: EnsembleConfig, found: dict[str, FoundModel], key: bytes | None, log: Log
                 ) -> list[Member]:
    """Load the discovered models (each fold of a folds group apart, the group's weight split
    over the folds found) with a positive weight, in config order; `found` is keyed by label."""
    default_activation = "sigmoid" if config.submission.format == "multilabel" else "softmax"
    members = []
    for entry in config.members(present=set(found)):
        if entry.weight <= 0:
            continue
        location = found[entry.label]
        checkpoint = load_checkpoint(location.path, location.relative, key=key)
        model_config = location.config or ModelConfig.from_checkpoint(checkpoint,
                                                                      location.relative)
        model = model_from_checkpoint(checkpoint, location.relative, model_config)
        members.append(Member(
            name=entry.label,
            model=model,
            preprocess=model_config.required_preprocess(location.relative),
            weight=entry.weight,
            threshold_shift=entry.entry.threshold_shift,
            tta=list(entry.entry.tta or config.tta),
            activation=model_config.activation or default_activation,
            num_classes=model_config.num_classes,
            classes=list(model_config.classes) if model_config.classes else None,
            group=entry.group,
            fold=entry.group_fold,
            value=entry.value,
        ))
        log(f"loaded {entry.label} ({model_config.arch}, {model_config.num_classes} classes"
            f", {'decrypted in memory' if location.encrypted else 'plain'})")
    widths = {m.num_classes for m in members}
    if len(widths) > 1:
        raise CheckpointError(
            "models disagree on the number of classes ("
            + ", ".join(f"{m.name}: {m.num_classes}" for m in members)
            + "); an ensemble must share one label space"
        )
    return members


def _classes(config: EnsembleConfig, members: list[Member]) -> list:
    num_classes = members[0].num_classes
    classes = list(config.submission.classes or members[0].classes or range(num_classes))
    if len(classes) != num_classes:
        raise KernelError(f"submission.classes has {len(classes)} labels but the models have "
                          f"{num_classes} outputs; list one label per output")
    return classes


def discover(config: EnsembleConfig, roots: Sequence[str], log: Log) -> Discovery:
    """Find the config's models under `roots`, log what was found, and stop on a missing
    required model (a missing optional one is logged and left out)."""
    found, unreadable = scan_input_roots(roots)
    discovery = match_models(config, found, unreadable)
    log(discovery.report())
    check_missing(discovery, config)
    for member in config.members():
        if member.label in discovery.missing:
            log(f"WARNING model {member.describe()} not found; blending without it")
    return discovery


@dataclass
class Ensemble:
    """The loaded members on their devices, the labels they predict, and their model views."""

    members: list[Member]
    predictor: EnsemblePredictor
    classes: list
    units: list[Unit]  # every model view, in the budget's priority order
    load_seconds: float


def load_ensemble(config: EnsembleConfig, discovery: Discovery, key: bytes | None, log: Log
                  ) -> Ensemble:
    loading = time.monotonic()
    members = load_members(config, discovery.matched, key, log)
    predictor = EnsemblePredictor(members, config.precision, tta_blend=config.tta_blend,
                                  compile_mode=config.compile, class_chunk=config.class_chunk)
    load_seconds = time.monotonic() - loading
    units = rank_units([(m.name, m.weight, m.tta, m.group, m.value) for m in members])
    log(f"ensemble: {len(members)} models, {len(units)} model views in "
        f"{len(predictor.groups)} input groups, TTA {config.tta_blend} then blend "
        f"{config.blend}, {predictor.describe()}")
    for preprocess, indices in predictor.groups.items():
        names = ", ".join(members[m].name for m in indices)
        log(f"input group [{names}]: {preprocess.describe()}")
    return Ensemble(members, predictor, _classes(config, members), units, load_seconds)


def prepared_batches(predictor: EnsemblePredictor, test_set: TestSet, config: EnsembleConfig,
                     first: int) -> Iterator[tuple[tuple[int, int], PreparedBatch]]:
    """((begin, end), prepared batch) over the test set: `first` images, then full batches,
    prepared ahead in the configured loader threads."""
    return prefetch(batch_bounds(len(test_set), config.batch_size, first),
                    lambda bounds: predictor.prepare(test_set.paths[bounds[0]:bounds[1]]),
                    predictor.loader_threads(config.loader_threads))


def process_age() -> float:
    """Seconds since this process started (Linux; 0 elsewhere): a kernel's budget also pays for
    interpreter start-up and `import torch`."""
    try:
        with open("/proc/self/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))  # field 22: start
    except (OSError, ValueError, IndexError):
        return 0.0


def run_kernel(config: EnsembleConfig, working_dir: str | os.PathLike = ".", log: Log | None = None,
               progress: bool = True, key: bytes | None = None, started: float | None = None
               ) -> RunSummary:
    """Predict the test set with the ensemble, inside the budget, into `working_dir`.

    The budget counts from `started` (a `time.monotonic()` value; default: now)."""
    start = time.monotonic() if started is None else started
    log = log or make_log(start)
    budget = config.budget_seconds(os.environ)
    margin = config.budget.margin
    deadline, hard_stop = start + budget * (1 - margin), start + budget * (1 - margin / 2)
    log(f"kernelpack runtime: torch {torch.__version__}, budget {budget:.0f} s "
        f"(plan within {budget * (1 - margin):.0f} s)")

    discovery = discover(config, config.input_roots, log)
    input_root = find_input_root(config.input_roots)
    test_set: TestSet = resolve_test_set(config.test, input_root, config.submission.id_column)
    log(f"test set: {len(test_set)} images in {input_root / config.test.images}")
    ensemble = load_ensemble(config, discovery, key, log)
    predictor, classes, ranked = ensemble.predictor, ensemble.classes, ensemble.units
    members = ensemble.members

    target = Path(working_dir) / config.submission.file
    total = len(test_set)
    fallback = FallbackPrior(len(classes))
    guard: DeadlineGuard | None = None
    stopped = False
    added: list[str] = []
    # Outside a terminal (Kaggle's log viewer) one progress line every 30 s is plenty.
    interval = 1.0 if sys.stdout.isatty() else 30.0
    bar = tqdm(total=total, desc="predict", unit="img", file=sys.stdout, mininterval=interval,
               delay=interval, disable=not progress)
    batches = prepared_batches(predictor, test_set, config, first=PROBE_IMAGES)
    log(f"first batch starts; {ensemble.load_seconds:.1f} s of the start-up went to loading "
        "weights")
    predicting = time.monotonic()
    with torch.inference_mode(), SubmissionWriter(target, config.submission, classes) as out:
        batch_start = time.perf_counter()
        for (begin, end), prepared in batches:
            accumulator = BlendAccumulator(end - begin, len(classes), config.blend)
            for message in prepared.errors:
                log(f"WARNING {message}; writing the fallback prediction for it")
            if guard is not None and not guard.can_run(end - begin):
                if not stopped:
                    log(f"deadline guard: out of time; fallback predictions for the last "
                        f"{total - begin} images")
                    stopped = True
            elif guard is None:
                guard = plan_from_probe(predictor, ranked, prepared, accumulator, deadline,
                                        hard_stop, total - end, log)
            elif prepared.decoded.size:
                predictor.predict(prepared, set(guard.active), accumulator)
                change = guard.after_batch(end - begin, time.perf_counter() - batch_start,
                                           total - end)
                if change.dropped:
                    log(f"deadline guard: projection slipped, dropping "
                        f"{', '.join(u.label for u in change.dropped)}")
                if change.added:
                    added += [u.label for u in change.added]
                    log(f"deadline guard: ahead of the projection, adding "
                        f"{', '.join(u.label for u in change.added)} for the last "
                        f"{total - end} images")
            out.write(test_set.ids[begin:end], fallback.complete(accumulator))
            bar.update(end - begin)
            batch_start = time.perf_counter()
    bar.close()
    fallback_rows = fallback.rows
    seconds = time.monotonic() - start
    log(f"wrote {target} ({total} rows, {fallback_rows} fallback) in {seconds:.1f} s of a "
        f"{budget:.0f} s budget")
    dropped = tuple(u.label for u in ranked if guard is None or u not in guard.active)
    return RunSummary(target, total, [m.name for m in members], seconds, fallback_rows, dropped,
                      tuple(added), time.monotonic() - predicting)


def main(config: dict, key: bytes | None = None) -> int:
    """Kernel entry point: read the embedded config (plain JSON types) and run; a KernelError,
    a bad config's included, is one readable line and exit code 1."""
    started = time.monotonic() - process_age()
    try:
        run_kernel(EnsembleConfig.from_dict(config), key=key, started=started)
    except KernelError as exc:
        print(f"kernel error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
