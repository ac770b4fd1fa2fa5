"""`kernelpack blend search` and `kernelpack threshold search`: arguments in, a report and a fitted
ensemble YAML out; the work is in `kernelpack.search` (imported when a command runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from inference_core.config import BLEND_MODES

from .numbers import int_at_least

# Each restart is a whole Nelder-Mead run (with a progress bar); beyond this a value is a typo.
MAX_RESTARTS = 1000

# The formats a search without --base can fit for: one label per row, or a set of labels.
SEARCHABLE_FORMATS = ("multiclass", "multilabel")

# The names of `kernelpack.search.metrics.METRICS`, here so that --help needs no numpy.
METRIC_NAMES = ("accuracy", "macro_f1", "f2", "logloss")


def _add_oof_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--oof", action="append", required=True, metavar="NAME=PATH.npy",
                        help="one model's out-of-fold probabilities (rows x classes, in the "
                             "order of LABELS.csv); repeat for every model. For very wide "
                             "outputs, PATH.npz: each row's top k (indices, probabilities, "
                             "num_classes), one label per row")
    parser.add_argument("--labels", type=Path, required=True, metavar="LABELS.csv",
                        help="columns id and label (multilabel: space-separated labels)")
    parser.add_argument("--folds", type=Path, required=True, metavar="FOLDS",
                        help="each row's fold index: .npy or a one-column CSV")
    parser.add_argument("-o", "--output", type=Path, required=True, help="fitted ensemble YAML")
    parser.add_argument("--report", type=Path, default=None, metavar="FILE.json",
                        help="also write the whole report (every class, fold and score) as "
                             "JSON; the printed one summarises wide outputs")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar (one shows on a terminal once a search runs "
                             "for a few seconds)")


def _blend_search(args: argparse.Namespace) -> int:
    from ..search.commands import blend_search_command

    return blend_search_command(args)


def _threshold_search(args: argparse.Namespace) -> int:
    from ..search.commands import threshold_search_command

    return threshold_search_command(args)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """`kernelpack blend search` and `kernelpack threshold search`."""
    blend = commands.add_parser("blend", help="fit blend weights on out-of-fold predictions")
    blend_commands = blend.add_subparsers(dest="blend_command", required=True, metavar="ACTION")
    search = blend_commands.add_parser(
        "search", help="fit weights on the simplex and write an ensemble YAML",
        description="Fit blend weights (>= 0, sum 1) on out-of-fold predictions with "
                    "scipy.optimize and restarts, report them fold by fold, and write them "
                    "into an ensemble YAML for kernelpack build.")
    _add_oof_arguments(search)
    search.add_argument("--metric", required=True, help=f"one of {', '.join(METRIC_NAMES)}")
    search.add_argument("--mode", choices=BLEND_MODES, default=None,
                        help="blend mode (default: the base config's, else mean)")
    search.add_argument("--base", type=Path, default=None, metavar="ENSEMBLE.yml",
                        help="config to fill in (test paths, submission, models NAME or "
                             "NAME_f<k>); without it the output lists one model per --oof")
    search.add_argument("--format", choices=SEARCHABLE_FORMATS, default=None,
                        help="submission format without --base (default: multilabel for f2, "
                             "else multiclass)")
    search.add_argument("--restarts", type=int_at_least(1, MAX_RESTARTS), default=8,
                        help="optimiser starts: equal weights, then random simplex points "
                             f"(at most {MAX_RESTARTS})")
    search.add_argument("--seed", type=int_at_least(0), default=0,
                        help="seed of the random starts (>= 0)")
    search.add_argument("--fit-shifts", action="store_true",
                        help="after the weights, fit each model's threshold_shift (all folds "
                             "of one --oof name share one), check it by fold, and write it "
                             "when it also wins on the held-out folds")
    search.set_defaults(handler=_blend_search)

    threshold = commands.add_parser("threshold", help="fit multilabel thresholds on OOF")
    threshold_commands = threshold.add_subparsers(dest="threshold_command", required=True,
                                                  metavar="ACTION")
    search = threshold_commands.add_parser(
        "search", help="fit global / per-class thresholds and min/max labels",
        description="Blend the OOF predictions as the --base config says, fit a global "
                    "threshold with min/max labels and per-class thresholds, check both on "
                    "held-out folds, and write the winner into a copy of the config.")
    _add_oof_arguments(search)
    search.add_argument("--base", type=Path, required=True, metavar="ENSEMBLE.yml",
                        help="the config to blend by and fill in (e.g. from blend search)")
    search.add_argument("--metric", default="f2",
                        help="f2 (default), macro_f1 or accuracy, on the labels written")
    search.add_argument("--min-support", type=int, default=20,
                        help="positive OOF rows a class needs for its own threshold")
    search.set_defaults(handler=_threshold_search)
