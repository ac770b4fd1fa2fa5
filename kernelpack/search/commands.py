"""The work behind `kernelpack blend search` and `threshold search`: load the OOF set, search,
report, and write the fitted config (the CLI module only parses arguments)."""

from __future__ import annotations

import argparse
import dataclasses

from inference_core.config import SubmissionSection

from ..errors import SearchError
from ..progress import shows_progress
from .blend import blend_probs, search_blend
from .fitted_config import (
    oof_weights,
    read_base,
    with_shifts,
    with_thresholds,
    with_values,
    with_weights,
    write_config,
)
from .metrics import get_metric
from .oof import OofSet, load_oof_set, parse_oof_args
from .report import (
    blend_report,
    chosen_score,
    class_f_scores,
    format_blend_search,
    format_threshold_search,
    threshold_report,
    write_report,
)
from .shifts import format_shift_search, search_shifts, shift_report
from .thresholds import search_thresholds
from .top_k import TopKOofSet, check_top_k_search, is_top_k, load_top_k_set
from .values import format_values, oof_values

VALUE_NOTE = ("value: how much the OOF {metric} worsens without the model (one per fold on a "
              "folds group); the kernel's budget plan keeps the most value per second")


def _load(args: argparse.Namespace, submission: SubmissionSection,
          top_k_allowed: bool = True) -> OofSet | TopKOofSet:
    """The OOF set: dense .npy files, or top-k .npz files (one label per row only)."""
    paths = parse_oof_args(args.oof)
    if is_top_k(paths):
        if not top_k_allowed:
            raise SearchError("--oof: threshold search fits multilabel thresholds, which need "
                              "every class's probability; pass dense .npy OOF files (top-k "
                              ".npz files are for blend search with one label per row)")
        check_top_k_search(get_metric(args.metric), submission)
        return load_top_k_set(paths, args.labels, args.folds, submission.classes)
    return load_oof_set(paths, args.labels, args.folds, submission.classes,
                        submission.format == "multilabel")


def blend_search_command(args: argparse.Namespace) -> int:
    metric = get_metric(args.metric)
    raw, base = read_base(args.base)
    if base is not None:
        submission = base.ensemble.submission
        if args.format and args.format != submission.format:
            raise SearchError(f"--format {args.format}: {args.base} says submission.format "
                              f"{submission.format}; drop --format or change the config")
    else:
        fmt = args.format or ("multilabel" if metric.name == "f2" else "multiclass")
        submission = SubmissionSection(format=fmt)
    mode = args.mode or (base.ensemble.blend if base is not None else "mean")
    oof = _load(args, submission)
    shifts = oof_weights(base.ensemble, oof.names, str(args.base))[1] if base is not None \
        else None
    result = search_blend(oof, metric, mode, submission, shifts, args.restarts, args.seed,
                          progress=shows_progress(args.quiet))
    print(format_blend_search(result))
    report, score, fitted = blend_report(result), result.score, ""
    if args.fit_shifts:
        found = search_shifts(oof, metric, mode, submission, result.weights,
                              {check.fold: check.weights for check in result.folds}, shifts,
                              args.seed, progress=shows_progress(args.quiet))
        print(format_shift_search(found))
        report["shifts"] = shift_report(found)
        shifts, score = found.chosen, found.chosen_score
        fitted = " and threshold shifts"
    if args.report is not None:
        write_report(report, args.report)
    values = oof_values(oof, result.weights, mode, shifts, metric, submission)
    print(format_values(values, metric.name))
    header = (f"blend weights{fitted} fitted by `kernelpack blend search` on {oof.n_rows} "
              f"OOF rows: {metric.name} {score:.4f} ({mode}; equal weights "
              f"{result.equal_score:.4f})\n{VALUE_NOTE.format(metric=metric.name)}")
    config = with_weights(raw, oof.names, result.weights, mode, submission, str(args.base))
    if fitted:
        config = with_shifts(config, oof.names, shifts, str(args.base))
    config = with_values(config, values, str(args.base))
    write_config(config, args.output, header)
    print(f"wrote {args.output}" + ("" if "test" in config else
                                    " (add a test section with test.images before building)"))
    return 0


def threshold_search_command(args: argparse.Namespace) -> int:
    metric = get_metric(args.metric)
    raw, base = read_base(args.base)
    config = base.ensemble
    oof = _load(args, config.submission, top_k_allowed=False)
    weights, shifts = oof_weights(config, oof.names, str(args.base))
    probs = blend_probs(oof.probs, weights, config.blend, shifts)
    result = search_thresholds(probs, oof.truth, oof.folds, metric, config.submission,
                               args.min_support, progress=shows_progress(args.quiet))
    chosen = result.chosen
    support = oof.truth.sum(axis=0)
    scores = class_f_scores(probs, oof.truth, chosen, 2.0 if metric.name == "f2" else 1.0)
    print(format_threshold_search(result, oof.classes, scores, support))
    if args.report is not None:
        write_report(threshold_report(result, oof.classes, scores, support), args.report)
    threshold = list(chosen.threshold) if isinstance(chosen.threshold, tuple) else \
        chosen.threshold
    header = (f"thresholds fitted by `kernelpack threshold search` on {len(oof.truth)} OOF "
              f"rows: {metric.name} {chosen_score(result):.4f} (was "
              f"{result.baseline_score:.4f})\n{VALUE_NOTE.format(metric=metric.name)}")
    fitted = with_thresholds(raw, threshold, chosen.min_labels, chosen.max_labels)
    values = oof_values(oof, weights, config.blend, shifts, metric,
                        dataclasses.replace(config.submission, threshold=chosen.threshold,
                                            min_labels=chosen.min_labels,
                                            max_labels=chosen.max_labels))
    print(format_values(values, metric.name))
    write_config(with_values(fitted, values, str(args.base)), args.output, header)
    print(f"wrote {args.output}")
    return 0


