"""The user's own preprocessing pipelines, rebuilt from what the checkpoint saved: an
albumentations pipeline from its `A.to_dict` dict, timm's eval transform from the model's resolved
data config. Each is held as canonical JSON text (`Preprocess.albumentations`, `.timm`).

Both libraries import only when a checkpoint names them, so that checking a checkpoint without
them needs neither (nor torch, nor cv2).

A saved albumentations dict names each transform by its `__class_fullname__`: albumentations'
own by class name (`Resize`), any other as `module.Class` (`mypkg.transforms.MyCrop`, a subclass
the user defined). `A.from_dict` looks the name up in albumentations' registry, which every
subclass joins when its module is imported. A checkpoint is data, so a name resolves only to
albumentations itself or to a module of the user's own code (`--code`, bundled into the kernel),
which is imported here for it; any other name is refused before anything is imported.
"""

from __future__ import annotations

import json
import os
import re
import threading
import warnings
from functools import cache

from .errors import KernelError

ALBUMENTATIONS = "albumentations"
# A class name as albumentations saves it: `Resize`, or `package.module.Class`.
_CLASS_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
# What from_dict warns when it drops saved arguments this version has no more (a 0.x/1.x dict's
# `value`, the pad colour 2.x calls `fill`): the pixels would change without a word.
_DROPPED = re.compile(r"Argument\(s\) '([^']*)' are not valid for transform (\w+)")

_per_thread = threading.local()
# warnings.catch_warnings swaps process-wide state: loader threads that rebuild at the same time
# would restore each other's filters and read each other's warnings, so they take turns.
_catching_warnings = threading.Lock()


class TransformCodeError(KernelError):
    """A saved pipeline names a transform that may not, or cannot, be rebuilt here."""


class DroppedArgumentsError(ValueError):
    """A saved pipeline holds arguments this albumentations drops when it rebuilds it."""


def albumentations_pipeline(text: str):
    """The pipeline rebuilt (A.from_dict) once per thread that uses it: a transform keeps its
    last call's parameters on itself, so the loader threads do not share one."""
    pipelines = _per_thread.__dict__.setdefault("albumentations", {})
    if text not in pipelines:
        pipelines[text] = rebuild_albumentations(text)
    return pipelines[text]


def transform_names(saved: dict) -> list[str]:
    """Every `__class_fullname__` a saved pipeline (`A.to_dict`'s dict) names, nested
    `transforms` (Compose, OneOf, ...) included, in order; TransformCodeError for a name that is
    not a dotted Python name."""
    names = []

    def walk(transform) -> None:
        if not isinstance(transform, dict) or "__class_fullname__" not in transform:
            return  # not a transform: A.from_dict says what is wrong with it
        name = transform["__class_fullname__"]
        if not isinstance(name, str) or not _CLASS_NAME.match(name):
            raise TransformCodeError(f"__class_fullname__ {name!r} is not a class name")
        names.append(name)
        children = transform.get("transforms")
        for child in children if isinstance(children, list) else ():
            walk(child)

    walk(saved.get("transform") if isinstance(saved, dict) else saved)
    return names


def is_albumentations_name(name: str) -> bool:
    """Whether a saved class name is albumentations' own (shortened or in full)."""
    return "." not in name or name.startswith(f"{ALBUMENTATIONS}.")


def custom_transform_modules(saved: dict) -> list[str]:
    """The modules of the transforms outside albumentations that a saved pipeline names
    (`mypkg.transforms` for `mypkg.transforms.MyCrop`): the user's code that rebuilding it needs,
    in order, each once."""
    return list(dict.fromkeys(name.rpartition(".")[0] for name in transform_names(saved)
                              if not is_albumentations_name(name)))


def outside_user_code(saved: dict) -> list[str]:
    """The transforms outside albumentations that a saved pipeline names whose module is not
    code passed with --code (imported here by `model_factory.import_modules`)."""
    names = [name for name in transform_names(saved) if not is_albumentations_name(name)]
    if not names:
        return []
    from .model_factory import is_user_code  # torch: only for a pipeline with the user's classes

    return [name for name in names if not is_user_code(name.rpartition(".")[0])]


def rebuild_albumentations(text: str):
    """A new albumentations pipeline from its saved dict (as JSON text). Each transform must be
    albumentations' own or a class of the user's code (whose module is imported for it);
    TransformCodeError names the first that is neither, before anything is imported for it."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import
    import albumentations

    saved = json.loads(text)
    _resolve_classes(saved)
    with _catching_warnings, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # from_dict warns about its own serialised defaults,
        pipeline = albumentations.from_dict(saved)  # and about the arguments it drops
    for warning in caught:
        dropped = _DROPPED.search(str(warning.message))
        names = _set_arguments(saved, dropped.group(2), dropped.group(1).split(", ")) \
            if dropped else []
        if names:
            raise DroppedArgumentsError(
                f"{dropped.group(2)}'s {', '.join(names)} (saved by albumentations "
                f"{saved.get('__version__', '?')}) would be dropped by albumentations "
                f"{albumentations.__version__}, changing its pixels (0.x/1.x value is 2.x fill)")
    if not callable(pipeline):
        raise TypeError(f"from_dict returned {type(pipeline).__name__}, not a transform")
    return pipeline


def _set_arguments(saved: dict, transform: str, names: list[str]) -> list[str]:
    """Those of `names` that a saved `transform` holds set (not None nor False): dropping a
    1.x dict's `always_apply: false` or `value: null` changes nothing."""
    found = set()

    def walk(node) -> None:
        if not isinstance(node, dict):
            return
        if str(node.get("__class_fullname__", "")).rpartition(".")[2] == transform:
            found.update(name for name in names if node.get(name) not in (None, False))
        for child in node.get("transforms") or ():
            walk(child)

    walk(saved.get("transform"))
    return [name for name in names if name in found]


def _resolve_classes(saved: dict) -> None:
    """Check every class the pipeline names, importing the user's modules that define them, so
    that `A.from_dict` finds them (it only looks names up, in the registry that importing a
    transform's module fills) and finds nothing else under those names."""
    from albumentations.core.serialization import (
        SERIALIZABLE_REGISTRY,
        register_additional_transforms,
        shorten_class_name,
    )

    register_additional_transforms()  # ToTensorV2 and friends, as from_dict does first
    outside = outside_user_code(saved)
    if outside:
        module = outside[0].rpartition(".")[0]
        raise TransformCodeError(
            f"transform {outside[0]!r} is from module {module!r}, which is neither "
            f"albumentations nor code you passed with --code; a checkpoint may only name those: "
            f"add --code PATH (the package that defines it) to import-checkpoint, predict and "
            "build, or save the pipeline without it")
    for name in dict.fromkeys(transform_names(saved)):
        albumentations_own = is_albumentations_name(name)
        module = ALBUMENTATIONS if albumentations_own else name.rpartition(".")[0]
        if not albumentations_own:
            from .model_factory import import_user_module

            import_user_module(module, f"transform {name!r}", TransformCodeError)
        found = SERIALIZABLE_REGISTRY.get(shorten_class_name(name))
        if found is None:
            if albumentations_own:  # from_dict's KeyError names it, as for any unknown name
                continue
            raise TransformCodeError(f"module {module!r} defines no albumentations transform "
                                     f"(a subclass of A.BasicTransform) named "
                                     f"{name.rpartition('.')[2]!r}")
        owner = getattr(found, "__module__", "") or ""
        if owner != module and not owner.startswith(f"{module}."):
            # another imported class registered itself under this name
            raise TransformCodeError(f"transform {name!r} resolves to a class of {owner!r}, not "
                                     f"of {module!r}; rename that class")


@cache
def timm_pipeline(text: str):
    """timm's own eval transform for the saved data config: the exact code that made the
    training-time validation pixels (resize rounding, crop modes, border fill)."""
    from timm.data import create_transform

    return create_transform(**json.loads(text), is_training=False)
