"""`kernelpack fanout`: `predict --per-model [--folds]` with Kaggle's kernels as the engine.

The host finds the rows and the checkpoints as `predict` does, plans the shards (`plan`), and
then, in one loop: pushes shard kernels while fewer than `max_running` run, follows them, and
downloads each finished one's output into the state folder once it checked out (`assemble`).
A shard that failed (its kernel's error, a kill, an output that did not check out) is pushed
again, at most `retries` more times in one run of the command. The state folder (`state`) keeps
what was pushed and what is verified: the same command run again follows the kernels still
running, skips the verified shards and pushes only the rest. When every shard is verified, the
files `predict` writes are assembled; with any shard missing, nothing is written.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..config import load_config
from ..errors import KaggleError, PredictError
from ..kernel.build import wheel_sources
from ..kernel.wheels import dataset_modules
from .assemble import OutputRejected, assemble, check_output
from .plan import MemberWork, Rows, Shard, plan_shards
from .shard_kernel import ShardKernels
from .sources import ShardSources
from .state import DONE, FAILED, RUNNING, FanoutState

LOG_TAIL_LINES = 12
_FINISHED_BADLY = {"ERROR", "CANCEL_ACKNOWLEDGED", "CANCEL_REQUESTED"}
POLL_ERRORS_BEFORE_GIVING_UP = 5  # status calls in a row that fail, for one kernel


@dataclass
class FanoutRequest:
    config: Path
    images: Path  # the images here, as for `predict --images`: the rows, their ids and order
    output: Path
    sample: Path | None = None
    models: Sequence[Path] = ()
    per_model: bool = False
    folds: Path | None = None
    kaggle_images: str | None = None  # where the kernel finds them; default: test.images
    code: Sequence[Path] = ()
    wheels: Sequence[Path] = ()  # wheel dataset folders (`kernelpack wheels`), as for build
    key: bytes | None = None
    rows_per_shard: int = 1000
    models_per_shard: int = 1
    top_k: int | None = None  # as predict --top-k: each row's k best classes, .npz files
    max_running: int = 2
    retries: int = 2
    state: Path | None = None  # default: OUTPUT's name + .fanout beside it
    kaggle_url: str | None = None
    poll_seconds: float = 10.0


@dataclass
class Failure:
    shard: str
    reason: str
    log_tail: str


@dataclass
class FanoutSummary:
    shards: int = 0
    skipped: int = 0  # verified before this run
    done: int = 0  # verified in this run
    pushed: int = 0  # kernel versions pushed in this run
    failed: list[Failure] = field(default_factory=list)  # gave up on, in this run
    retried: int = 0  # attempts that failed and were pushed again
    run_seconds: float = 0.0  # the shard kernels' own time, done in this run
    session_seconds: float = 0.0  # push to checked output, summed: what sessions cost at most
    wall_seconds: float = 0.0
    written: list[Path] = field(default_factory=list)
    quota: str = "not reported by the service (see Kaggle's settings page for GPU hours left)"


def _rows(config, images: Path, sample: Path | None) -> Rows:
    from ..weights.predict import host_test_set  # predict's own rows, in its order

    test_set = host_test_set(config, images, sample)
    files = [path.relative_to(test_set.folder).as_posix() for path in test_set.paths]
    return Rows(tuple(test_set.ids), tuple(files),
                tuple(path.stat().st_size for path in test_set.paths))


def _discover(config, model_roots: Sequence[Path], log: Callable[[str], None]):
    from ..weights.predict import discover_models

    return discover_models(config, model_roots, log)


def _members(config, discovery) -> list[MemberWork]:
    return [MemberWork(member.label, member.group, member.group_fold, member.weight,
                       discovery.matched[member.label].sha256)
            for member in config.members(present=set(discovery.matched)) if member.weight > 0]


def _tail(text: str) -> str:
    return "\n".join(text.rstrip().splitlines()[-LOG_TAIL_LINES:])


class _Fanout:
    """The push / follow / verify loop over one plan."""

    def __init__(self, request: FanoutRequest, shards: list[Shard], rows: Rows,
                 kernels: ShardKernels, session, state: FanoutState,
                 log: Callable[[str], None], progress: bool) -> None:
        self.request, self.rows, self.kernels = request, rows, kernels
        self.session, self.state, self.log = session, state, log
        self.shards = {shard.name: shard for shard in shards}
        self.summary = FanoutSummary(shards=len(shards))
        self.tries: dict[str, int] = {}  # attempts in this run
        self.poll_errors: dict[str, int] = {}
        self.pending: list[str] = []
        self.running: list[str] = []
        for name in self.shards:
            record = self.state.records.get(name)
            if self._verified(name):
                self.summary.skipped += 1
            elif record and record.status == RUNNING and record.kernel == kernels.ref(
                    self.shards[name]):
                self.running.append(name)   # pushed by an earlier run: follow it
            else:
                self.pending.append(name)
        self.bar = tqdm(total=len(shards), initial=self.summary.skipped, desc="fanout",
                        unit="shard", file=sys.stderr, disable=not progress)

    def _verified(self, name: str) -> bool:
        folder = self.state.shard_folder(name)
        if not folder.is_dir():
            return False
        try:
            check_output(folder, self.shards[name], self.rows)
        except OutputRejected as exc:
            self.log(f"{name}: the verified copy here no longer checks out ({exc}); it runs "
                     "again")
            self.state.discard(name)
            return False
        return True

    def run(self) -> FanoutSummary:
        try:
            while self.pending or self.running:
                while self.pending and len(self.running) < self.request.max_running:
                    self._push(self.pending.pop(0))
                if self.running:
                    time.sleep(self.session.poll_seconds)
                    for name in list(self.running):
                        self._follow(name)
        finally:
            self.state.save()
            self.bar.close()
        return self.summary

    def _push(self, name: str) -> None:
        shard = self.shards[name]
        record = self.state.record(name)
        self.tries[name] = self.tries.get(name, 0) + 1
        record.attempts += 1
        folder = self.state.folder / "kernels" / name
        try:
            self.kernels.write(shard, shard.spec(self.rows, self.request.kaggle_images), folder)
            push = self.session.push_kernel(folder)
        except KaggleError as exc:
            self._failed(name, f"push refused: {exc}", "")
            return
        record.kernel, record.version, record.status = push.ref, push.version, RUNNING
        record.failure = record.log_tail = ""
        record.pushed_at = time.time()
        self.summary.pushed += 1
        self.running.append(name)
        self.state.save()
        self.log(f"pushed {shard.describe()} as {push.ref} version {push.version}")

    def _follow(self, name: str) -> None:
        record = self.state.record(name)
        try:
            status, failure = self.session.kernel_status(record.kernel)
        except KaggleError as exc:
            self.poll_errors[name] = self.poll_errors.get(name, 0) + 1
            if self.poll_errors[name] >= POLL_ERRORS_BEFORE_GIVING_UP:
                self.running.remove(name)
                self._failed(name, f"its status could not be read: {exc}", "")
            return
        self.poll_errors[name] = 0
        if status == "COMPLETE":
            self.running.remove(name)
            self._collect(name)
        elif status in _FINISHED_BADLY:
            self.running.remove(name)
            self._failed(name, f"the kernel ended {status}: {failure}", self._log_tail(name))

    def _log_tail(self, name: str) -> str:
        try:
            return _tail(self.session.kernel_logs(self.state.record(name).kernel))
        except KaggleError as exc:
            return f"(the log could not be read: {exc})"

    def _collect(self, name: str) -> None:
        shard, record = self.shards[name], self.state.record(name)
        incoming = self.state.incoming(name)
        try:
            self.session.kernel_output(record.kernel, incoming)
            manifest = check_output(incoming, shard, self.rows)
        except (KaggleError, OutputRejected) as exc:
            self._failed(name, f"its output was refused: {exc}", self._log_tail(name))
            return
        self.state.commit(name, incoming)
        record.status, record.failure, record.log_tail = DONE, "", ""
        record.run_seconds = float(manifest.get("seconds") or 0.0)
        record.session_seconds = time.time() - record.pushed_at
        self.summary.done += 1
        self.summary.run_seconds += record.run_seconds
        self.summary.session_seconds += record.session_seconds
        self.state.save()
        self.bar.update(1)
        self.log(f"verified {shard.describe()} ({record.run_seconds:.1f} s in its kernel)")

    def _failed(self, name: str, reason: str, log_tail: str) -> None:
        record = self.state.record(name)
        record.status, record.failure, record.log_tail = FAILED, reason, log_tail
        self.state.save()
        if self.tries.get(name, 0) <= self.request.retries:
            self.summary.retried += 1
            self.log(f"{name} failed ({reason}); pushing it again")
            self.pending.append(name)
        else:
            self.summary.failed.append(Failure(self.shards[name].describe(), reason, log_tail))
            self.log(f"{name} failed ({reason}); giving up after {self.tries[name]} attempts")


def run_fanout(request: FanoutRequest, log: Callable[[str], None] = print,
               progress: bool = True) -> FanoutSummary:
    """Plan, run and assemble the fan-out of `request`; the summary. The files `predict` writes
    are written only when every shard is verified (`summary.written`)."""
    from ..kaggle.session import KaggleSession
    from ..weights.predict import check_fold_coverage, check_prediction_outputs

    began = time.monotonic()
    for name, value in (("--max-running", request.max_running),
                        ("--rows-per-shard", request.rows_per_shard),
                        ("--models-per-shard", request.models_per_shard)):
        if value < 1:
            raise PredictError(f"{name} {value}: must be 1 or more")
    if request.retries < 0:
        raise PredictError(f"--retries {request.retries}: must be 0 or more")
    if request.top_k is not None and request.output.suffix != ".npz":
        raise PredictError(f"-o {request.output}: --top-k writes top-k .npz files (indices, "
                           "probabilities, num_classes), as predict does; name the output "
                           "PREDS.npz")
    if request.top_k is None and request.output.suffix == ".npz":
        raise PredictError(f"-o {request.output}: a .npz output is predict's top-k form; add "
                           "--top-k K, or name the output PREDS.npy")
    host = load_config(request.config)
    host = dataclasses.replace(host, kernel=wheel_sources(host.kernel, request.wheels))
    from_wheels = [name for folder in request.wheels for name in dataset_modules(folder)]
    config = host.ensemble
    groups = [entry.name for entry in config.models] \
        if request.per_model or request.folds is not None else None
    check_prediction_outputs(request.output, groups, [request.config, request.sample,
                                                      request.folds])
    request = dataclasses.replace(request, kaggle_images=request.kaggle_images
                                  or config.test.images)
    rows = _rows(config, Path(request.images), request.sample)
    discovery = _discover(config, request.models, log)
    members = _members(config, discovery)
    folds = None
    if request.folds is not None:
        from ..search.oof import read_folds

        folds = read_folds(Path(request.folds), len(rows))
        check_fold_coverage(members, folds, rows.ids)
    session = KaggleSession(request.kaggle_url, poll_seconds=request.poll_seconds)
    sources = ShardSources.locate(host.kernel, {m.label: discovery.matched[m.label]
                                                for m in members},
                                  [request.kaggle_images, config.test.sample_submission])
    log(sources.describe())
    kernels = ShardKernels(host, Path(request.config), request.code, request.key,
                           session.username, sources, from_wheels)
    shards = plan_shards(members, rows, folds, config=config.to_dict(),
                         code_digest=kernels.code_digest, images=request.kaggle_images,
                         rows_per_shard=request.rows_per_shard,
                         models_per_shard=request.models_per_shard,
                         top_k=request.top_k)
    state = FanoutState.open(request.state or default_state(request.output))
    log(f"fanout: {len(rows)} rows x {len(members)} models in {len(shards)} shards, at most "
        f"{request.max_running} running; state in {state.folder}")
    if request.top_k and not shards[0].top_k:
        log(f"--top-k: the shards send every class (a shard holds {request.models_per_shard} of "
            f"the {len(members)} models), reduced here: this machine holds rows x classes per "
            f"model; --models-per-shard {len(members)} reduces in the shards")
    summary = _Fanout(request, shards, rows, kernels, session, state, log, progress).run()
    if not summary.failed:
        summary.written = assemble([(s, state.shard_folder(s.name)) for s in shards], members,
                                   rows, mode=config.blend, folds=folds,
                                   per_model=request.per_model, output=request.output, log=log,
                                   top_k=request.top_k)
    summary.wall_seconds = time.monotonic() - began
    return summary


def default_state(output: Path) -> Path:
    """Where a fan-out keeps its state without --state: `PREDS.fanout/` beside PREDS.npy."""
    return output.with_name(f"{output.stem}.fanout")
