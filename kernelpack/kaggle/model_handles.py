"""Kaggle Model handles (`OWNER/MODEL/FRAMEWORK/VARIATION[/VERSION]`), checked before anything is
sent, and where Kaggle mounts a model version in a kernel: `input/MODEL/FRAMEWORK/VARIATION/
VERSION/`, the framework lower-cased (`pyTorch` -> `pytorch`).

Light on purpose (no kaggle, no kagglesdk): the CLI checks a handle before it signs in, and the
local service, which never imports the client, resolves a kernel's `model_sources` with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import KaggleModelHandleError

# kagglesdk's ModelFramework (less UNSPECIFIED and API, which holds no files), by the name a
# handle shows; the key is the name lower-cased without separators, which is how the client
# matches names to the enum (any case, `py_torch` or `pyTorch`) and how Kaggle mounts them.
# tests/test_kaggle_models.py checks this against the installed kagglesdk.
FRAMEWORK_NAMES = ("tensorFlow1", "tensorFlow2", "tfLite", "tfJs", "pyTorch", "jax", "flax", "pax",
                   "maxText", "gemmaCpp", "ggml", "gguf", "coral", "scikitLearn", "mxnet", "onnx",
                   "keras", "transformers", "other", "tensorRtLlm", "triton", "vllm")
# What the client sends for a framework: MODEL_FRAMEWORK_ + the name in upper snake case.
WIRE_PREFIX = "MODEL_FRAMEWORK_"
# Kaggle's slug rules as the client checks them: lower-case letters and digits in runs joined by
# one '-' (an owner may also use '_'); variations such as `gemma_2b_en` or `1.1-2b-it` exist.
_OWNER = re.compile(r"[a-z0-9]+(?:[_-][a-z0-9]+)*")
_MODEL = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_VARIATION = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
_SLUGS = {"owner": (_OWNER, "lower-case letters, digits, '-' and '_'"),
          "model": (_MODEL, "lower-case letters, digits and '-'"),
          "variation": (_VARIATION, "lower-case letters, digits, '-', '_' and '.'")}
EXAMPLE = "tester/digits-cnn/pyTorch/default"


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


FRAMEWORKS = {_key(name): name for name in FRAMEWORK_NAMES}


def framework_key(name: str) -> str | None:
    """`pyTorch`, `pytorch`, `PY_TORCH` or the wire's `MODEL_FRAMEWORK_PY_TORCH` -> `pytorch`;
    None for a framework Kaggle does not know."""
    key = _key(name)
    key = key if key in FRAMEWORKS else key.removeprefix(_key(WIRE_PREFIX))
    return key if key in FRAMEWORKS else None


@dataclass(frozen=True)
class ModelHandle:
    owner: str
    model: str
    framework: str      # the key: `pytorch`
    variation: str

    @property
    def model_ref(self) -> str:
        return f"{self.owner}/{self.model}"

    @property
    def instance(self) -> str:
        """The handle as the client takes it (its framework by the name Kaggle shows)."""
        return f"{self.owner}/{self.model}/{FRAMEWORKS[self.framework]}/{self.variation}"

    def version(self, number: int) -> str:
        return f"{self.instance}/{number}"

    def mount_point(self, number: int) -> str:
        """Where a kernel finds version `number`, under /kaggle/input."""
        return f"{self.model}/{self.framework}/{self.variation}/{number}"


def slug_problem(what: str, value: object) -> str | None:
    """What is wrong with an owner, model or variation slug (`what`), or None."""
    pattern, allowed = _SLUGS[what]
    if isinstance(value, str) and pattern.fullmatch(value):
        return None
    return (f"{what} {value!r} must be {allowed}, not starting or ending with a separator nor "
            "holding two in a row")


def wire_name(key: str) -> str:
    """The enum name the client sends for framework `key`: `pytorch` -> MODEL_FRAMEWORK_PY_TORCH,
    `tensorflow2` -> MODEL_FRAMEWORK_TENSOR_FLOW_2."""
    return WIRE_PREFIX + re.sub(r"(?<=[a-z])(?=[A-Z0-9])", "_", FRAMEWORKS[key]).upper()


def parse_handle(text: str, option: str = "--handle") -> ModelHandle:
    """OWNER/MODEL/FRAMEWORK/VARIATION, or KaggleModelHandleError saying what to fix."""
    parts = text.split("/")
    if len(parts) != 4:
        raise KaggleModelHandleError(
            f"{option} {text!r}: expected OWNER/MODEL/FRAMEWORK/VARIATION (4 parts separated by "
            f"'/', got {len(parts)}), e.g. {EXAMPLE}")
    owner, model, framework, variation = parts
    for what, value in (("owner", owner), ("model", model), ("variation", variation)):
        problem = slug_problem(what, value)
        if problem:
            raise KaggleModelHandleError(f"{option} {text!r}: {problem}; fix it, e.g. {EXAMPLE}")
    key = framework_key(framework)
    if key is None:
        raise KaggleModelHandleError(
            f"{option} {text!r}: framework {framework!r} is not one Kaggle knows; use one of "
            f"{', '.join(FRAMEWORK_NAMES)} (any case)")
    return ModelHandle(owner, model, key, variation)


def parse_source(ref: str) -> tuple[ModelHandle, int] | None:
    """A kernel's model source `OWNER/MODEL/FRAMEWORK/VARIATION/VERSION`; None when malformed."""
    instance, _, version = ref.rpartition("/")
    if not (version.isascii() and version.isdigit() and int(version) > 0):
        return None
    try:
        return parse_handle(instance), int(version)
    except KaggleModelHandleError:
        return None
