"""What the searches print, a screenful at any width, and `--report FILE.json`, everything in full.

At 1,103 or 32,000 classes a threshold per class does not fit a line: the printed report gives
their quantiles, how many classes kept the global threshold, and the worst classes by their own
F-score under the chosen rule; the JSON report lists every threshold, class and fold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from inference_core.files import atomic_write

from .blend import CHUNK_ROWS, BlendSearch
from .fast_rule import rule_mask
from .thresholds import Rule, ThresholdSearch

# Up to this many classes the report lists every threshold and every rare class.
LISTED_CLASSES = 20
# The worst classes printed.
WORST_SHOWN = 5
QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


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


def chosen_score(result: ThresholdSearch) -> float:
    return result.per_class_score if result.chosen is result.per_class_rule else \
        result.global_score


def _describe(rule: Rule) -> str:
    counts = f"min_labels {rule.min_labels}, max_labels {rule.max_labels}"
    if not isinstance(rule.threshold, tuple):
        return f"threshold {rule.threshold}, {counts}"
    if len(rule.threshold) <= LISTED_CLASSES:
        return "threshold [" + ", ".join(f"{t:.2f}" for t in rule.threshold) + f"], {counts}"
    spread = np.quantile(rule.threshold, QUANTILES)
    return (f"{len(rule.threshold)} thresholds (min {spread[0]:.2f}, quartiles {spread[1]:.2f} "
            f"{spread[2]:.2f} {spread[3]:.2f}, max {spread[4]:.2f}), {counts}")


def class_f_scores(probs: np.ndarray, truth: np.ndarray, rule: Rule, beta: float
                   ) -> np.ndarray:
    """Each class's F-beta over the OOF rows under `rule` (1 for a class never true nor
    labelled)."""
    tp = np.zeros(truth.shape[1])
    labelled = np.zeros(truth.shape[1])
    for start in range(0, len(truth), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        mask = rule_mask(np.asarray(probs[rows], dtype=np.float64), rule.threshold,
                         rule.min_labels, rule.max_labels)
        tp += (mask & truth[rows]).sum(axis=0)
        labelled += mask.sum(axis=0)
    b2 = beta * beta
    numerator = (1 + b2) * tp
    denominator = numerator + b2 * (truth.sum(axis=0) - tp) + (labelled - tp)
    return np.divide(numerator, denominator, out=np.ones_like(numerator),
                     where=denominator > 0)


def format_threshold_search(result: ThresholdSearch, classes: list,
                            class_scores: np.ndarray | None = None,
                            support: np.ndarray | None = None) -> str:
    """The rules' scores; with `class_scores` (per class, under the chosen rule) and `support`
    (true rows per class), the worst classes."""
    rare = [str(c) for c, ok in zip(classes, result.eligible, strict=True) if not ok]
    lines = [f"{'rule':<12}{'OOF ' + result.metric:>12}{'held-out':>11}   settings",
             f"{'config':<12}{result.baseline_score:>12.4f}{result.held_out('baseline'):>11.4f}"
             f"   {_describe(result.baseline)}",
             f"{'global':<12}{result.global_score:>12.4f}{result.held_out('global_'):>11.4f}"
             f"   {_describe(result.global_rule)}",
             f"{'per-class':<12}{result.per_class_score:>12.4f}"
             f"{result.held_out('per_class'):>11.4f}   {_describe(result.per_class_rule)}"]
    if rare and len(rare) <= LISTED_CLASSES:
        lines.append(f"classes below the minimum support keep the global threshold: "
                     f"{', '.join(rare)}")
    elif rare:
        lines.append(f"{len(rare)} of {len(classes)} classes are below the minimum support and "
                     f"keep the global threshold (first: {', '.join(rare[:5])})")
    per_class = result.per_class_rule.threshold
    if isinstance(per_class, tuple) and len(per_class) > LISTED_CLASSES:
        moved = int(np.sum(np.asarray(per_class) != result.global_rule.threshold))
        lines.append(f"{moved} classes moved off the global threshold "
                     f"{result.global_rule.threshold}; "
                     f"{len(per_class) - moved} kept it")
    if class_scores is not None and len(classes) > LISTED_CLASSES:
        seen = np.flatnonzero(support > 0)
        worst = seen[np.argsort(class_scores[seen], kind="stable")[:WORST_SHOWN]]
        lines.append("worst classes under the chosen rule (F-score, true rows): " + ", ".join(
            f"{classes[c]} {class_scores[c]:.3f} ({int(support[c])})" for c in worst))
    kind = "per-class" if result.chosen is result.per_class_rule else "global"
    lines.append(f"chosen: {kind} (held-out = fitted on the other folds, mean over folds)")
    return "\n".join(lines)


def _rule_json(rule: Rule) -> dict:
    threshold = list(rule.threshold) if isinstance(rule.threshold, tuple) else rule.threshold
    return {"threshold": threshold, "min_labels": rule.min_labels,
            "max_labels": rule.max_labels}


def blend_report(result: BlendSearch) -> dict:
    return {"search": "blend", "metric": result.metric, "mode": result.mode,
            "score": result.score, "equal_score": result.equal_score,
            "models": [{"name": n, "weight": float(w), "single_score": s,
                        "fold_spread": float(d)}
                       for n, w, s, d in zip(result.names, result.weights, result.single_scores,
                                             result.weight_spread, strict=True)],
            "folds": [{"fold": f.fold, "weights": [float(w) for w in f.weights],
                       "fitted": f.fitted, "equal": f.equal, "best_single": f.best_single}
                      for f in result.folds]}


def threshold_report(result: ThresholdSearch, classes: list, class_scores: np.ndarray,
                     support: np.ndarray) -> dict:
    kind = "per_class" if result.chosen is result.per_class_rule else "global"
    return {"search": "threshold", "metric": result.metric, "chosen": kind,
            "rules": {name: {**_rule_json(rule), "score": score,
                             "held_out": result.held_out(attribute)}
                      for name, rule, score, attribute in (
                          ("config", result.baseline, result.baseline_score, "baseline"),
                          ("global", result.global_rule, result.global_score, "global_"),
                          ("per_class", result.per_class_rule, result.per_class_score,
                           "per_class"))},
            "classes": [{"class": str(c), "support": int(n), "own_threshold": bool(ok),
                         "f_score": float(f)}
                        for c, n, ok, f in zip(classes, support, result.eligible, class_scores,
                                               strict=True)],
            "folds": [{"fold": f.fold, "config": f.baseline, "global": f.global_,
                       "per_class": f.per_class} for f in result.folds]}


def write_report(report: dict, path: Path) -> None:
    with atomic_write(path, "w") as handle:
        json.dump(report, handle, indent=1)
        handle.write("\n")
