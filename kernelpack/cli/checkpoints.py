"""`kernelpack import-checkpoint`: turn a competitor's weights file into a kernelpack checkpoint."""

from __future__ import annotations

import argparse


def _import_checkpoint(args: argparse.Namespace) -> int:
    from ..weights.import_checkpoint import import_checkpoint

    result = import_checkpoint(args.source, args.output, arch=args.arch,
                               num_classes=args.num_classes, name=args.name, fold=args.fold,
                               config_file=args.config, code=args.code,
                               strip_prefix=args.strip_prefix, trust_pickle=args.trust_pickle)
    if result.left_out:
        shown = ", ".join(result.left_out[:5]) + (", ..." if len(result.left_out) > 5 else "")
        print(f"left out {len(result.left_out)} keys outside --strip-prefix "
              f"{args.strip_prefix!r}: {shown}")
    fold = f" fold {result.config.fold}" if result.config.fold is not None else ""
    print(f"wrote {result.path}: {result.config.name!r}{fold} ({result.config.arch}, "
          f"{result.config.num_classes} classes; {result.tensors} tensors from a "
          f"{result.source_format}; forward pass on {list(result.input_shape)} ok)")
    versions = result.config.versions or {}
    print("recorded versions (the kernel warns where its own differ): "
          + ", ".join(f"{package} {version}" for package, version in sorted(versions.items())))
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "import-checkpoint",
        help="convert a weights file (state dict, Lightning .ckpt, [arch, state_dict], "
             ".safetensors, pickled model) into a kernelpack checkpoint",
        description="Build ARCH, load the weights of SRC into it strictly, run one forward pass "
                    "on a dummy batch, and write a kernelpack checkpoint (loadable with "
                    "weights_only=True) to DST.")
    command.add_argument("source", metavar="SRC", help="the weights file to import")
    command.add_argument("-o", "--output", required=True, metavar="DST.pt",
                         help="the kernelpack checkpoint to write")
    command.add_argument("--arch", required=True,
                         help="architecture: a registry name, timm.<name> or "
                              "package.module:callable")
    command.add_argument("--num-classes", required=True, type=int, metavar="N",
                         help="outputs of the classification head")
    command.add_argument("--name", required=True, help="the model's name in the ensemble config")
    command.add_argument("--fold", type=int, default=None, metavar="K", help="its CV fold")
    command.add_argument("--config", default=None, metavar="FILE.json|FILE.yml",
                         help="the rest of the checkpoint config: input_size, resize, mean, std, "
                              "preprocess, activation, classes, model_kwargs")
    command.add_argument("--code", action="append", default=[], metavar="PATH",
                         help="your own package folder or module file (repeatable), imported "
                              "first so its architectures exist")
    command.add_argument("--strip-prefix", default=None, metavar="PREFIX",
                         help="take only the keys under PREFIX, without it (e.g. 'model.' for "
                              "Lightning, 'module.' for DataParallel)")
    command.add_argument("--trust-pickle", action="store_true",
                         help="allow a pickled model (torch.save(model)); unpickling runs code "
                              "from the file, so use it only for files you trust")
    command.set_defaults(handler=_import_checkpoint)
