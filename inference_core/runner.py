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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm  # text, never a widget: a notebook run is read in its log

from .blend import BlendAccumulator
from .budget import DeadlineGuard, Deadlines, Unit, rank_units
from .checkpoint import load_checkpoint, model_from_checkpoint
from .config import EnsembleConfig
from .data import TestSet
from .discovery import (
    Discovery,
    FoundModel,
    check_missing,
    match_models,
    scan_input_roots,
)
from .errors import CheckpointError, DamagedFileError, KernelError
from .fallback import FallbackPrior
from .model_config import ModelConfig
from .predict import EnsemblePredictor, Member, PreparedBatch, prefetch
from .probe import PROBE_IMAGES, batch_bounds, plan_from_probe
from .startup import (
    KernelStart,
    Log,
    exit_code,
    make_log,
    out_of_time,
    start_kernel,
    start_submission,
)
from .submission import SubmissionWriter
from .versions import drift_warning


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


def load_members(config: EnsembleConfig, found: dict[str, FoundModel], key: bytes | None, log: Log,
                 deadlines: Deadlines | None = None) -> list[Member]:
    """Load the discovered models (each fold of a folds group apart, the group's weight split
    over the folds found) with a positive weight, in config order; `found` is keyed by label.

    With `deadlines`, a model whose loading (decryption included) is projected, from the bytes
    per second of the models loaded so far, to end past the planning deadline is left out with
    a log line: the time it would eat is the other models' time to predict."""
    default_activation = "sigmoid" if config.submission.format == "multilabel" else "softmax"
    members = []
    loaded_bytes, loading_seconds = 0, 0.0
    damaged: list[str] = []
    built_with = []  # (model, the versions its checkpoint recorded), for the drift warning
    for entry in config.members(present=set(found)):
        if entry.weight <= 0:
            continue
        location = found[entry.label]
        size = location.path.stat().st_size
        if deadlines is not None:
            estimate = size * loading_seconds / loaded_bytes if loaded_bytes else 0.0
            left = deadlines.left()
            if estimate >= left:
                log(f"deadline guard: {entry.label} left out; loading it would take about "
                    f"{estimate:.1f} s of the {max(left, 0):.1f} s left before the deadline")
                continue
        began = time.monotonic()
        try:
            checkpoint = load_checkpoint(location.path, location.relative, key=key)
        except DamagedFileError as exc:  # as an unreadable file is treated at discovery
            if entry.entry.required:
                raise
            log(f"WARNING {exc}; the optional model {entry.describe()} is left out")
            damaged.append(str(exc))
            continue
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
        built_with.append((entry.label, model_config.versions))
        log(f"loaded {entry.label} ({model_config.arch}, {model_config.num_classes} classes"
            f", {'decrypted in memory' if location.encrypted else 'plain'})")
        loaded_bytes += size
        loading_seconds += time.monotonic() - began
    if warning := drift_warning(built_with):
        log(warning)
    if damaged and not members:
        raise CheckpointError(f"no model could be loaded, every one is damaged (first: "
                              f"{damaged[0]})")
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


def load_ensemble(config: EnsembleConfig, discovery: Discovery, key: bytes | None, log: Log,
                  deadlines: Deadlines | None = None) -> Ensemble | None:
    """Load the discovered models onto their devices; None when `deadlines` left no time to
    load any (see `load_members`)."""
    loading = time.monotonic()
    members = load_members(config, discovery.matched, key, log, deadlines)
    if not members:
        log("deadline guard: no model could load in time")
        return None
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


def run_kernel(config: EnsembleConfig, working_dir: str | os.PathLike = ".", log: Log | None = None,
               progress: bool = True, key: bytes | None = None, started: float | None = None,
               test_set: TestSet | None = None) -> RunSummary:
    """Predict the test set with the ensemble, inside the budget, into `working_dir`.

    The budget counts from `started` (a `time.monotonic()` value; default: now). `test_set` is
    the one whose fallback submission is already written (`startup.start_kernel`); without it,
    the test set is found and its fallback submission written first. Start-up answers to the
    deadline: a model that cannot load in time is left out, a model whose optimise check does
    not fit runs as loaded, and when no model can run in time the fallback submission stands."""
    start = time.monotonic() if started is None else started
    log = log or make_log(start)
    budget = config.budget_seconds(os.environ)
    margin = config.budget.margin
    deadlines = Deadlines.from_budget(start, budget, margin)
    deadline, hard_stop = deadlines.plan, deadlines.hard_stop
    log(f"kernelpack runtime: torch {torch.__version__}, budget {budget:g} s "
        f"(plan within {budget * (1 - margin):.1f} s)")
    if test_set is None:
        test_set = start_submission(config, working_dir, log)
    target = Path(working_dir) / config.submission.file
    total = len(test_set)

    def fallback_stands() -> RunSummary:
        seconds = time.monotonic() - start
        log(f"kept the fallback submission {target} ({total} rows, all fallback) after "
            f"{seconds:.1f} s of a {budget:g} s budget")
        return RunSummary(target, total, [], seconds, fallback_rows=total)

    if out_of_time(deadlines, log, "the models were looked for"):
        return fallback_stands()
    discovery = discover(config, config.input_roots, log)
    ensemble = load_ensemble(config, discovery, key, log, deadlines)
    if ensemble is None or out_of_time(deadlines, log, "the first batch"):
        return fallback_stands()
    predictor, classes, ranked = ensemble.predictor, ensemble.classes, ensemble.units
    members = ensemble.members

    fallback = FallbackPrior(len(classes))
    guard: DeadlineGuard | None = None
    stopped = False
    added: list[str] = []
    # Outside a terminal (Kaggle's log viewer) one progress line every 30 s is plenty.
    interval = 1.0 if sys.stdout.isatty() else 30.0
    bar = tqdm(total=total, desc="predict", unit="img", file=sys.stdout, mininterval=interval,
               delay=interval, disable=not progress)
    warned: set[str] = set()  # members whose non-finite outputs were logged
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
            for name in predictor.newly_left_out(warned):
                log(f"WARNING model {name} gives NaN or infinite outputs; left out of the blend "
                    "for each image where it does")
            out.write(test_set.ids[begin:end], fallback.complete(accumulator))
            bar.update(end - begin)
            batch_start = time.perf_counter()
    bar.close()
    if summary := predictor.left_out_summary():
        log(f"WARNING {summary}")
    fallback_rows = fallback.rows
    seconds = time.monotonic() - start
    log(f"wrote {target} ({total} rows, {fallback_rows} fallback) in {seconds:.1f} s of a "
        f"{budget:g} s budget")
    dropped = tuple(u.label for u in ranked if guard is None or u not in guard.active)
    return RunSummary(target, total, [m.name for m in members], seconds, fallback_rows, dropped,
                      tuple(added), time.monotonic() - predicting)


def run_started(start: KernelStart, key: bytes | None = None) -> RunSummary:
    """Run the models of a kernel whose start (config, test ids, fallback submission) is done."""
    return run_kernel(start.config, key=key, started=start.started, log=start.log,
                      test_set=start.test_set)


def main(config: dict, key: bytes | None = None) -> int:
    """Kernel entry point: read the embedded config (plain JSON types), write the fallback
    submission, and run; a KernelError, a bad config's included, is one readable line and exit
    code 1."""
    return exit_code(lambda: run_started(start_kernel(config), key))
