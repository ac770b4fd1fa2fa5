"""The preprocessing a checkpoint describes: its schema, checked into a `Preprocess`.

A checkpoint's config says how its model wants its input. The top-level `input_size`, `resize`,
`mean` and `std` keep their old meaning; the optional `preprocess` dict adds the decoder
(`decode: pil | cv2`, `fast_jpeg`) and either the built-in steps (resize with an interpolation,
rounding to a multiple, center crop, pad, then mean/std; or `steps`, a list of resizes, crops
and pads run in order), timm's eval transform from the model's resolved data config (`timm`), or
the user's own albumentations pipeline (`albumentations`, the dict `A.to_dict(transform)`
returns). docs/preprocess.md has the schema.

`Preprocess` is frozen and hashable: models with equal settings form one input group and share one
prepared tensor, and every image is decoded once per `Decoder`. This module only describes and
checks; `decode` reads the images and `transforms` prepares them, so checking a checkpoint needs
neither torch nor cv2.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from .errors import CheckpointError
from .pipelines import (
    TransformCodeError,
    is_albumentations_name,
    outside_user_code,
    rebuild_albumentations,
    timm_pipeline,
    transform_names,
)

SIZE_MULTIPLE = 16  # what `resize: keep_aspect` rounds the short side to
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DECODERS = ("pil", "cv2")
RESIZES = ("stretch", "keep_aspect", "longest", "shortest")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "area")
RESIZE_BACKENDS = ("pil", "cv2")
ROUNDINGS = ("floor", "round")
TIMM_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
TIMM_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
TIMM_CROP_MODES = ("center", "squash", "border")
BUILTIN_KEYS = ("interpolation", "resize_backend", "multiple", "rounding", "crop_size", "crop_pct",
                "pad", "pad_fill")
PIPELINE_KEYS = ("albumentations", "timm")  # each replaces the built-in steps as a whole
STEPS_KEY = "steps"  # the built-in steps as a list, run in order
PREPROCESS_KEYS = ("decode", "fast_jpeg", *BUILTIN_KEYS, STEPS_KEY, *PIPELINE_KEYS)
TOP_LEVEL_KEYS = ("input_size", "resize", "mean", "std")  # beside `preprocess`, not inside it
# What each entry of `steps` may hold: its kind's key first, then its options.
STEP_KEYS = {"resize": ("resize", "size", "interpolation", "backend", "multiple", "rounding"),
             "center_crop": ("center_crop",), "pad": ("pad", "fill")}
MAX_STEP_SIDE = 16384  # beyond it a size is a typo (a test image's side is at most ~23,000)


@dataclass(frozen=True)
class ResizeStep:
    """Resize by `mode` (stretch, keep_aspect, longest, shortest) to `size`, with
    `interpolation` computed by `backend` (PIL or cv2); longest/shortest round the other side
    to a `multiple` by `rounding`."""

    mode: str
    size: int
    interpolation: str = "bilinear"
    backend: str = "pil"
    multiple: int = 1
    rounding: str = "floor"

    def describe(self) -> str:
        multiple = f" to a multiple of {self.multiple} ({self.rounding})" \
            if self.multiple > 1 else ""
        return f"resize {self.mode} {self.size} {self.interpolation} ({self.backend}){multiple}"


@dataclass(frozen=True)
class CenterCropStep:
    """torchvision's CenterCrop to height x width (an image smaller than that is padded black)."""

    height: int
    width: int

    def describe(self) -> str:
        return f"center crop {self.height}x{self.width}"


@dataclass(frozen=True)
class PadStep:
    """Pad, centred, to at least height x width with `fill`; never crops."""

    height: int
    width: int
    fill: tuple[int, int, int] = (0, 0, 0)

    def describe(self) -> str:
        return f"pad to {self.height}x{self.width} with {list(self.fill)}"


Step = ResizeStep | CenterCropStep | PadStep


class Decoder(NamedTuple):
    """How an image file becomes an RGB uint8 array; models with equal decoders share it."""

    kind: str = "pil"
    at_least: int | None = None  # `fast_jpeg`: PIL's reduced-scale JPEG keeps sides >= this


@dataclass(frozen=True)
class Preprocess:
    """How one group of models wants its input; models with equal settings share one tensor.

    `albumentations` and `timm` hold their pipeline's dict as canonical JSON text (hashable);
    either one replaces the built-in steps, which then keep their defaults. `steps`, when set,
    is the built-in steps as a list (the single-step fields then keep their defaults);
    `pixel_steps` is the list either way."""

    input_size: int | None
    resize: str = "stretch"
    mean: tuple[float, float, float] | None = IMAGENET_MEAN
    std: tuple[float, float, float] | None = IMAGENET_STD
    decode: str = "pil"
    fast_jpeg: bool = False
    interpolation: str = "bilinear"
    resize_backend: str = "pil"
    multiple: int = 1
    rounding: str = "floor"
    crop_size: tuple[int, int] | None = None
    crop_pct: float | None = None
    pad: tuple[int, int] | None = None
    pad_fill: tuple[int, int, int] = (0, 0, 0)
    albumentations: str | None = None
    timm: str | None = None
    steps: tuple[Step, ...] | None = None

    @classmethod
    def from_checkpoint_config(cls, config: dict, name: str) -> Preprocess:
        return validate_preprocess(config, name)

    @property
    def resize_size(self) -> int:
        """The size the resize step aims at: `input_size`, or input_size / crop_pct (floored, as
        timm and torchvision do) when a crop_pct crop follows."""
        if self.crop_pct is None:
            return self.input_size
        return math.floor(self.input_size / self.crop_pct)

    @property
    def crop(self) -> tuple[int, int] | None:
        """(height, width) of the center crop, if any."""
        if self.crop_pct is not None:
            return self.input_size, self.input_size
        return self.crop_size

    @property
    def resize_step(self) -> ResizeStep:
        """The single-step fields' resize."""
        return ResizeStep(self.resize, self.resize_size, self.interpolation, self.resize_backend,
                          self.multiple, self.rounding)

    @cached_property  # read for every image
    def pixel_steps(self) -> tuple[Step, ...]:
        """The built-in steps in order: `steps` as given, or the single-step fields' resize,
        center crop and pad."""
        if self.steps is not None:
            return self.steps
        steps: list[Step] = [self.resize_step]
        if self.crop is not None:
            steps.append(CenterCropStep(*self.crop))
        if self.pad is not None:
            steps.append(PadStep(*self.pad, self.pad_fill))
        return tuple(steps)

    def describe(self) -> str:
        """One line for the kernel log: what this input group's images go through."""
        steps = [f"{self.decode} decode" + (" (fast_jpeg)" if self.fast_jpeg else "")]
        if self.albumentations is not None:
            names = [t.get("__class_fullname__", "?").rsplit(".", 1)[-1] for t in
                     json.loads(self.albumentations).get("transform", {}).get("transforms", [])]
            return ", ".join([*steps, f"albumentations {' > '.join(names) or 'pipeline'}"])
        if self.timm is not None:
            return ", ".join([*steps, f"timm eval transform {self.timm}"])
        steps += [step.describe() for step in self.pixel_steps]
        return ", ".join([*steps, f"mean {list(self.mean)} std {list(self.std)}"])

    @property
    def decoder(self) -> Decoder:
        if not self.fast_jpeg:
            return Decoder(self.decode)
        if self.timm is not None:
            data_config = json.loads(self.timm)
            size = data_config["input_size"]
            side = max(size[-2:]) if isinstance(size, list) else size
            return Decoder(self.decode, math.floor(side / (data_config.get("crop_pct") or 0.875)))
        # validated: with steps, fast_jpeg needs a first resize, which gives the size kept
        return Decoder(self.decode, self.pixel_steps[0].size)

    def check_code(self, where: str) -> None:
        """Before the pipeline runs: an albumentations pipeline naming classes of the user's
        code, whose check waited for that code (`validate_preprocess` cannot rebuild it before
        --code is imported), rebuilds here, or CheckpointError says why not in one line."""
        if self.albumentations is None:
            return
        names = transform_names(json.loads(self.albumentations))
        if not all(map(is_albumentations_name, names)):
            _check_albumentations(self.albumentations, lambda message: CheckpointError(
                f"{where}: {message}"), strict=True)


def validate_preprocess(config: dict, where: str) -> Preprocess:
    """The `Preprocess` a checkpoint config describes; raises CheckpointError with one line naming
    `where` (the checkpoint), the key, the problem and the fix."""

    def fail(message: str) -> CheckpointError:
        return CheckpointError(f"{where}: {message}")

    if not isinstance(config, dict):
        raise fail(f"checkpoint config must be a dict, got {type(config).__name__}")
    options = config.get("preprocess") or {}
    if not isinstance(options, dict):
        raise fail(f"config preprocess must be a dict, got {type(options).__name__}; "
                   "write it as preprocess: {decode: ..., ...}")
    for key in options:
        if key in TOP_LEVEL_KEYS:
            raise fail(f"preprocess.{key} belongs beside preprocess; move {key} to the top level "
                       "of the checkpoint config")
        if key not in PREPROCESS_KEYS:
            raise fail(f"unknown preprocess key {key!r}; {_did_you_mean(key, PREPROCESS_KEYS)}"
                       f"known keys: {', '.join(PREPROCESS_KEYS)}")
    decode = _choice(options, "decode", DECODERS, "pil", fail)
    fast_jpeg = options.get("fast_jpeg", False)
    if not isinstance(fast_jpeg, bool):
        raise fail(f"preprocess.fast_jpeg must be true or false, got {fast_jpeg!r}")
    if fast_jpeg and decode != "pil":
        raise fail("preprocess.fast_jpeg is PIL's reduced-scale JPEG decoding; set decode: pil "
                   "or drop fast_jpeg")
    pipelines = [key for key in PIPELINE_KEYS if key in options]
    if STEPS_KEY in options and pipelines:
        raise fail(f"preprocess has both steps and {pipelines[0]}; keep the one the model was "
                   "trained with")
    if len(pipelines) > 1:
        raise fail("preprocess has both albumentations and timm; keep the one the model was "
                   "trained with")
    if pipelines:
        clash = [key for key in BUILTIN_KEYS if key in options]
        if clash:
            raise fail(f"preprocess.{pipelines[0]} is the whole pipeline, so preprocess.{clash[0]}"
                       f" has no effect; drop it (set it inside the {pipelines[0]} pipeline)")
        text = _canonical_json(options[pipelines[0]], f"preprocess.{pipelines[0]}", fail)
        if pipelines[0] == "albumentations":
            if fast_jpeg:
                raise fail("preprocess.fast_jpeg needs a known resize size; it works with the "
                           "built-in steps and timm, not albumentations: drop fast_jpeg")
            _check_albumentations(text, fail)
        else:
            _check_timm(json.loads(text), fail)
            _build_pipeline(timm_pipeline, text, "timm", fail)
        return Preprocess(None, mean=None, std=None, decode=decode, fast_jpeg=fast_jpeg,
                          **{pipelines[0]: text})
    if STEPS_KEY in options:
        return _steps_preprocess(config, options, decode, fast_jpeg, fail)
    return _builtin(config, options, decode, fast_jpeg, fail)


def _builtin(config: dict, options: dict, decode: str, fast_jpeg: bool, fail) -> Preprocess:
    size = config.get("input_size")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise fail(missing_input_size(size))
    resize = config.get("resize", "stretch")
    if resize not in RESIZES:
        raise fail(f"checkpoint config resize must be one of {', '.join(RESIZES)}, got {resize!r}")
    mean = _floats(config.get("mean", IMAGENET_MEAN), "mean", fail)
    std = _floats(config.get("std", IMAGENET_STD), "std", fail)
    if 0.0 in std:
        raise fail(f"checkpoint config std {list(std)} has a zero; give 3 positive floats")
    interpolation = _choice(options, "interpolation", INTERPOLATIONS, "bilinear", fail)
    # A cv2 pipeline resizes with cv2, a PIL one with PIL; only cv2 has INTER_AREA.
    default_backend = "cv2" if decode == "cv2" or interpolation == "area" else "pil"
    backend = _choice(options, "resize_backend", RESIZE_BACKENDS, default_backend, fail)
    if interpolation == "area" and backend == "pil":
        raise fail("preprocess.interpolation area is cv2's INTER_AREA; set resize_backend: cv2")
    multiple = options.get("multiple", 1)
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise fail(f"preprocess.multiple must be a positive int, got {multiple!r}")
    rounding = _choice(options, "rounding", ROUNDINGS, "floor", fail)
    if ("multiple" in options or "rounding" in options) and resize not in ("longest", "shortest"):
        raise fail(f"preprocess.multiple and rounding apply to resize: longest or shortest, not "
                   f"{resize!r} (keep_aspect always rounds to {SIZE_MULTIPLE}); drop them or "
                   "change resize")
    if resize == "keep_aspect" and size % SIZE_MULTIPLE:
        raise fail(f"input_size {size} must be a multiple of {SIZE_MULTIPLE} with resize: "
                   "keep_aspect")
    if size % multiple:
        raise fail(f"input_size {size} must be a multiple of preprocess.multiple {multiple}")
    crop_pct = options.get("crop_pct")
    if crop_pct is not None:
        if "crop_size" in options:
            raise fail("preprocess has both crop_size and crop_pct; keep one")
        if isinstance(crop_pct, bool) or not isinstance(crop_pct, (int, float)) \
                or not 0 < crop_pct <= 1:
            raise fail(f"preprocess.crop_pct must be a number in (0, 1] (crop side / resize "
                       f"side, e.g. 0.875), got {crop_pct!r}")
        crop_pct = float(crop_pct)
    return Preprocess(
        size, resize, mean, std, decode=decode, fast_jpeg=fast_jpeg, interpolation=interpolation,
        resize_backend=backend, multiple=multiple, rounding=rounding,
        crop_size=_size_pair(options.get("crop_size"), "crop_size", fail),
        crop_pct=crop_pct, pad=_size_pair(options.get("pad"), "pad", fail),
        pad_fill=_fill(options.get("pad_fill", 0), fail))


def _steps_preprocess(config: dict, options: dict, decode: str, fast_jpeg: bool, fail
                      ) -> Preprocess:
    """The built-in steps given as a list (`preprocess.steps`), then mean/std."""
    for key in ("input_size", "resize"):
        if key in config:
            raise fail(f"preprocess.steps gives every size, so {key} has no effect; drop {key} "
                       "(a resize step names its own: {resize: shortest, size: 320})")
    clash = [key for key in BUILTIN_KEYS if key in options]
    if clash:
        raise fail(f"preprocess.steps lists every step, so preprocess.{clash[0]} has no effect; "
                   "move it into its step (e.g. {resize: longest, size: 512, interpolation: "
                   "area})")
    listed = options[STEPS_KEY]
    if not isinstance(listed, list):
        raise fail(f"preprocess.steps must be a list of steps ({{resize: longest, size: 512}}, "
                   f"{{center_crop: 480}}, {{pad: 512}}), got {type(listed).__name__}")
    steps = tuple(_step(value, f"steps[{i}]", decode, fail) for i, value in enumerate(listed))
    if fast_jpeg and not (steps and isinstance(steps[0], ResizeStep)):
        raise fail("preprocess.fast_jpeg needs a known resize size: make the first step a "
                   "resize, or drop fast_jpeg")
    mean = _floats(config.get("mean", IMAGENET_MEAN), "mean", fail)
    std = _floats(config.get("std", IMAGENET_STD), "std", fail)
    if 0.0 in std:
        raise fail(f"checkpoint config std {list(std)} has a zero; give 3 positive floats")
    return Preprocess(None, mean=mean, std=std, decode=decode, fast_jpeg=fast_jpeg, steps=steps)


def _step(value, where: str, decode: str, fail) -> Step:
    """One entry of `preprocess.steps`: {resize: MODE, size: N, ...}, {center_crop: SIDE or
    [height, width]} or {pad: SIDE or [height, width], fill: ...}."""
    if not isinstance(value, dict):
        raise fail(f"preprocess.{where} must be a dict such as {{resize: longest, size: 512}}, "
                   f"{{center_crop: 480}} or {{pad: 512}}, got {value!r}")
    kinds = [kind for kind in STEP_KEYS if kind in value]
    if len(kinds) != 1:
        raise fail(f"preprocess.{where} must hold exactly one of {', '.join(STEP_KEYS)} (got "
                   f"{', '.join(map(str, value)) or 'none'})")
    kind = kinds[0]
    for key in value:
        if key not in STEP_KEYS[kind]:
            raise fail(f"unknown key {key!r} in the {kind} step preprocess.{where}; "
                       f"{_did_you_mean(key, STEP_KEYS[kind])}a {kind} step takes "
                       f"{', '.join(STEP_KEYS[kind])}")
    if kind == "center_crop":
        return CenterCropStep(*_size_pair(value["center_crop"], f"{where}.center_crop", fail))
    if kind == "pad":
        return PadStep(*_size_pair(value["pad"], f"{where}.pad", fail),
                       _fill(value.get("fill", 0), fail, f"{where}.fill"))
    mode = value["resize"]
    if mode not in RESIZES:
        raise fail(f"preprocess.{where}.resize must be one of {', '.join(RESIZES)}, got {mode!r}")
    size = value.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_STEP_SIDE:
        raise fail(f"preprocess.{where}.size must be a positive int (at most {MAX_STEP_SIDE}), "
                   f"got {size!r}")
    interpolation = _choice(value, "interpolation", INTERPOLATIONS, "bilinear", fail,
                            f"{where}.interpolation")
    default_backend = "cv2" if decode == "cv2" or interpolation == "area" else "pil"
    backend = _choice(value, "backend", RESIZE_BACKENDS, default_backend, fail,
                      f"{where}.backend")
    if interpolation == "area" and backend == "pil":
        raise fail(f"preprocess.{where}.interpolation area is cv2's INTER_AREA; set backend: cv2")
    multiple = value.get("multiple", 1)
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise fail(f"preprocess.{where}.multiple must be a positive int, got {multiple!r}")
    rounding = _choice(value, "rounding", ROUNDINGS, "floor", fail, f"{where}.rounding")
    if ("multiple" in value or "rounding" in value) and mode not in ("longest", "shortest"):
        raise fail(f"preprocess.{where}: multiple and rounding apply to resize: longest or "
                   f"shortest, not {mode!r}; drop them or change resize")
    if mode == "keep_aspect" and size % SIZE_MULTIPLE:
        raise fail(f"preprocess.{where}.size {size} must be a multiple of {SIZE_MULTIPLE} with "
                   "resize: keep_aspect")
    if size % multiple:
        raise fail(f"preprocess.{where}.size {size} must be a multiple of its multiple "
                   f"{multiple}")
    return ResizeStep(mode, size, interpolation, backend, multiple, rounding)


def missing_input_size(size: object) -> str:
    """What is wrong with a config whose built-in steps have no size to resize to."""
    return (f"checkpoint config lacks a usable input_size (got {size!r}); save the checkpoint "
            "with config input_size (a positive int), or give preprocess.albumentations or "
            "preprocess.timm")


def _choice(options: dict, key: str, allowed: tuple[str, ...], default: str, fail,
            label: str | None = None) -> str:
    value = options.get(key, default)
    if value not in allowed:
        hint = _did_you_mean(value, allowed).rstrip()
        raise fail(f"preprocess.{label or key} {value!r} is unknown"
                   f"{f' ({hint})' if hint else ''}; use one of {', '.join(allowed)}")
    return value


def _did_you_mean(value, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(value), known, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _floats(value, key: str, fail) -> tuple[float, float, float]:
    try:
        floats = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        floats = ()
    if len(floats) != 3:
        raise fail(f"checkpoint config {key} must be 3 floats (one per RGB channel), got {value!r}")
    return floats


def _size_pair(value, key: str, fail) -> tuple[int, int] | None:
    """An int side or a [height, width] pair, as (height, width)."""
    if value is None:
        return None
    pair = [value, value] if isinstance(value, int) else value
    if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise fail(f"preprocess.{key} must be a positive int or [height, width], got {value!r}")
    return int(pair[0]), int(pair[1])


def _fill(value, fail, key: str = "pad_fill") -> tuple[int, int, int]:
    fill = [value] * 3 if isinstance(value, int) else value
    if not isinstance(fill, (list, tuple)) or len(fill) != 3 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in fill):
        raise fail(f"preprocess.{key} must be a pixel value 0-255 or 3 of them (RGB), "
                   f"got {value!r}")
    return int(fill[0]), int(fill[1]), int(fill[2])


def _canonical_json(value, key: str, fail) -> str:
    if not isinstance(value, dict):
        raise fail(f"{key} must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise fail(f"{key} is not plain data ({exc}); save only numbers, strings, lists and "
                   "dicts in it") from None


def _check_albumentations(text: str, fail, strict: bool = False) -> None:
    """Rebuild the pipeline, which checks it. A pipeline naming classes outside albumentations
    is rebuilt once their module is code passed with --code; before that (`strict` False: a
    host command without --code, such as encrypt) only its class names are checked, and
    `Preprocess.check_code` rebuilds it before it runs."""
    try:
        waits = bool(outside_user_code(json.loads(text))) and not strict
    except TransformCodeError as exc:
        raise fail(f"preprocess.albumentations: {exc}; save it with A.to_dict(transform)") \
            from None
    if not waits:
        _build_pipeline(rebuild_albumentations, text, "albumentations", fail,
                        "; save it with A.to_dict(transform) from albumentations 2.x")


def _check_timm(data_config: dict, fail) -> None:
    for key in data_config:
        if key not in TIMM_KEYS:
            raise fail(f"unknown preprocess.timm key {key!r}; {_did_you_mean(key, TIMM_KEYS)}save "
                       "timm.data.resolve_data_config({}, model=model) (keys: "
                       f"{', '.join(TIMM_KEYS)})")
    size = data_config.get("input_size")
    sides = [size] if isinstance(size, int) else size
    if not isinstance(sides, list) or len(sides) not in (1, 2, 3) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sides):
        raise fail(f"preprocess.timm.input_size must be [3, height, width] as timm's data config "
                   f"has it, got {size!r}")
    interpolation = data_config.get("interpolation", "bilinear")
    if interpolation not in TIMM_INTERPOLATIONS:
        raise fail(f"preprocess.timm.interpolation {interpolation!r} is unknown; use one of "
                   f"{', '.join(TIMM_INTERPOLATIONS)}")
    crop_mode = data_config.get("crop_mode")
    if crop_mode is not None and crop_mode not in TIMM_CROP_MODES:
        raise fail(f"preprocess.timm.crop_mode {crop_mode!r} is unknown; use one of "
                   f"{', '.join(TIMM_CROP_MODES)}")
    crop_pct = data_config.get("crop_pct")
    if crop_pct is not None and (isinstance(crop_pct, bool) or not isinstance(
            crop_pct, (int, float)) or not 0 < crop_pct <= 1):
        raise fail(f"preprocess.timm.crop_pct must be a number in (0, 1], got {crop_pct!r}")
    for key in ("mean", "std"):
        if key in data_config:
            _floats(data_config[key], f"preprocess.timm.{key}", fail)


def _build_pipeline(build, text: str, library: str, fail, fix: str = "") -> None:
    try:
        build(text)
    except TransformCodeError as exc:
        raise fail(f"preprocess.{library}: {exc}") from None
    except ImportError as exc:
        raise fail(f"preprocess.{library} needs {library}, which does not import here ({exc}); "
                   f"install {library}") from None
    except Exception as exc:  # whatever the library raises on a dict it cannot rebuild
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise fail(f"preprocess.{library} does not rebuild ({detail}){fix}") from None
