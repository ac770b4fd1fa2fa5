"""`kernelpack import-checkpoint`: a competitor's weights file -> a kernelpack checkpoint.

Reads the shapes weights come in: a plain state dict; a dict holding one under `state_dict`
(Lightning and friends; their epoch, optimizer_states, hyper_parameters, ... are ignored),
`model_state_dict`, `model`, `net` or `weights`; a list or tuple `[arch, state_dict]`; a
`.safetensors` file; and, only when the user trusts the file (`trust_pickle`: unpickling runs
code from it), a whole pickled `nn.Module` (`torch.save(model)`). The architecture is built from
`arch` (registry name, `timm.<name>` or `package.module:callable`, with the user's `--code`
imported first), the weights are loaded strictly, one forward pass runs on a dummy batch prepared
as the kernel prepares images, and the result is written with `save_checkpoint`, its config
recording the versions of the packages that built the model and ran its preprocessing
(`inference_core.versions`; versions given in --config are kept, as the training's own).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from inference_core.checkpoint import WeightMismatch, build_model, save_checkpoint
from inference_core.model_config import ModelConfig
from inference_core.model_factory import withheld_class_count
from inference_core.versions import recorded_versions

from ..errors import CheckpointImportError
from ..outputs import check_output_file

# Where training frameworks keep the model's state dict inside a bigger checkpoint dict.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
DUMMY_BATCH = 2
DUMMY_SIDE = 256  # the dummy images' side when no input_size is given (timm, albumentations)


@dataclass(frozen=True)
class ImportedCheckpoint:
    path: Path
    config: ModelConfig
    source_format: str  # how the weights were found, for the report
    tensors: int
    left_out: list[str] = field(default_factory=list)  # keys outside --strip-prefix
    input_shape: tuple[int, ...] = ()


def import_checkpoint(source: str | Path, output: str | Path, *, arch: str, num_classes: int,
                      name: str, fold: int | None = None, config_file: str | Path | None = None,
                      code: Sequence[str | Path] = (), strip_prefix: str | None = None,
                      trust_pickle: bool = False) -> ImportedCheckpoint:
    """Convert `source` into a kernelpack checkpoint at `output`; raises CheckpointImportError
    (or the runtime's CheckpointError/UnknownArchError for a bad config or arch)."""
    source = Path(source)
    if not source.is_file():
        raise CheckpointImportError(f"{source}: file not found; pass the weights file to import")
    check_output_file(output, inputs=[source, config_file], makes_folder=True)
    if code:  # first: the config's preprocessing may name the user's own transforms
        from ..kernel.user_code import import_user_code

        import_user_code([Path(path) for path in code])
    config = _model_config(arch, num_classes, name, fold, config_file, source)
    state_dict, source_format = read_state_dict(source, trust_pickle)
    state_dict, left_out = _strip(state_dict, strip_prefix, source)
    model = build_model(config, str(source))
    mismatch = WeightMismatch.between(model, state_dict)
    if mismatch:
        prefix = _explaining_prefix(mismatch)
        withheld = withheld_class_count(arch, config.classes_argument)
        if prefix:
            hint = f"; add --strip-prefix {(strip_prefix or '') + prefix}"
        elif withheld:  # the factory names its class count otherwise: it kept its default
            hint = (f"; {arch.split(':')[1]} takes no num_classes, so the count went to none of "
                    f"its parameters and {withheld[0]} kept its default: set "
                    f"\"classes_argument\": \"{withheld[0]}\" in --config")
        else:
            hint = "; check --arch, --num-classes and model_kwargs in --config"
        raise CheckpointImportError(
            f"{source}: weights do not fit arch {arch!r} with {num_classes} classes "
            f"({mismatch.describe()}){hint}")
    _check_kinds(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True)
    input_shape = _check_forward(model, config, source)
    config = _with_versions(config)
    path = save_checkpoint(output, config.arch, config.num_classes, config.to_dict(), model)
    return ImportedCheckpoint(path, config, source_format, len(state_dict), left_out, input_shape)


def _with_versions(config: ModelConfig) -> ModelConfig:
    """`config` recording the versions that built its model and ran its preprocessing here,
    under the ones --config gave (those of the training itself, which the user knows best)."""
    versions = {**recorded_versions(), **(config.versions or {})}
    return dataclasses.replace(config, saved=dataclasses.replace(config.saved,
                                                                 versions=versions))


def _check_kinds(model: nn.Module, state_dict: dict, source: Path) -> None:
    """Each tensor must be of the kind (float, integer, bool) the model holds there:
    load_state_dict would cast integers into float weights silently, so a file whose header
    lies about a dtype (or weights of another model) would import as garbage. Another float
    width (fp16 weights into an fp32 model) is an ordinary cast."""
    expected = model.state_dict()
    for key, tensor in state_dict.items():
        want = expected[key].dtype
        if (tensor.dtype.is_floating_point, tensor.dtype == torch.bool) != \
                (want.is_floating_point, want == torch.bool):
            raise CheckpointImportError(
                f"{source}: tensor {key!r} is {str(tensor.dtype).removeprefix('torch.')} but "
                f"the model holds {str(want).removeprefix('torch.')} there; the file's header "
                "is wrong or the weights belong to another model, export them again")


def _model_config(arch: str, num_classes: int, name: str, fold: int | None,
                  config_file: str | Path | None, source: Path) -> ModelConfig:
    """The flags and the --config file as one checked ModelConfig."""
    fields = read_config_file(Path(config_file)) if config_file else {}
    where = str(config_file) if config_file else f"{source} (from the flags)"
    for key, flag in (("arch", "--arch"), ("num_classes", "--num-classes")):
        if key in fields:
            raise CheckpointImportError(f"{config_file}: {key} is given with {flag}, not in "
                                        "--config; drop it from the file")
    for key, value in (("name", name), ("fold", fold)):
        if value is None:
            continue
        if key in fields and fields[key] != value:
            raise CheckpointImportError(f"{config_file}: {key} {fields[key]!r} differs from "
                                        f"--{key} {value!r}; drop one of them")
        fields[key] = value
    config = ModelConfig.from_checkpoint(
        {"arch": arch, "num_classes": num_classes, "config": fields}, where)
    if config.preprocess is None:
        raise CheckpointImportError(
            f"{where}: says nothing about the model's input; give input_size (with mean, std, "
            "resize or a preprocess recipe) in --config FILE, as the model was trained")
    config.preprocess.check_code(where)  # the user's own transforms, now that --code is in
    return config


def _no_duplicate_keys(path: Path):
    def pairs_to_dict(pairs: list) -> dict:
        fields: dict = {}
        for key, value in pairs:
            if key in fields:
                raise CheckpointImportError(f"{path}: key {key!r} is given twice; JSON would keep "
                                            "only the last, remove one")
            fields[key] = value
        return fields

    return pairs_to_dict


def read_config_file(path: Path) -> dict:
    """The checkpoint config fields in a .json or .yml/.yaml file (a mapping); YAML is read as
    strictly as an ensemble config (a duplicate key is an error), JSON likewise."""
    if path.suffix in (".yml", ".yaml"):
        from ..config import read_yaml

        fields = read_yaml(path)
    elif path.suffix == ".json":
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CheckpointImportError(f"{path}: --config file not found") from None
        except (UnicodeDecodeError, OSError) as exc:
            raise CheckpointImportError(f"{path}: --config cannot be read as UTF-8 text "
                                        f"({type(exc).__name__}); pass a JSON file") from None
        try:
            fields = json.loads(text, object_pairs_hook=_no_duplicate_keys(path))
        except json.JSONDecodeError as exc:
            raise CheckpointImportError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); "
                                        "fix the syntax") from None
    else:
        raise CheckpointImportError(f"{path}: --config must be a .json, .yml or .yaml file")
    if not isinstance(fields, dict):
        raise CheckpointImportError(f"{path}: must hold a mapping of checkpoint config fields "
                                    f"(input_size: 224, ...), got {type(fields).__name__}")
    return fields


def read_state_dict(source: Path, trust_pickle: bool) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of `source` by name, and a description of where they were found."""
    if source.suffix == ".safetensors" or _looks_like_safetensors(source):
        return _read_safetensors(source), "safetensors file"
    try:
        loaded = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...
        needs = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if not trust_pickle:
            if needs:
                raise CheckpointImportError(
                    f"{source}: holds pickled Python objects ({needs.group(1)}), and unpickling "
                    "runs code from the file; add --trust-pickle if the file is trusted"
                ) from None
            raise CheckpointImportError(f"{source}: not a torch.save or .safetensors file "
                                        f"({_reason(exc)})") from None
        loaded = _unpickle(source)
    return _find_state_dict(loaded, source)


def _looks_like_safetensors(source: Path) -> bool:
    """A safetensors file starts with its JSON header's length (8 bytes, little-endian) and
    the header's opening brace."""
    with open(source, "rb") as handle:
        start = handle.read(9)
    return (len(start) == 9 and start[8:] == b"{"
            and int.from_bytes(start[:8], "little") < source.stat().st_size)


def _read_safetensors(source: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(source), device="cpu")
    except Exception as exc:  # SafetensorError, OSError
        raise CheckpointImportError(f"{source}: not a readable safetensors file "
                                    f"({_reason(exc)})") from None


def _unpickle(source: Path):
    """torch.load with pickle allowed: the user has said the file is trusted."""
    try:
        return torch.load(source, map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise CheckpointImportError(
            f"{source}: the pickled model needs code that is not importable ({_reason(exc)}); "
            "add --code PATH for the package that defines its class") from None
    except Exception as exc:
        raise CheckpointImportError(f"{source}: cannot unpickle ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    """The telling line of an exception (torch's weights_only errors bury it mid-text)."""
    text = str(exc)
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    if detail:
        return detail.group(1).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _is_state_dict(value) -> bool:
    return (isinstance(value, Mapping) and len(value) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()))


def _find_state_dict(loaded, source: Path) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(loaded, nn.Module):
        return loaded.state_dict(), f"pickled {type(loaded).__name__} module"
    if _is_state_dict(loaded):
        return dict(loaded), "state dict"
    if isinstance(loaded, Mapping):
        for key in STATE_DICT_KEYS:
            value = loaded.get(key)
            if isinstance(value, nn.Module):
                return value.state_dict(), f"pickled {type(value).__name__} module in {key!r}"
            if _is_state_dict(value):
                return dict(value), f"{key!r} entry of a checkpoint dict"
        raise CheckpointImportError(
            f"{source}: a dict with keys {sorted(map(str, loaded))[:8]}, none of which holds a "
            f"state dict (looked in {', '.join(STATE_DICT_KEYS)}); save the model's "
            "state_dict() alone")
    if isinstance(loaded, (list, tuple)):
        found = [item for item in loaded if _is_state_dict(item)]
        if len(found) == 1:
            return dict(found[0]), f"[arch, state_dict] {type(loaded).__name__}"
        raise CheckpointImportError(f"{source}: a {type(loaded).__name__} of {len(loaded)} items "
                                    f"with {len(found)} state dicts; expected exactly one")
    raise CheckpointImportError(f"{source}: holds a {type(loaded).__name__}, not weights; "
                                "expected a state dict, {'state_dict': ...}, [arch, state_dict] "
                                "or a pickled model")


def _strip(state_dict: dict, prefix: str | None, source: Path) -> tuple[dict, list[str]]:
    """Keys under `prefix` without it; the keys outside it are left out (and reported)."""
    if not prefix:
        return state_dict, []
    kept = {key[len(prefix):]: value for key, value in state_dict.items()
            if key.startswith(prefix)}
    if not kept:
        starts = Counter(key.split(".")[0] + "." for key in state_dict).most_common(3)
        raise CheckpointImportError(
            f"{source}: no key starts with --strip-prefix {prefix!r} (keys start with "
            + ", ".join(f"{start!r} x{count}" for start, count in starts) + ")")
    return kept, [key for key in state_dict if not key.startswith(prefix)]


def _explaining_prefix(mismatch: WeightMismatch) -> str | None:
    """A leading part of the file's keys whose removal turns them into the model's keys."""
    missing = set(mismatch.missing)
    counts: Counter[str] = Counter()
    for key in mismatch.unexpected:
        parts = key.split(".")
        for i in range(1, len(parts)):
            if ".".join(parts[i:]) in missing:
                counts[".".join(parts[:i]) + "."] += 1
                break
    if not counts:
        return None
    prefix, count = counts.most_common(1)[0]
    return prefix if count * 2 >= len(missing) else None


def _check_forward(model: nn.Module, config: ModelConfig, source: Path) -> tuple[int, ...]:
    """Run a dummy batch, prepared as the kernel prepares images, through the model."""
    from inference_core.transforms import to_tensor

    preprocess = config.required_preprocess(str(source))
    side = config.input_size or DUMMY_SIDE
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(DUMMY_BATCH)]
    batch = torch.stack([to_tensor(image, preprocess) for image in images])
    model.eval()
    try:
        with torch.no_grad():
            output = model(batch)
    except Exception as exc:  # any error of the user's forward()
        raise CheckpointImportError(
            f"{source}: the forward pass on a dummy batch of shape {list(batch.shape)} fails "
            f"({_reason(exc)}); check input_size/preprocess in --config and --arch") from None
    expected = (DUMMY_BATCH, config.num_classes)
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != expected:
        got = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise CheckpointImportError(
            f"{source}: the model outputs {got} for a batch of {DUMMY_BATCH}, expected "
            f"{list(expected)} (one logit per class); check --num-classes and --arch")
    if not torch.isfinite(output).all():
        raise CheckpointImportError(f"{source}: the model outputs NaN or inf on a dummy batch; "
                                    "the weights are damaged or were saved mid-divergence")
    return tuple(batch.shape)
