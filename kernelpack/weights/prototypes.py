"""`kernelpack prototypes`: class prototypes from training images, into a kernel-ready checkpoint.

The input is a trained embedding model, either
- a plain backbone checkpoint (any arch; its `num_classes` outputs are the embedding, and it
  lists no `classes`), which becomes `arch: prototype:<its arch>` with `embedding_dim` =
  its num_classes and its model_kwargs passed on to the backbone; or
- a prototype checkpoint (`prototype:<backbone>`, `prototype_cnn`), whose prototypes (empty, or
  from other images) are replaced; its head settings are kept unless --metric/--temperature say.
Each training image is decoded and prepared by the checkpoint's own `Preprocess`, exactly as the
kernel prepares test images (`inference_core.decode`, `inference_core.transforms`), and embedded
by the output model's own `embed`. Per class, running sums (float64) of the embeddings are kept,
never the embeddings: a prototype is the mean embedding (sqeuclidean) or the normalised mean of
the normalised embeddings (cosine). The classes are the CSV's labels, sorted (as integers when
all are).
"""

from __future__ import annotations

import csv
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from inference_core.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from inference_core.config import DEFAULT_CLASS_CHUNK
from inference_core.data import image_file
from inference_core.decode import decode_image
from inference_core.errors import TestSetError
from inference_core.model_config import ModelConfig
from inference_core.model_factory import PROTOTYPE_PREFIX, create_model
from inference_core.predict import prefetch, same_shape_batches
from inference_core.preprocess import Preprocess
from inference_core.prototypes import HEAD_KWARGS, PrototypeNet
from inference_core.transforms import to_tensor

from ..errors import PrototypeError
from ..outputs import check_output_file

PROTOTYPE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")  # labels that read back as the same int


@dataclass(frozen=True)
class TrainingLabels:
    """The CSV's rows: image ids, each row's class index, and the sorted classes."""

    ids: list[str]
    targets: torch.Tensor  # (rows,) int64 index into `classes`
    classes: list


def read_labels(path: Path, id_column: str = "id", label_column: str = "label"
                ) -> TrainingLabels:
    """The training labels at `path`; PrototypeError (one line) when the CSV cannot serve."""
    where = f"--labels {path}"
    if not path.is_file():
        raise PrototypeError(f"{where}: file not found; pass the CSV of training image ids and "
                             "their labels")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            for column, flag in ((id_column, "--id-column"), (label_column, "--label-column")):
                if column not in columns:
                    raise PrototypeError(f"{where}: no column {column!r} (columns: "
                                         f"{', '.join(columns) or 'none'}); name it with {flag}")
            rows = [(row[id_column], row[label_column]) for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise PrototypeError(f"{where}: cannot read it as a CSV ({exc}); save it as UTF-8 CSV "
                             "with a header row") from None
    if not rows:
        raise PrototypeError(f"{where}: no rows; list one training image per row")
    for line, (image_id, label) in enumerate(rows, start=2):
        if not image_id or not label:  # empty, or None on a short row
            empty = id_column if not image_id else label_column
            raise PrototypeError(f"{where}: line {line} has no {empty}; give every row an image "
                                 "id and a label, or remove the row")
    labels = [label for _, label in rows]
    names = sorted(set(labels))
    if all(_INTEGER.fullmatch(name) for name in names):
        classes = sorted(int(name) for name in names)
        index = {str(label): i for i, label in enumerate(classes)}
    else:
        classes = names
        index = {label: i for i, label in enumerate(classes)}
    targets = torch.tensor([index[label] for label in labels], dtype=torch.long)
    return TrainingLabels([image_id for image_id, _ in rows], targets, classes)


def image_paths(images: Path, ids: list[str], extension: str, labels: Path) -> list[Path]:
    """Each id's image file under `images` (the id itself, or the id + extension), as the
    kernel finds test images; one missing file is a PrototypeError naming it."""
    if not images.is_dir():
        raise PrototypeError(f"--images {images}: not a folder; pass the folder of training "
                             "images")
    paths = [image_file(images, image_id, extension) for image_id in ids]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise PrototypeError(f"{len(missing)} of {len(paths)} images listed in {labels} are not "
                             f"in {images} (first: {missing[0]}); check --images and --extension,"
                             " or remove their rows")
    return paths


@dataclass(frozen=True)
class EmbeddingModel:
    """The input checkpoint, read: its config, and the untrained output model it becomes."""

    config: ModelConfig
    arch: str
    model_kwargs: dict
    backbone_state: dict


def read_embedding_model(path: Path, metric: str | None, temperature: float | None
                         ) -> EmbeddingModel:
    """The output arch and head settings of the embedding model at `path`, and its backbone's
    weights; PrototypeError when it is a classifier."""
    name = str(path)
    checkpoint = load_checkpoint(path, name)
    config = ModelConfig.from_checkpoint(checkpoint, name)
    model = model_from_checkpoint(checkpoint, name, config)
    overrides = {key: value for key, value in (("metric", metric), ("temperature", temperature))
                 if value is not None}
    if isinstance(model, PrototypeNet):
        return EmbeddingModel(config, config.arch, {**config.model_kwargs, **overrides},
                              model.backbone.state_dict())
    if config.classes is not None:
        raise PrototypeError(f"{name}: a classifier (config.classes lists {len(config.classes)} "
                             "labels), not an embedding model; pass the embedding backbone (its "
                             "num_classes = the embedding size, no classes), or a "
                             f"{PROTOTYPE_PREFIX}<backbone> checkpoint")
    clash = [key for key in HEAD_KWARGS if key in config.model_kwargs]
    if clash:
        raise PrototypeError(f"{name}: model_kwargs {clash[0]!r} is a prototype head setting, so "
                             "the backbone cannot take it; rename that backbone argument")
    kwargs = {**config.model_kwargs, "embedding_dim": config.num_classes, "metric": "cosine",
              "temperature": 1.0, **overrides}
    return EmbeddingModel(config, PROTOTYPE_PREFIX + config.arch, kwargs, model.state_dict())


@dataclass(frozen=True)
class PrototypeResult:
    path: Path
    arch: str
    classes: int
    images: int
    embedding_dim: int
    metric: str


def build_prototypes(checkpoint: Path, images: Path, labels: Path, output: Path, *,
                     id_column: str = "id", label_column: str = "label",
                     extension: str = ".png", batch_size: int = 64,
                     class_chunk: int = DEFAULT_CLASS_CHUNK,
                     metric: str | None = None, temperature: float | None = None,
                     dtype: str = "float32", progress: bool = True) -> PrototypeResult:
    """Embed every training image listed in `labels`, average per class, and write the
    checkpoint with the `prototypes` buffer (in `dtype`) and the classes to `output`."""
    check_output_file(output, inputs=[checkpoint, labels], makes_folder=True)
    source = read_embedding_model(checkpoint, metric, temperature)
    preprocess = source.config.required_preprocess(str(checkpoint))
    rows = read_labels(labels, id_column, label_column)
    paths = image_paths(images, rows.ids, extension, labels)
    model = create_model(source.arch, len(rows.classes), **source.model_kwargs)
    model.backbone.load_state_dict(source.backbone_state, strict=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    sums = _class_sums(model, preprocess, paths, rows.targets, len(rows.classes), batch_size,
                       labels, progress)
    counts = torch.bincount(rows.targets, minlength=len(rows.classes))
    model.prototypes = _means(sums, counts, model.metric, class_chunk, PROTOTYPE_DTYPES[dtype])
    config = {**source.config.to_dict(), "classes": list(rows.classes),
              "model_kwargs": source.model_kwargs}
    if source.arch != source.config.arch:  # a plain backbone: its activation was not a head's
        config["activation"] = "softmax"
    saved = save_checkpoint(output, source.arch, len(rows.classes), config, model.cpu())
    return PrototypeResult(saved, source.arch, len(rows.classes), len(paths),
                           model.embedding_dim, model.metric)


def _prepare(paths: list[Path], preprocess: Preprocess, labels: Path) -> list[torch.Tensor]:
    """The model inputs of `paths`, decoded and prepared as the kernel does."""
    tensors = []
    for path in paths:
        try:
            image = decode_image(path, *preprocess.decoder)
        except TestSetError as exc:
            raise PrototypeError(f"{exc}; replace the file or remove its row from {labels}"
                                 ) from None
        tensors.append(to_tensor(image, preprocess))
    return tensors


@torch.inference_mode()
def _class_sums(model: PrototypeNet, preprocess: Preprocess, paths: list[Path],
                targets: torch.Tensor, classes: int, batch_size: int, labels: Path,
                progress: bool) -> torch.Tensor:
    """(classes, D) float64 sums of each class's embeddings, one batch of images at a time."""
    device = model.prototypes.device
    sums = torch.zeros(classes, model.embedding_dim, dtype=torch.float64, device=device)
    bounds = [(begin, min(begin + batch_size, len(paths)))
              for begin in range(0, len(paths), batch_size)]
    threads = 2 if device.type == "cuda" else 0  # decode ahead while the GPU embeds
    bar = tqdm(total=len(paths), desc="prototypes", unit="img", file=sys.stderr,
               disable=not progress)
    for (begin, end), tensors in prefetch(
            bounds, lambda span: _prepare(paths[span[0]:span[1]], preprocess, labels), threads):
        # keep_aspect (and some pipelines) give images of several shapes: one pass per shape.
        for rows, batch in same_shape_batches(tensors):
            embeddings = model.embed(batch.to(device))
            if embeddings.ndim != 2 or embeddings.shape[1] != model.embedding_dim:
                raise PrototypeError(f"the backbone gives outputs of shape "
                                     f"{tuple(embeddings.shape)}, not (images, "
                                     f"{model.embedding_dim}): not an embedding model; its head "
                                     "must output the embedding")
            sums.index_add_(0, targets[begin + torch.from_numpy(rows)].to(device),
                            embeddings.double())
        bar.update(end - begin)
    bar.close()
    return sums.cpu()


def _means(sums: torch.Tensor, counts: torch.Tensor, metric: str, chunk: int,
           dtype: torch.dtype) -> torch.Tensor:
    """The prototypes: each class's mean embedding (normalised for cosine), in `dtype`, made one
    class chunk at a time (no second float64 table)."""
    prototypes = torch.empty(sums.shape, dtype=dtype)
    for start in range(0, sums.shape[0], chunk):
        mean = sums[start:start + chunk] / counts[start:start + chunk, None]
        if metric == "cosine":
            mean = torch.nn.functional.normalize(mean, dim=1)
        prototypes[start:start + chunk] = mean.to(dtype)
    return prototypes
