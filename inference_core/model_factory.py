"""`create_model` builds any arch offline: a registered name, timm, the user's own code.

An arch is one of three kinds of name:
- a registered name (`se_resnext50_32x4d`, `torchvision.resnet18`, or the user's own
  `@register_model`); the families live in `inference_core.archs`;
- `timm.<model name>`: `timm.create_model(name, pretrained=False, num_classes=N, **kwargs)`;
- `package.module:callable`, the user's own code (bundled with `kernelpack build --code`),
  called as `callable(num_classes=N, **kwargs)`; only code imported with `import_modules` (what
  --code does, on the host and in the kernel) qualifies: a checkpoint is data and never chooses
  other code to run;
- `prototype:<any of the above>`: that backbone with `embedding_dim` outputs under a prototype
  head of N classes (`inference_core.prototypes`; takes precedence over a module `prototype`).
Every one returns an `nn.Module` with random weights and its classification head sized for
`num_classes`; nothing is downloaded (Kaggle kernels run offline). timm and the user's modules
are imported only when an arch names them.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import importlib
import importlib.util
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

from torch import nn

from .config import DEFAULT_CLASS_CHUNK
from .errors import ConfigError, KernelError, UnknownArchError, UserCodeError
from .prototypes import PrototypeNet, check_head
from .registry import registered, registered_names

# What every kind of arch is built with: (class count, the checkpoint's model_kwargs).
Build = Callable[[int, dict[str, Any]], nn.Module]

TIMM_PREFIX = "timm."
# `prototype:<backbone arch>`: a prototype head on any of the kinds above (`prototypes`).
PROTOTYPE_PREFIX = "prototype:"
# `package.module:callable` (the callable may be an attribute path, `module:Class.build`).
_IMPORT_STRING = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
# The user's own top-level modules (`import_modules`): the only code an import-string arch may call.
_USER_CODE: set[str] = set()
# Keyword arguments that would fetch or read weights: a checkpoint brings its own.
_WEIGHT_KWARGS = ("pretrained", "checkpoint_path")
# What the kernel's bootstrap says of a module of the user's code the bundler left out (a
# training script whose imports the kernel cannot meet): its message then carries the reason.
_LEFT_OUT = "kernelpack left it out of the bundle"


def _describe(exc: BaseException) -> str:
    """`TypeName: first line of the message`, for errors that must fit on one line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _not_found(module: str, subject: str, error: type[KernelError]) -> KernelError:
    """`error` for a user module that is nowhere to be imported: pass its code with --code."""
    return error(f"{subject}: module {module!r} not found; add --code PATH, the folder of "
                 f"package {module.split('.')[0]!r} (or its module file), to kernelpack build (or "
                 "list it in kernel.code) and to the host commands")


def _import(module: str, subject: str, error: type[KernelError]) -> ModuleType:
    """Import the user's `module`; `error` (naming `subject`) says why it failed, and the fix."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if _LEFT_OUT in str(exc):
            raise error(f"{subject}: importing {module!r} failed ({exc}); fix that import, and "
                        "build with --models DIR so that the build checks, on the host, the "
                        "modules your checkpoints name") from None
        if exc.name is not None and (module == exc.name or module.startswith(f"{exc.name}.")):
            raise _not_found(module, subject, error) from None
        raise error(f"{subject}: module {module!r} imports {exc.name!r}, which is not "
                    "installed; install it, or add its package with --code too") from None
    except Exception as exc:  # the user's code can raise anything while it is imported
        raise error(f"{subject}: importing {module!r} failed ({_describe(exc)}); fix that "
                    "module") from None
    except SystemExit as exc:  # a script's `sys.exit()` at import would end the command silently
        raise error(f"{subject}: importing {module!r} called sys.exit({exc.code!r}); a module "
                    "passed with --code must not exit when imported (guard the script part with "
                    "`if __name__ == \"__main__\":`)") from None


def import_modules(names: Sequence[str]) -> None:
    """Import the user's own modules (`--code`), so that their `@register_model` calls run, and
    make their callables the only ones a `package.module:callable` arch may name.

    A module that fails to import raises UserCodeError naming it, the cause and the fix."""
    for name in names:
        _import(name, "user code", UserCodeError)
        _USER_CODE.add(name)


def is_user_code(module: str) -> bool:
    """Whether `module` is (inside) code the user passed with --code (`import_modules`)."""
    return any(module == name or module.startswith(f"{name}.") for name in _USER_CODE)


def import_user_module(module: str, subject: str,
                       error: type[KernelError] = UserCodeError) -> ModuleType:
    """Import `module` of the user's own code (what `import_modules` made so): how a name that
    a checkpoint holds (a custom albumentations class's `package.module.Class`) gets its code.
    A module outside that code is refused before any import (a checkpoint is data and never
    chooses code to run); `error` (naming `subject`) says what failed and the fix."""
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", module) or not is_user_code(module):
        raise error(f"{subject}: module {module!r} is not code you passed with --code; a "
                    "checkpoint may only name code from your own package (kernelpack build "
                    "--code PATH, kernel.code in the config, the host commands' --code)")
    return _import(module, subject, error)


def _register_families() -> None:
    """Import the built-in families (they register themselves); lazy, as they import torch."""
    from . import archs  # noqa: F401  (prototypes, imported above, registers its own)


def _timm() -> ModuleType:
    try:
        import timm
    except ImportError:
        raise UnknownArchError("timm is not installed; pip install timm (the Kaggle image has "
                               "it), or use a registered architecture") from None
    return timm


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a shell-style wildcard, sorted. A pattern that
    starts with `timm.` also lists timm's models (`timm.*`: all of them, over a thousand)."""
    _register_families()
    names = [name for name in registered_names() if fnmatch.fnmatchcase(name, pattern)]
    if pattern.startswith(TIMM_PREFIX):
        timm_pattern = pattern.removeprefix(TIMM_PREFIX)
        names += [TIMM_PREFIX + name for name in _timm().list_models(timm_pattern)]
    return sorted(names)


def _timm_builder(arch: str) -> Build:
    timm = _timm()
    name = arch.removeprefix(TIMM_PREFIX)
    # `resnet18.a1_in1k`: the tag names pretrained weights, never fetched here.
    if not timm.is_model(name.split(".")[0]):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = (f"close names: {', '.join(TIMM_PREFIX + c for c in close)}" if close
                else "see list_models('timm.*') for all names")
        raise UnknownArchError(f"unknown architecture {arch!r}: timm {timm.__version__} has no "
                               f"model {name!r}; {hint}")

    def build(num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)

    return build


def _import_target(arch: str) -> tuple[str, Callable]:
    """(attribute, callable) that a `package.module:callable` arch names in the user's code;
    UnknownArchError for anything else."""
    if not _IMPORT_STRING.match(arch):
        raise UnknownArchError(f"unknown architecture {arch!r}: not a valid import string; "
                               "write package.module:callable")
    module_name, attribute = arch.split(":")
    # Checkpoints are data: an arch may call the user's own code, never whatever else is
    # importable (`torch.hub:load`, `logging:basicConfig`), and is checked before any import.
    if not is_user_code(module_name):
        # find_spec of a top-level name finds it without running it
        if importlib.util.find_spec(module_name.split(".")[0]) is None:
            raise _not_found(module_name, f"unknown architecture {arch!r}", UnknownArchError)
        raise UnknownArchError(
            f"architecture {arch!r}: module {module_name!r} is not code you passed with --code; "
            "an arch names a registered architecture, timm.<name> or a callable in your own "
            "code (kernelpack build --code PATH, kernel.code in the config, the host commands' "
            "--code)")
    target = module = _import(module_name, f"unknown architecture {arch!r}",
                                     UnknownArchError)
    for part in attribute.split("."):
        target = getattr(target, part, None)
    if callable(target) and not is_user_code(_defined_in(target)):
        # `pkg.net:torch.hub.load` or a name the module imported from elsewhere
        raise UnknownArchError(
            f"architecture {arch!r}: {attribute!r} is not defined in your own code (it comes "
            f"from {_defined_in(target)!r}); name a function or class that "
            f"{module_name!r} defines")
    if not callable(target):
        found = [name for name, value in vars(module).items()
                 if callable(value) and not name.startswith("_")]
        close = difflib.get_close_matches(attribute, found, n=5, cutoff=0.5)
        hint = f"close names: {', '.join(close)}" if close else "check the name after ':'"
        raise UnknownArchError(f"unknown architecture {arch!r}: module {module_name!r} has no "
                               f"callable {attribute!r}; {hint}")
    return attribute, target


def _import_builder(arch: str, classes_argument: str | None) -> Build:
    attribute, target = _import_target(arch)
    count = classes_argument or "num_classes"
    takes = _parameters(target)

    def build(num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
        # The checkpoint's model_kwargs as given, whatever their names; the class count only
        # under the factory's own name for it, and only where the factory takes it.
        call = dict(kwargs)
        if count not in call:
            if takes is None or count in takes or (classes_argument is None and "**" in takes):
                call[count] = num_classes
            elif classes_argument is not None and "**" not in takes:
                raise UnknownArchError(
                    f"architecture {arch!r}: classes_argument {count!r}: {attribute} takes no "
                    f"such parameter (it takes {', '.join(takes) or 'none'}); fix "
                    "classes_argument in the checkpoint config")
        model = target(**call)
        if not isinstance(model, nn.Module):
            raise UnknownArchError(f"architecture {arch!r}: {attribute}({count}=...) returned "
                                   f"{type(model).__name__}, not a torch.nn.Module; make it "
                                   "return the model")
        return model

    return build


# Names 2019 code gave the class count (`n_classes`, `classes`, `num_class`, `n_labels`, ...).
_COUNT_LIKE = re.compile(r"class|label|^n_?out|^num_?out|^nc$|out_features")


def withheld_class_count(arch: str, classes_argument: str | None) -> list[str]:
    """The parameters that look like a class count of a `package.module:callable` factory that
    was given none (it takes neither `num_classes` nor `**kwargs`, and `classes_argument` names
    none): what a head of the wrong width most likely came from."""
    if classes_argument is not None or ":" not in arch or registered(arch) is not None:
        return []
    try:
        _, target = _import_target(arch)
    except UnknownArchError:
        return []
    takes = _parameters(target) or []
    if "num_classes" in takes or "**" in takes:
        return []
    return [name for name in takes if _COUNT_LIKE.search(name)]


def _defined_in(target: Callable) -> str:
    """The module that defines `target`; for a `functools.partial` (2019 code's `resnet50 =
    partial(ResNet, net_cls=M.resnet50)`), the module of the function it wraps."""
    while isinstance(target, functools.partial):
        target = target.func
    return getattr(target, "__module__", None) or ""


def _parameters(target: Callable) -> list[str] | None:
    """The keyword parameters a callable takes (`**` for a **kwargs), None when unknown."""
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # a builtin or an extension: pass the count, as always
        return None
    return ["**" if p.kind is p.VAR_KEYWORD else p.name for p in parameters
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY, p.VAR_KEYWORD)]


def _builder(arch: str, classes_argument: str | None) -> Build:
    builder = registered(arch)
    if builder is not None:
        return lambda num_classes, kwargs: builder(num_classes, **kwargs)
    if arch.startswith(PROTOTYPE_PREFIX):
        backbone = arch.removeprefix(PROTOTYPE_PREFIX)
        return lambda num_classes, kwargs: prototype_net(backbone, num_classes, classes_argument,
                                                         **kwargs)
    if arch.startswith(TIMM_PREFIX):
        return _timm_builder(arch)
    if ":" in arch:
        return _import_builder(arch, classes_argument)
    close = difflib.get_close_matches(arch, registered_names(), n=5, cutoff=0.5)
    hint = f"close names: {', '.join(close)}" if close else "see list_models() for all names"
    raise UnknownArchError(
        f"unknown architecture {arch!r}; {hint}; or use timm.<name>, or your own "
        "package.module:callable (with --code PATH), or register one with @register_model")


def create_model(arch: str, /, num_classes: int, **model_kwargs) -> nn.Module:
    """Build `arch` (a registered name, `timm.<name>` or `package.module:callable`) with a head
    of `num_classes` outputs and random weights; raises UnknownArchError naming the fix. The
    keyword arguments go to the architecture as given (even one named `arch`)."""
    return build_arch(arch, num_classes, model_kwargs)


def build_arch(arch: str, num_classes: int, model_kwargs: Mapping[str, Any],
               classes_argument: str | None = None) -> nn.Module:
    """`create_model` for a checkpoint: its `model_kwargs` as a mapping (no name of theirs can
    collide with this function's own), and `classes_argument`, the parameter of a
    `package.module:callable` factory that takes the class count when it is not `num_classes`
    (a factory that takes neither, nor **kwargs, gets no count)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    refused = [key for key in _WEIGHT_KWARGS if model_kwargs.get(key)]
    if refused:
        raise UnknownArchError(f"architecture {arch!r}: model_kwargs {refused[0]!r} would load "
                               "other weights; drop it, the checkpoint brings the weights")
    _register_families()
    return _builder(arch, classes_argument)(num_classes, dict(model_kwargs))


def prototype_net(backbone_arch: str, num_classes: int, classes_argument: str | None = None,
                  /, *, embedding_dim: int | None = None, metric: str = "cosine",
                  temperature: float = 1.0, class_chunk: int = DEFAULT_CLASS_CHUNK,
                  **backbone_kwargs) -> nn.Module:
    """`prototype:<backbone_arch>`: the backbone built with `embedding_dim` outputs (its other
    model_kwargs passed on), under a prototype head of `num_classes` classes."""
    arch = PROTOTYPE_PREFIX + backbone_arch
    if not backbone_arch or backbone_arch.startswith(PROTOTYPE_PREFIX):
        raise UnknownArchError(f"architecture {arch!r}: name a backbone after {PROTOTYPE_PREFIX!r}"
                               " (a registry name, timm.<name> or package.module:callable), "
                               "e.g. prototype:timm.resnet50")
    if embedding_dim is None:
        raise ConfigError(f"architecture {arch!r}: model_kwargs.embedding_dim is missing; set it "
                          "to the backbone's output width (the embedding size)")
    check_head(embedding_dim, metric, temperature, class_chunk)
    backbone = build_arch(backbone_arch, embedding_dim, backbone_kwargs, classes_argument)
    return PrototypeNet(backbone, embedding_dim, num_classes, metric, temperature, class_chunk)
