"""Very wide outputs: a prototype-network head, scored in class chunks.

As in the Herbarium 2020 solutions (32k classes): a backbone maps an image to an L2-normalised
embedding, and a class's score is the cosine similarity to its prototype (the normalised mean
embedding of its training images), times a temperature `scale`. Scores are computed chunk by
chunk over the classes, so no intermediate larger than images x chunk is ever made, and
`topk_by_chunks` finds the best classes without materialising the images x classes matrix.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from .archs.small_cnn import SmallCNN
from .registry import register_model

DEFAULT_CLASS_CHUNK = 8192


def class_scores(embeddings: torch.Tensor, prototypes: torch.Tensor, scale: float,
                 chunk: int = DEFAULT_CLASS_CHUNK) -> torch.Tensor:
    """(N, C) scaled cosine similarities, filled one class chunk at a time."""
    out = embeddings.new_empty((embeddings.shape[0], prototypes.shape[0]))
    for start in range(0, prototypes.shape[0], chunk):
        block = functional.normalize(prototypes[start:start + chunk], dim=1)
        out[:, start:start + chunk] = scale * embeddings @ block.T
    return out


def topk_by_chunks(embeddings: torch.Tensor, prototypes: torch.Tensor, k: int, scale: float,
                   chunk: int = DEFAULT_CLASS_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (scores, class indices) per row, keeping only N x (k + chunk) scores at a time."""
    best_scores = embeddings.new_full((embeddings.shape[0], 0), float("-inf"))
    best_index = torch.empty((embeddings.shape[0], 0), dtype=torch.long,
                             device=embeddings.device)
    for start in range(0, prototypes.shape[0], chunk):
        block = functional.normalize(prototypes[start:start + chunk], dim=1)
        scores = torch.cat([best_scores, scale * embeddings @ block.T], dim=1)
        index = torch.cat([best_index, torch.arange(start, start + block.shape[0],
                                                    device=embeddings.device)
                           .expand(embeddings.shape[0], -1)], dim=1)
        best_scores, picked = scores.topk(min(k, scores.shape[1]), dim=1)
        best_index = index.gather(1, picked)
    return best_scores, best_index


class PrototypeNet(nn.Module):
    """Backbone -> normalised embedding -> scaled cosine similarity to every class prototype."""

    def __init__(self, backbone: nn.Module, embedding_dim: int, num_classes: int,
                 scale: float = 16.0, class_chunk: int = DEFAULT_CLASS_CHUNK) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("prototypes", torch.zeros(num_classes, embedding_dim))
        self.scale = scale
        self.class_chunk = class_chunk

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return functional.normalize(self.backbone(x).float(), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return class_scores(self.embed(x), self.prototypes, self.scale, self.class_chunk)


@register_model("prototype_cnn")
def prototype_cnn(num_classes: int, width: int = 32, embedding_dim: int = 64) -> nn.Module:
    # SmallCNN's head becomes the embedding layer.
    return PrototypeNet(SmallCNN(embedding_dim, width=width), embedding_dim, num_classes)
