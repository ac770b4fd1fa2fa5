"""`kernelpack prototypes`: class prototypes from training images, written into a kernel-ready
checkpoint; the work is in `kernelpack.weights.prototypes` (imported when the command runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from inference_core.config import (
    DEFAULT_CLASS_CHUNK,
    MIN_PROTOTYPE_TEMPERATURE,
    PROTOTYPE_METRICS,
)

from ..progress import shows_progress
from .numbers import finite_float, int_at_least


def _prototypes(args: argparse.Namespace) -> int:
    from ..kernel.user_code import import_user_code
    from ..weights.prototypes import build_prototypes

    import_user_code(args.code)
    result = build_prototypes(
        args.checkpoint, args.images, args.labels, args.output, id_column=args.id_column,
        label_column=args.label_column, extension=args.extension, batch_size=args.batch_size,
        class_chunk=args.class_chunk, metric=args.metric, temperature=args.temperature,
        dtype=args.dtype, progress=shows_progress(args.quiet))
    print(f"wrote {result.path}: {result.arch}, {result.classes} class prototypes "
          f"({result.embedding_dim}-d, {result.metric}) from {result.images} images")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """`kernelpack prototypes`."""
    parser = commands.add_parser(
        "prototypes", help="build class prototypes from training images into a checkpoint",
        description="Embed the training images listed in --labels with the checkpoint's own "
                    "preprocessing and model, average the embeddings per class (running sums, "
                    "one batch at a time) and write a kernel-ready prototype checkpoint: the "
                    "prototypes buffer, the classes, and arch prototype:<backbone>.")
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="CKPT",
                        help="the embedding model: a plain backbone checkpoint (num_classes = "
                             "embedding size, no classes) or a prototype:<backbone> one")
    parser.add_argument("--images", type=Path, required=True, metavar="DIR",
                        help="folder of the training images")
    parser.add_argument("--labels", type=Path, required=True, metavar="CSV",
                        help="one row per training image: its id and its label")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.pt",
                        help="the checkpoint with prototypes to write")
    parser.add_argument("--id-column", default="id", help="image id column (default: id)")
    parser.add_argument("--label-column", default="label",
                        help="label column (default: label)")
    parser.add_argument("--extension", default=".png",
                        help="appended to an id that names no file (default: .png)")
    parser.add_argument("--metric", choices=PROTOTYPE_METRICS, default=None,
                        help="distance of the head (default: the checkpoint's, else cosine)")
    parser.add_argument("--temperature", type=finite_float(MIN_PROTOTYPE_TEMPERATURE),
                        default=None,
                        help="logits = scores / temperature (default: the checkpoint's, else 1)")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="of the stored prototypes (default: float32; scores are float32 "
                             "either way)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=64,
                        help="images embedded at once (default: 64)")
    parser.add_argument("--class-chunk", type=int_at_least(1), default=DEFAULT_CLASS_CHUNK,
                        help=f"classes averaged at once (default: {DEFAULT_CLASS_CHUNK})")
    parser.add_argument("--code", action="append", default=[], type=Path, metavar="PATH",
                        help="your own package folder or module file that defines the backbone "
                             "(repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_prototypes)
