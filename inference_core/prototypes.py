"""Very wide outputs: prototype-network heads on any backbone, scored in class chunks.

As in the Herbarium 2020 solutions (32k classes): a backbone maps an image to an embedding, each
class has one prototype vector (the mean embedding of its training images, stored in the
checkpoint as the `prototypes` buffer), and a class's logit is

    cosine:       cos(e, p) / temperature           (e and p L2-normalised)
    sqeuclidean:  -||e - p||^2 / temperature        (prototypical networks)

so a softmax over a full row gives the class probabilities. `arch: prototype:<backbone>` builds
the backbone (any arch `create_model` knows) with `num_classes = embedding_dim`: its head is the
embedding layer. Scores are always computed in float32 (autocast off, fp16 prototypes cast per
chunk) and one class chunk at a time: no intermediate larger than images x chunk (never an
images x classes x dim tensor) is made. docs/prototypes.md has the checkpoint keys.
"""

from __future__ import annotations

import math

import torch
from torch import fx, nn
from torch.nn import functional

from .archs.small_cnn import SmallCNN
from .class_chunks import class_slices
from .config import DEFAULT_CLASS_CHUNK, MIN_PROTOTYPE_TEMPERATURE, PROTOTYPE_METRICS
from .errors import ConfigError
from .registry import register_model

# model_kwargs the prototype head takes; every other key goes to the backbone.
HEAD_KWARGS = ("embedding_dim", "metric", "temperature", "class_chunk")


def _class_norms(prototypes: torch.Tensor, metric: str) -> torch.Tensor:
    """Per class, what scoring needs besides the prototype: 1 / ||p|| (cosine) or ||p||^2
    (sqeuclidean), in float32. Kept per class, not as a float32 copy of the prototypes."""
    with torch.autocast(prototypes.device.type, enabled=False):
        squared = prototypes.float().square().sum(1)
        return squared.sqrt().clamp(min=1e-12).reciprocal() if metric == "cosine" else squared


def _logits(embeddings: torch.Tensor, prototypes: torch.Tensor, norms: torch.Tensor,
            metric: str, temperature: float) -> torch.Tensor:
    """(N, P) float32 logits of `embeddings` (N, D) against `prototypes` (P, D), whose
    `_class_norms` are `norms`."""
    # fp32 even under the kernel's fp16 autocast: -||e||^2 + 2 e.p - ||p||^2 cancels badly in
    # fp16, and 32k-way softmaxes need more than fp16's 3 digits.
    with torch.autocast(embeddings.device.type, enabled=False):
        embeddings, prototypes = embeddings.float(), prototypes.float()
        if metric == "cosine":  # e is normalised by `embed`; p by its norm, on the product
            return (embeddings @ prototypes.T).mul_(norms / temperature)
        # -||e - p||^2 = 2 e.p - ||p||^2 - ||e||^2 in one matrix product, so that no
        # N x P x D difference tensor is made; clamped at 0 where rounding crosses it.
        scores = torch.addmm(norms.neg()[None, :], embeddings, prototypes.T, alpha=2.0)
        scores.sub_((embeddings * embeddings).sum(1, keepdim=True))
        return scores.clamp_(max=0.0).div_(temperature)


def _all_logits(embeddings: torch.Tensor, prototypes: torch.Tensor, metric: str,
                temperature: float, chunk: int) -> torch.Tensor:
    """(N, C) logits for every class, filled one class chunk at a time."""
    norms = _class_norms(prototypes, metric)
    out = embeddings.new_empty((embeddings.shape[0], prototypes.shape[0]), dtype=torch.float32)
    for columns in class_slices(prototypes.shape[0], chunk):
        out[:, columns] = _logits(embeddings, prototypes[columns], norms[columns], metric,
                                  temperature)
    return out


# torch.fx (the runtime's BatchNorm folding traces the whole model) keeps this call as one node,
# run as written: tracing through it would drop the autocast switch and unroll the chunk loop.
fx.wrap("_all_logits")


class PrototypeNet(nn.Module):
    """Backbone -> embedding -> a logit per class from its distance to the class prototype.

    The runtime scores wide models in class chunks through `embed` and `class_scores`;
    `forward` is both, for all classes."""

    def __init__(self, backbone: nn.Module, embedding_dim: int, num_classes: int,
                 metric: str = "cosine", temperature: float = 1.0,
                 class_chunk: int = DEFAULT_CLASS_CHUNK) -> None:
        super().__init__()
        check_head(embedding_dim, metric, temperature, class_chunk)
        self.backbone = backbone
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.metric = metric
        self.temperature = float(temperature)
        self.class_chunk = class_chunk
        # Saved with the weights; a checkpoint may hold it in fp16 (load_state_dict casts it).
        self.register_buffer("prototypes", torch.zeros(num_classes, embedding_dim))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) float32 embeddings, L2-normalised for the cosine metric."""
        embeddings = self.backbone(x).float()
        return functional.normalize(embeddings, dim=1) if self.metric == "cosine" else embeddings

    def class_scores(self, embeddings: torch.Tensor, start: int = 0, stop: int | None = None
                     ) -> torch.Tensor:
        """(N, stop - start) float32 logits of classes start:stop, temperature applied."""
        stop = self.num_classes if stop is None else stop
        if not 0 <= start <= stop <= self.num_classes:
            raise ValueError(f"class range {start}:{stop} is outside 0:{self.num_classes}")
        norms = self._norms()[start:stop]
        return _logits(embeddings, self.prototypes[start:stop], norms, self.metric,
                       self.temperature)

    def _norms(self) -> torch.Tensor:
        """`_class_norms`, kept until the buffer changes (a new tensor, an in-place write, a
        move): the runtime scores a few thousand classes at a time, batch after batch."""
        buffer = self.prototypes
        key = (buffer.data_ptr(), buffer._version, buffer.device, buffer.dtype, self.metric)
        if getattr(self, "_norms_key", None) != key:
            self._norms_cache, self._norms_key = _class_norms(buffer, self.metric), key
        return self._norms_cache

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _all_logits(self.embed(x), self.prototypes, self.metric, self.temperature,
                           self.class_chunk)


def check_head(embedding_dim, metric, temperature, class_chunk) -> None:
    """ConfigError (one line: the model_kwargs key, the value, the fix) for a bad head setting."""
    if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 1:
        raise ConfigError(f"model_kwargs.embedding_dim must be a positive int (the backbone's "
                          f"output width), got {embedding_dim!r}")
    if metric not in PROTOTYPE_METRICS:
        raise ConfigError(f"model_kwargs.metric must be one of {', '.join(PROTOTYPE_METRICS)}, got "
                          f"{metric!r}")
    if (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
            or not math.isfinite(temperature) or temperature < MIN_PROTOTYPE_TEMPERATURE):
        raise ConfigError(f"model_kwargs.temperature must be a number of at least "
                          f"{MIN_PROTOTYPE_TEMPERATURE:g} (logits are scores / temperature; a "
                          f"smaller one overflows them into NaN), got {temperature!r}")
    if isinstance(class_chunk, bool) or not isinstance(class_chunk, int) or class_chunk < 1:
        raise ConfigError(f"model_kwargs.class_chunk must be a positive int, got "
                          f"{class_chunk!r}")


@register_model("prototype_cnn")
def prototype_cnn(num_classes: int, width: int = 32, embedding_dim: int = 64,
                  metric: str = "cosine", temperature: float = 1.0 / 16) -> nn.Module:
    # The demo's SmallCNN, whose head becomes the embedding layer.
    return PrototypeNet(SmallCNN(embedding_dim, width=width), embedding_dim, num_classes,
                        metric, temperature)
