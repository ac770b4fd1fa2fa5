"""`kernelpack predict`: run the kernel's runtime on the host and write (or check) its blend; the
work is in `kernelpack.weights.predict` (imported when the command runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..progress import shows_progress
from .numbers import finite_float, int_at_least

DEFAULT_TOLERANCE = 1e-4  # of --compare: float32 models on another machine agree to ~1e-6


def _predict(args: argparse.Namespace) -> int:
    from inference_core.kpenc import load_key

    from ..config import load_config
    from ..errors import PredictError
    from ..kernel.user_code import import_user_code
    from ..weights.predict import (
        check_prediction_outputs,
        compare_predictions,
        predict_images,
        write_predictions,
    )

    if args.top_k is not None and args.output.suffix != ".npz":
        raise PredictError(f"-o {args.output}: --top-k writes top-k .npz files (indices, "
                           "probabilities, num_classes); name the output PREDS.npz")
    if args.top_k is not None and args.compare is not None:
        raise PredictError(f"--compare {args.compare}: compares every class of the blend; run "
                           "it without --top-k")
    if args.folds is not None and not args.per_model:
        raise PredictError(f"--folds {args.folds}: out-of-fold files come with --per-model; add "
                           "--per-model, or drop --folds")
    config = load_config(args.config)
    check_prediction_outputs(args.output, [entry.name for entry in config.ensemble.models]
                             if args.per_model else None,
                             [args.config, args.sample, args.compare, args.folds, args.key])
    import_user_code([args.config.parent / path for path in config.kernel.code]
                     + list(args.code))
    prediction = predict_images(config.ensemble, args.images, args.sample, args.models,
                                key=load_key(args.key) if args.key else None,
                                per_model=args.per_model, folds=args.folds,
                                progress=shows_progress(args.quiet),
                                log=(lambda _: None) if args.quiet else print,
                                top_k=args.top_k)
    written = write_predictions(prediction, args.output)
    kept = "" if args.top_k is None else f", the top {min(args.top_k, len(prediction.classes))}"
    print(f"wrote {written[0]} ({len(prediction.ids)} rows x {len(prediction.classes)} classes"
          f"{kept})")
    for group, path in zip(prediction.per_group, written[1:], strict=True):
        print(f"wrote {path} (blend search: --oof {group}={path})")
    if args.compare is None:
        return 0
    result = compare_predictions(prediction.probs, args.compare)
    if prediction.drift:  # beside the difference it may explain, even with --quiet
        print(prediction.drift)
    where = (f"row {result.row} (id {prediction.ids[result.row]}), class "
             f"{prediction.classes[result.column]}")
    if result.within(args.tolerance):
        print(f"matches {args.compare}: max |difference| {result.max_difference:.3g} at {where}"
              f", within the tolerance {args.tolerance:g}")
        return 0
    print(f"kernelpack: predictions differ from {args.compare}: max |difference| "
          f"{result.max_difference:.3g} at {where}, above the tolerance {args.tolerance:g}; "
          "check the preprocessing (resize, interpolation, mean/std, channel order), TTA and "
          "blend settings against your own inference", file=sys.stderr)
    return 1


def add_commands(commands: argparse._SubParsersAction) -> None:
    """`kernelpack predict`."""
    predict = commands.add_parser(
        "predict", help="run the kernel's runtime on the host and write the blend as .npy",
        description="Find the config's models, preprocess, run every TTA view of every model "
                    "and blend them exactly as the kernel does, without a time budget; write "
                    "the blended probabilities (one row per image) as .npy, and optionally "
                    "check them against your own predictions.")
    predict.add_argument("config", type=Path, help="ensemble YAML")
    predict.add_argument("--images", type=Path, required=True, metavar="DIR",
                         help="folder of images (matched by test.pattern without --sample)")
    predict.add_argument("--sample", type=Path, default=None, metavar="CSV",
                         help="sample submission whose id column gives the rows and their order "
                              "(default: the images, sorted by name)")
    predict.add_argument("--models", type=Path, action="append", default=[], metavar="DIR",
                         help="where to find the checkpoints (repeatable; searched "
                              "recursively); default: the config's input_roots")
    predict.add_argument("-o", "--output", type=Path, required=True, metavar="PREDS.npy",
                         help="the blended probabilities, rows x classes")
    predict.add_argument("--per-model", action="store_true",
                         help="also write PREDS.<name>.npy for each config entry (a folds "
                              "group's folds blended together), for blend search --oof")
    predict.add_argument("--folds", type=Path, default=None, metavar="FOLDS",
                         help="with --per-model: each row's fold (.npy or one-column CSV, as "
                              "for blend search); a folds group's file then holds out-of-fold "
                              "predictions, each row from the fold model that held it out")
    predict.add_argument("--top-k", type=int_at_least(1), default=None, metavar="K",
                         help="keep each row's K best classes only: the blend and the "
                              "--per-model files are written as top-k .npz (indices, "
                              "probabilities, num_classes), memory rows x K; for very wide "
                              "outputs (blend search takes them as --oof NAME=FILE.npz)")
    predict.add_argument("--compare", type=Path, default=None, metavar="REF.npy",
                         help="your own predictions of the same rows: print the largest "
                              "difference and exit 1 above --tolerance")
    predict.add_argument("--tolerance", type=finite_float(0.0), default=DEFAULT_TOLERANCE,
                         help=f"largest absolute difference accepted (default "
                              f"{DEFAULT_TOLERANCE:g})")
    predict.add_argument("--code", action="append", default=[], metavar="PATH",
                         help="your own package folder or module file, imported first "
                              "(repeatable; kernel.code of the config is imported too)")
    predict.add_argument("--key", default=None, metavar="KEYFILE",
                         help="key file, to decrypt .kpenc models in memory")
    predict.add_argument("--quiet", action="store_true", help="no log lines, no progress bar")
    predict.set_defaults(handler=_predict)
