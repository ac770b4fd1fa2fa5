"""The work behind `kernelpack blend search` and `threshold search`: load the OOF set, search,
report, and write the fitted config (the CLI module only parses arguments)."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from inference_core.config import SubmissionSection

from ..errors import SearchError
from .blend import BlendSearch, blend_probs, search_blend
from .fitted_config import (
    oof_weights,
    read_base,
    with_thresholds,
    with_values,
    with_weights,
    write_config,
)
from .metrics import get_metric
from .oof import OofSet, load_oof_set, parse_oof_args
from .thresholds import Rule, ThresholdSearch, search_thresholds
from .values import format_values, oof_values

VALUE_NOTE = ("value: how much the OOF {metric} worsens without the model (one per fold on a "
              "folds group); the kernel's budget plan keeps the most value per second")


def _load(args: argparse.Namespace, submission: SubmissionSection) -> OofSet:
    return load_oof_set(parse_oof_args(args.oof), args.labels, args.folds,
                        submission.classes, submission.format == "multilabel")


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
    result = search_blend(oof, metric, mode, submission, shifts, args.restarts, args.seed)
    print(format_blend_search(result))
    values = oof_values(oof, result.weights, mode, shifts, metric, submission)
    print(format_values(values, metric.name))
    header = (f"blend weights fitted by `kernelpack blend search` on {len(oof.truth)} OOF rows: "
              f"{metric.name} {result.score:.4f} ({mode}; equal weights "
              f"{result.equal_score:.4f})\n{VALUE_NOTE.format(metric=metric.name)}")
    config = with_weights(raw, oof.names, result.weights, mode, submission, str(args.base))
    config = with_values(config, values, str(args.base))
    write_config(config, args.output, header)
    print(f"wrote {args.output}" + ("" if "test" in config else
                                    " (add a test section with test.images before building)"))
    return 0


def format_blend_search(result: BlendSearch) -> str:
    width = max(len(name) for name in [*result.names, "fitted blend"]) + 2
    lines = [f"{'model':<{width}}{'OOF ' + result.metric:>16}{'weight':>10}"
             f"{'fold spread':>13}"]
    for name, score, weight, spread in zip(result.names, result.single_scores, result.weights,
                                           result.weight_spread, strict=True):
        lines.append(f"{name:<{width}}{score:>16.4f}{weight:>10.4f}{spread:>13.4f}")
    lines.append(f"{'equal weights':<{width}}{result.equal_score:>16.4f}")
    lines.append(f"{'fitted blend':<{width}}{result.score:>16.4f}   ({result.mode})")
    if result.folds:
        lines += ["", f"fit on the other folds, scored on the held-out fold ({result.metric}):",
                  f"{'fold':<6}{'fitted':>10}{'equal':>10}{'best single':>13}   weights"]
        for f in result.folds:
            weights = " ".join(f"{w:.3f}" for w in f.weights)
            lines.append(f"{f.fold:<6}{f.fitted:>10.4f}{f.equal:>10.4f}{f.best_single:>13.4f}"
                         f"   {weights}")
        means = [np.mean([getattr(f, a) for f in result.folds])
                 for a in ("fitted", "equal", "best_single")]
        lines.append(f"{'mean':<6}{means[0]:>10.4f}{means[1]:>10.4f}{means[2]:>13.4f}")
    return "\n".join(lines)


def threshold_search_command(args: argparse.Namespace) -> int:
    metric = get_metric(args.metric)
    raw, base = read_base(args.base)
    config = base.ensemble
    oof = _load(args, config.submission)
    weights, shifts = oof_weights(config, oof.names, str(args.base))
    probs = blend_probs(oof.probs, weights, config.blend, shifts)
    result = search_thresholds(probs, oof.truth, oof.folds, metric, config.submission,
                               args.min_support)
    print(format_threshold_search(result, oof.classes))
    chosen = result.chosen
    threshold = list(chosen.threshold) if isinstance(chosen.threshold, tuple) else \
        chosen.threshold
    header = (f"thresholds fitted by `kernelpack threshold search` on {len(oof.truth)} OOF "
              f"rows: {metric.name} {_chosen_score(result):.4f} (was "
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


def _chosen_score(result: ThresholdSearch) -> float:
    return result.per_class_score if result.chosen is result.per_class_rule else \
        result.global_score


def _describe(rule: Rule) -> str:
    threshold = rule.threshold if not isinstance(rule.threshold, tuple) else \
        "[" + ", ".join(f"{t:.2f}" for t in rule.threshold) + "]"
    return f"threshold {threshold}, min_labels {rule.min_labels}, max_labels {rule.max_labels}"


def format_threshold_search(result: ThresholdSearch, classes: list) -> str:
    rare = [str(c) for c, ok in zip(classes, result.eligible, strict=True) if not ok]
    lines = [f"{'rule':<12}{'OOF ' + result.metric:>12}{'held-out':>11}   settings",
             f"{'config':<12}{result.baseline_score:>12.4f}{result.held_out('baseline'):>11.4f}"
             f"   {_describe(result.baseline)}",
             f"{'global':<12}{result.global_score:>12.4f}{result.held_out('global_'):>11.4f}"
             f"   {_describe(result.global_rule)}",
             f"{'per-class':<12}{result.per_class_score:>12.4f}"
             f"{result.held_out('per_class'):>11.4f}   {_describe(result.per_class_rule)}"]
    if rare:
        lines.append(f"classes below the minimum support keep the global threshold: "
                     f"{', '.join(rare)}")
    kind = "per-class" if result.chosen is result.per_class_rule else "global"
    lines.append(f"chosen: {kind} (held-out = fitted on the other folds, mean over folds)")
    return "\n".join(lines)
