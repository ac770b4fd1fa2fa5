"""The ensemble config: one frozen schema (`EnsembleConfig` and its sections), each field declared
once with its check, default and hint, validated with messages naming the field.

The host (`kernelpack build`) reads the YAML with `EnsembleConfig.from_dict` and embeds
`to_json()` in `kernel.py`; the kernel reads it again with `from_json`, so a hand-edited kernel
fails just as clearly. Errors read like `models[2].weight: must be >= 0, got -0.1`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .fields import (
    auto_or,
    boolean,
    checked,
    choice,
    fail,
    fraction,
    inside_pattern,
    integer,
    list_of,
    number,
    optional,
    output_file,
    probability,
    read_schema,
    schema_of,
    sha256,
    shown,
    string,
    to_plain,
    unique_labels,
)

SUBMISSION_FORMATS = ("multiclass", "multilabel", "topk", "probabilities")
BLEND_MODES = ("mean", "gmean")
# How one model's TTA views are combined before the models are blended.
TTA_BLEND_MODES = ("mean", "gmean", "max")
# The TTA views `inference_core.tta` implements: named here, so that validating needs no torch,
# and its table of implementations is keyed by these names.
TTA_OP_NAMES = ("identity", "hflip", "vflip", "rot90", "rot180", "rot270", "transpose")
# Views with a parameter, written `op:F`: a crop keeping the fraction F of each side (0 < F < 1),
# resized back to the input size; `scale:F` resizes the whole input by F (0 < F <= 4).
TTA_CROP_OPS = ("center_crop", "crop_tl", "crop_tr", "crop_bl", "crop_br")
MAX_TTA_SCALE = 4.0
# Seeded random crops, the 2019 "random" TTA made reproducible: `random_crop:SxN` is N views of
# S x S pixels, written out as `random_crop:S#0` ... `random_crop:S#{N-1}` (view i's position is
# drawn from seed i; `inference_core.tta.random_crop_box`), each a view of its own for the plan.
# `random_crop_hflip:SxN` is torchvision's RandomCrop(S) then RandomHorizontalFlip(): the same
# crops, each mirrored or not by a third draw from its seed.
RANDOM_CROP = "random_crop"
RANDOM_CROP_HFLIP = "random_crop_hflip"
RANDOM_CROPS = (RANDOM_CROP, RANDOM_CROP_HFLIP)
MAX_RANDOM_CROPS = 64
MAX_RANDOM_CROP_SIZE = 4096
# How long a run may take before the kernel (`run-local --budget` overrides it).
BUDGET_ENV = "KERNELPACK_BUDGET_SECONDS"
KAGGLE_RUN_SECONDS = 9 * 3600
DEFAULT_INPUT_ROOTS = ("/kaggle/input", "../input")
# The kernel's output in its working folder, unless submission.file names another.
SUBMISSION_FILE = "submission.csv"
# Sanity bounds: beyond them a value is a typo, and would only exhaust memory or threads.
MAX_BATCH_SIZE = 65536
MAX_LOADER_THREADS = 64
MAX_COUNT = 1_000_000  # folds, label counts, k
MAX_CLASS_CHUNK = 1 << 24
# Classes a prototype member scores at a time (`inference_core.class_chunks`).
DEFAULT_CLASS_CHUNK = 8192
# A prototype head's distances and smallest temperature (`inference_core.prototypes`), named here
# so that the CLI checks them without torch. A cosine score is at most 1, so logits stay within
# 1e6 (float32 reaches 3e38); 1e-300 overflowed them into NaN.
PROTOTYPE_METRICS = ("cosine", "sqeuclidean")
MIN_PROTOTYPE_TEMPERATURE = 1e-6


def parse_tta_op(op: Any) -> tuple[str, float | tuple[int, int] | None]:
    """(kind, parameter) of a TTA op such as `hflip` or `center_crop:0.875`; raises ValueError
    saying what is wrong, for the caller to prefix with where the op came from. A random crop
    view `random_crop:S#i` gives (random_crop, (S, i)) (`random_crop_hflip` likewise);
    `random_crop:SxN`, N of them, is written out by `expand_tta_op` first."""
    allowed = ", ".join([*TTA_OP_NAMES, *(f"{kind}:F" for kind in TTA_CROP_OPS), "scale:F",
                         *(f"{kind}:SxN" for kind in RANDOM_CROPS)])
    kind, sep, text = op.partition(":") if isinstance(op, str) else (op, "", "")
    if kind in TTA_OP_NAMES and not sep:
        return kind, None
    if kind in RANDOM_CROPS:
        size, separator, index = text.partition("#")
        if separator and _whole(size, MAX_RANDOM_CROP_SIZE) and _whole(index, None, 0):
            return kind, (int(size), int(index))
        raise ValueError(f"{kind} needs a crop side in pixels and a view count, S x N "
                         f"(e.g. {kind}:288x4: 4 crops of 288 x 288, the same in every "
                         f"run), or one view S#i, got {shown(op)}")
    if kind not in (*TTA_CROP_OPS, "scale"):
        raise ValueError(f"must be one of {allowed}, got {shown(op)}")
    example = f"{kind}:1.15" if kind == "scale" else f"{kind}:0.875"
    try:
        parameter = float(text)
    except ValueError:
        parameter = None
    if kind == "scale":
        if parameter is None or not 0 < parameter <= MAX_TTA_SCALE:
            raise ValueError(f"{kind} needs a factor above 0 and at most {MAX_TTA_SCALE:g} "
                             f"(e.g. {example}), got {shown(op)}")
    elif parameter is None or not 0 < parameter < 1:
        raise ValueError(f"{kind} needs the fraction of each side to keep, above 0 and below 1 "
                         f"(e.g. {example}), got {shown(op)}")
    return kind, parameter


def _whole(text: str, maximum: int | None, minimum: int = 1) -> bool:
    """Whether `text` is a plain decimal integer within [minimum, maximum]."""
    return (text.isdigit() and text.isascii() and len(text) <= 9
            and minimum <= int(text) <= (maximum or int(text)))


def expand_tta_op(op: Any) -> list[str]:
    """The views one listed op stands for: `random_crop:SxN` is N views `random_crop:S#i`
    (`random_crop_hflip` likewise), any other op itself (checked by `parse_tta_op`); ValueError
    says what is wrong."""
    kind, _, text = op.partition(":") if isinstance(op, str) else (op, "", "")
    if kind in RANDOM_CROPS and "#" not in text:
        size, separator, count = text.partition("x")
        if not (separator and _whole(size, MAX_RANDOM_CROP_SIZE)
                and _whole(count, MAX_RANDOM_CROPS)):
            raise ValueError(f"{kind} needs a crop side in pixels (1-"
                             f"{MAX_RANDOM_CROP_SIZE}) and a view count (1-{MAX_RANDOM_CROPS}), "
                             f"S x N (e.g. {kind}:288x4: 4 crops of 288 x 288, the same "
                             f"in every run), got {shown(op)}")
        return [f"{kind}:{int(size)}#{i}" for i in range(int(count))]
    kind, parameter = parse_tta_op(op)
    if kind in RANDOM_CROPS:  # one view, written as the expanded ones are (024#1 is 24#1)
        return [f"{kind}:{parameter[0]}#{parameter[1]}"]
    return [op]


def _tta_list(value: Any, where: str) -> list[str]:
    """The views listed, `random_crop:SxN` written out as its N views (each one a view of its
    own for the budget's plan and the blend)."""
    def check(op: Any, where: str) -> list[str]:
        try:
            return expand_tta_op(op)
        except ValueError as exc:
            raise fail(where, str(exc)) from None

    listed = list_of(check)(value, where)
    ops = [view for views in listed for view in views]
    seen: set[str] = set()
    for j, views in enumerate(listed):
        for op in views:
            if op in seen:
                raise fail(f"{where}[{j}]", f"{op!r} is listed twice; list each view once")
            seen.add(op)
    return ops


def _threshold(value: Any, where: str) -> float | list[float]:
    if isinstance(value, list):
        return list_of(probability)(value, where)
    return probability(value, where)


def _shift(value: Any, where: str) -> float:
    checked = number()(value, where)
    if not -1.0 < checked < 1.0:
        raise fail(where, f"must be above -1 and below 1 (a shift of probabilities), got "
                          f"{shown(value)}")
    return checked


def _value(value: Any, where: str) -> float | list[float]:
    if isinstance(value, list):
        return list_of(number())(value, where)
    return number()(value, where)


@dataclass(frozen=True, kw_only=True)
class ModelEntry:
    """One entry of `models`: a model to find under the input roots, or a folds group."""

    # Identity: a model is found under the input roots by the name (and fold, and sha256 of the
    # plaintext checkpoint, when given) in its checkpoint config or .kpenc manifest.
    name: str = checked(string, hint="the model's name, as stored in its checkpoint config "
                                     "(e.g. small_cnn_f0)")
    fold: int | None = checked(optional(integer(0, MAX_COUNT)), default=None)
    # All folds of one model in one entry: one member per fold, the weight split evenly.
    folds: tuple[int, ...] | None = checked(optional(list_of(integer(0, MAX_COUNT))),
                                            default=None)
    sha256: str | None = checked(optional(sha256), default=None)
    # Optional hint: the file, relative to an input root; it must then hold this identity.
    path: str | None = checked(optional(string), default=None)
    # A required model that cannot be found stops the kernel; any other is skipped with a warning.
    required: bool = checked(boolean, default=False)
    weight: float = checked(number(0.0), default=1.0)
    # Subtracted from the model's probabilities before the blend, so within (-1, 1).
    threshold_shift: float = checked(_shift, default=0.0)
    tta: tuple[str, ...] | None = checked(optional(_tta_list), default=None)
    # What the blended OOF score loses without this model (written by `blend search`; the
    # budget planner keeps the most value per second): a number, or on a folds group one per
    # fold in the order of `folds` (a number there is split evenly, as the weight is).
    value: float | tuple[float, ...] | None = checked(optional(_value), default=None)


@dataclass(frozen=True, kw_only=True)
class TestSection:
    images: str = checked(string, hint="the folder of test images, relative to an input root "
                                       "(e.g. my-competition/test)")
    sample_submission: str | None = checked(optional(string), default=None)
    pattern: str = checked(inside_pattern, default="*.png")
    extension: str = checked(string, default=".png")

    __test__ = False  # not a pytest test class despite the name


@dataclass(frozen=True, kw_only=True)
class SubmissionSection:
    format: str = checked(choice(*SUBMISSION_FORMATS),
                          hint=f"one of {', '.join(SUBMISSION_FORMATS)}")
    id_column: str = checked(string, default="id")
    label_column: str = checked(string, default="label")
    classes: tuple[str | int, ...] | None = checked(optional(unique_labels), default=None)
    threshold: float | tuple[float, ...] = checked(_threshold, default=0.5)
    min_labels: int = checked(integer(0, MAX_COUNT), default=1)
    max_labels: int | None = checked(optional(integer(1, MAX_COUNT)), default=None)
    k: int = checked(integer(1, MAX_COUNT), default=5)  # topk: the k best labels, best first
    file: str = checked(output_file, default=SUBMISSION_FILE)

    def check_consistent(self) -> None:
        """The checks across fields, run where a config is read (a rule built in code, such as
        a search's candidate, may hold any combination)."""
        if self.max_labels is not None and self.max_labels < self.min_labels:
            raise fail("submission.max_labels", f"{self.max_labels} is below min_labels "
                                                f"{self.min_labels}; no row could satisfy both, "
                                                "raise max_labels or lower min_labels")
        if (isinstance(self.threshold, tuple) and self.classes is not None
                and len(self.threshold) != len(self.classes)):
            raise fail("submission.threshold", f"{len(self.threshold)} thresholds for "
                                               f"{len(self.classes)} classes; give one per "
                                               "class, in the order of classes")


@dataclass(frozen=True, kw_only=True)
class BudgetSection:
    seconds: float = checked(number(0.0, exclusive=True), default=float(KAGGLE_RUN_SECONDS))
    # Fraction of the budget kept in reserve for start-up, the last batch and writing the file.
    margin: float = checked(fraction, default=0.1)


def fold_member_name(name: str, fold: int) -> str:
    """How logs and discovery name one fold of a folds group (the `NAME_f<k>` convention)."""
    return f"{name}_f{fold}"


@dataclass(frozen=True)
class EnsembleMember:
    """One model to run: a plain entry, or one fold of a folds group (`label` NAME_f<k>)."""

    entry: ModelEntry
    index: int  # the entry's position in `models`
    label: str  # its name in logs and discovery: NAME, or NAME_f<k> for a fold of a group
    fold: int | None  # the fold it matches: a group's fold, or the entry's own `fold`
    weight: float  # its share of the blend
    value: float | None  # its own OOF value (`ModelEntry.value`)

    @property
    def group(self) -> str:
        """The entry's name: the folds group a fold belongs to, or the model itself."""
        return self.entry.name

    @property
    def group_fold(self) -> int | None:
        """The fold of a folds group this member is, None for a plain entry."""
        return self.fold if self.entry.folds is not None else None

    def describe(self) -> str:
        """The member as a message names it: NAME, or `NAME fold k` for a fold of a group."""
        return self.label if self.entry.folds is None else f"{self.group} fold {self.fold}"


def _members_of(index: int, entry: ModelEntry, present: set[str] | None
                ) -> list[EnsembleMember]:
    """The members of one entry, the entry's weight (and a single value) split over those
    present."""
    if entry.folds is None:
        folds = [(entry.name, entry.fold, entry.value)]
    else:
        folds = [(fold_member_name(entry.name, fold), fold,
                  entry.value[k] if isinstance(entry.value, tuple) else entry.value)
                 for k, fold in enumerate(entry.folds)]
    if present is not None:
        folds = [fold for fold in folds if fold[0] in present]
    split = entry.folds is not None and isinstance(entry.value, float)
    return [EnsembleMember(entry, index, member_label, fold, entry.weight / len(folds),
                           value / len(folds) if split else value)
            for member_label, fold, value in folds]


def _check_folds_group(model: ModelEntry, where: str) -> None:
    if model.folds is None:
        if isinstance(model.value, tuple):
            raise fail(f"{where}.value", "a list of values is for a folds group (one per "
                                          "fold); give this model one number")
        return
    if isinstance(model.value, tuple) and len(model.value) != len(model.folds):
        raise fail(f"{where}.value", f"{len(model.value)} values for "
                                      f"{len(model.folds)} folds; give one per fold, in the "
                                      "order of folds")
    for key in ("fold", "path", "sha256"):
        if getattr(model, key) is not None:
            raise fail(f"{where}.{key}", f"a folds group has one file per fold; drop {key} "
                                          "(each fold is found by name and fold)")
    for j, fold in enumerate(model.folds):
        if fold in model.folds[:j]:
            raise fail(f"{where}.folds[{j}]", f"fold {fold} is listed twice; list each fold once")


@dataclass(frozen=True, kw_only=True)
class EnsembleConfig:
    """The validated ensemble config: what the kernel runs and how. Build it with `from_dict`
    (or `from_json`), which also runs the checks across fields."""

    models: tuple[ModelEntry, ...] = checked(list_of(schema_of(ModelEntry)),
                                             hint="a list of models, each with a name and a path")
    test: TestSection = checked(schema_of(TestSection), hint="a section with test.images")
    submission: SubmissionSection = checked(schema_of(SubmissionSection),
                                            hint="a section with submission.format")
    blend: str = checked(choice(*BLEND_MODES), default="mean")
    # Combining one model's views; default: the blend mode (then every view counts as 1/n of
    # its model in the blend). `from_dict` fills it in, so a read config never holds None.
    tta_blend: str | None = checked(optional(choice(*TTA_BLEND_MODES)), default=None)
    tta: tuple[str, ...] = checked(_tta_list, default=("identity",))
    batch_size: int = checked(integer(1, MAX_BATCH_SIZE), default=32)
    # fp16 autocast and channels-last on GPU under "auto"; the CPU always runs fp32.
    precision: str = checked(choice("auto", "fp32", "fp16"), default="auto")
    # torch.compile per model: "auto" only where the projected remaining work pays back the
    # compile time (long test sets; see inference_core/optimize.py); "off" never.
    compile: str = checked(choice("auto", "off"), default="off")
    # Threads that decode and prepare the next batches while the models run (0: none). "auto":
    # 2 beside a GPU; none on a CPU, where the models already keep every core busy and a loader
    # thread only competes with them (measured: benchmarks/pipeline.py).
    loader_threads: int | str = checked(auto_or(integer(0, MAX_LOADER_THREADS)), default="auto")
    # Classes scored at a time for prototype members (Herbarium: 32,000 classes), so that no
    # images x classes score matrix is made per member; 0 scores every class at once.
    class_chunk: int = checked(integer(0, MAX_CLASS_CHUNK), default=DEFAULT_CLASS_CHUNK)
    budget: BudgetSection = checked(schema_of(BudgetSection), default=BudgetSection)
    input_roots: tuple[str, ...] = checked(list_of(string), default=DEFAULT_INPUT_ROOTS)

    @classmethod
    def from_dict(cls, raw: Any) -> EnsembleConfig:
        """The config with defaults filled in; raise ConfigError naming the first bad field."""
        config = read_schema(cls, raw, "")
        config.submission.check_consistent()
        taken: set[str] = set()
        for i, model in enumerate(config.models):
            _check_folds_group(model, f"models[{i}]")
            # A group takes its own name and its folds' names (NAME_f<k>).
            names = {model.name, *(member.label for member in _members_of(i, model, None))}
            clash = sorted(names & taken)
            if clash:
                raise fail(f"models[{i}].name", f"duplicate model name {clash[0]!r}; names must "
                                                 "be unique")
            taken |= names
        total = sum(model.weight for model in config.models)
        if total <= 0:
            raise fail("models", "all weights are 0; give at least one model a weight > 0")
        if not math.isfinite(total):
            raise fail("models", "the weights add up beyond any float; use relative weights "
                                  "such as 0.6 and 0.4")
        if config.tta_blend is None:
            config = dataclasses.replace(config, tta_blend=config.blend)
        return config

    @classmethod
    def from_json(cls, text: str) -> EnsembleConfig:
        """The config `to_json` wrote (the copy embedded in a kernel), checked again."""
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"config: not valid JSON ({exc})") from None
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (lists, not tuples): `from_dict(to_dict())` gives this config."""
        return to_plain(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def members(self, present: set[str] | None = None) -> list[EnsembleMember]:
        """One member per model to run: a plain entry as it is, a folds group one per fold.

        A group's weight is split evenly over its folds; with `present` (the labels found),
        only those members are returned and a group's weight is split over the folds present,
        so that a missing fold leaves the group's share of the blend unchanged. A fold's
        `value` is its own number from a group's list of values; a single number is split
        like the weight."""
        return [member for index, entry in enumerate(self.models)
                for member in _members_of(index, entry, present)]

    def budget_seconds(self, environ: Mapping[str, str]) -> float:
        """The run's budget: `BUDGET_ENV` when set (run-local --budget), else budget.seconds;
        the variable must hold a positive, finite number of seconds."""
        text = environ.get(BUDGET_ENV)
        if text is None:
            return self.budget.seconds
        try:
            seconds = float(text)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds > 0):
            raise ConfigError(f"{BUDGET_ENV}={text[:40]!r}: must be a positive, finite number "
                              "of seconds; unset it or fix it")
        return seconds
