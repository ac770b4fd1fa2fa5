"""The end-to-end demo (`make demo`): a real little competition, from images to a scored kernel.

Stages: make the digits competitions -> train archs x folds on CPU, and the example's own model
(`own_model/digitnet`, albumentations + cv2, Lightning-style checkpoints) brought in with
`kernelpack import-checkpoint` -> the digits OOF predictions made by the kernel's own code
(`kernelpack predict`, checked against the user's own validation output with `--compare`) -> fit
the blend weights (and, for the multilabel attributes, the thresholds) on the out-of-fold
predictions with `kernelpack blend search` / `kernelpack threshold search` -> `kernelpack build`
-> `kernelpack run-local` (offline sandbox) -> score the submissions against the held-back
labels, beside each single model, each architecture and the equal-weight blend, all run through
the same runtime -> the Kaggle loop against the local Kaggle service (`kaggle_loop`): encrypt,
push the weights as a Kaggle Model, push the kernel as a notebook, submit it to the digits code
competition, and compare the service's score with the offline one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from examples.digits.kaggle_loop import KaggleLoop, run_kaggle_loop
from examples.digits.prepare import ATTRIBUTES, make_competition
from examples.digits.train import (
    DEFAULT_ARCHS,
    DEFAULT_EPOCHS,
    TrainedModel,
    model_stem,
    oof_filename,
    train_ensemble,
)
from examples.digits.train_own import ARCH as OWN_ARCH
from examples.digits.train_own import PACKAGE as OWN_PACKAGE
from examples.digits.train_own import STEM as OWN_STEM
from examples.digits.train_own import OwnTraining, train_own
from inference_core.config import EnsembleConfig
from inference_core.runner import run_kernel
from kernelpack import cli
from kernelpack.config import load_config
from kernelpack.kernel.sandbox import run_local
from kernelpack.kernel.user_code import import_user_code
from kernelpack.search.blend import blend_probs
from kernelpack.search.fitted_config import oof_weights
from kernelpack.search.metrics import accuracy, f2, label_mask
from kernelpack.search.oof import truth_mask

COMPETITION = "digits"
ATTRIBUTES_COMPETITION = "digits-attributes"
FITTED = "blend, fitted (kernel.py)"
AT_HALF = "blend, threshold 0.5"
SEARCHED = "blend, searched (kernel.py)"
Log = Callable[[str], None]


@dataclass
class Row:
    """One line of a score table; `oof` is None where there is no out-of-fold prediction."""

    name: str
    weight: float | None
    oof: float | None
    test: float


@dataclass
class Table:
    title: str
    metric: str
    rows: list[Row]

    def test(self, name: str) -> float:
        return next(row.test for row in self.rows if row.name == name)


@dataclass
class DemoReport:
    digits: Table
    attributes: Table
    best_single: float  # the best single model's held-back accuracy
    blend_accuracy: float  # the fitted blend's, from kernel.py run offline
    f2_default: float  # held-back F2 of the attributes blend at threshold 0.5
    f2_searched: float  # ... and with the searched thresholds, from kernel.py run offline
    kaggle: KaggleLoop | None = None  # the fitted blend pushed, run and scored by the service
    stages: dict[str, float] = field(default_factory=dict)
    submissions: dict[str, Path] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        # The service reruns the same kernel (as a notebook) on the same test set: same score.
        same = self.kaggle is None or self.kaggle.agrees_with(self.blend_accuracy)
        return (self.blend_accuracy >= self.best_single and self.f2_searched > self.f2_default
                and same)


def base_config(trained: Sequence[TrainedModel], competition: str, dataset: str,
                submission: dict, blend: str) -> dict:
    """The ensemble YAML before fitting: every trained model, equal weights."""
    return {
        "models": [{"name": m.name, "path": f"{dataset}/{m.path.name}", "weight": 1.0}
                   for m in trained],
        "test": {"images": f"{competition}/test",
                 "sample_submission": f"{competition}/sample_submission.csv"},
        "submission": {"id_column": "id", "label_column": "label", **submission},
        "blend": blend,
        "tta": ["identity"],  # digits are not flip-symmetric
        "batch_size": 64,
        "kernel": {"id": f"your-username/{competition}-ensemble",
                   "competition_sources": [competition],
                   "dataset_sources": [f"your-username/{dataset}"]},
    }


def score_submission(submission: Path, labels: Path, classes: Sequence, multilabel: bool
                     ) -> float:
    """Held-back accuracy (multiclass) or sample-averaged F2 (multilabel) of a submission."""
    truth = pd.read_csv(labels, dtype=str, keep_default_na=False)
    predicted = pd.read_csv(submission, dtype=str, keep_default_na=False)
    merged = truth.merge(predicted, on="id", how="left", suffixes=("", "_pred"),
                         indicator=True)
    if (merged["_merge"] != "both").any():
        raise ValueError(f"{submission} misses {int((merged['_merge'] != 'both').sum())} "
                         "test ids")
    true_mask = truth_mask(merged[["id", "label"]], classes, multilabel, labels)
    predicted_mask = truth_mask(
        merged[["id", "label_pred"]].rename(columns={"label_pred": "label"}), classes,
        multilabel, submission)
    return (f2 if multilabel else accuracy)(predicted_mask, true_mask)


def _kernelpack(argv: list[str], log: Log) -> list[str]:
    """Run a kernelpack command in-process, its output going to the demo's log; returns its
    output lines."""
    log("$ kernelpack " + " ".join(argv))
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        code = cli.main(argv)
    lines = output.getvalue().splitlines()
    for line in lines:
        log(f"  {line}")
    if code:
        raise RuntimeError(f"kernelpack {' '.join(argv[:2])} failed: "
                           f"{lines[-1] if lines else code}")
    return lines


def _oof_args(trained: Sequence[TrainedModel], oof_dir: Path, multilabel: bool) -> list[str]:
    archs = dict.fromkeys(m.arch for m in trained)
    args = [f"--oof={model_stem(a, multilabel)}={oof_dir / oof_filename(a, multilabel)}"
            for a in archs]
    return [*args, "--labels", str(oof_dir / "labels.csv"), "--folds",
            str(oof_dir / "folds.npy")]


def _import_own(own: OwnTraining, models_dir: Path, log: Log) -> list[TrainedModel]:
    """Each Lightning-style fold of the own model becomes a kernelpack checkpoint."""
    imported = []
    for fold, source in enumerate(own.checkpoints):
        name = f"{OWN_STEM}_f{fold}"
        target = models_dir / f"{name}.pt"
        _kernelpack(["import-checkpoint", str(source), "-o", str(target), "--arch", OWN_ARCH,
                     "--num-classes", "10", "--name", name, "--fold", str(fold),
                     "--config", str(own.model_config), "--code", str(OWN_PACKAGE),
                     "--strip-prefix", "model."], log)
        imported.append(TrainedModel(name, OWN_STEM, fold, target, own.val_scores[fold],
                                     own.seconds[fold]))
    return imported


def _oof_through_the_kernel(trained: Sequence[TrainedModel], own: OwnTraining,
                            competition_dir: Path, out_dir: Path, log: Log) -> Path:
    """The digits OOF predictions, made by `kernelpack predict` (the kernel's own discovery,
    preprocessing, TTA and blend) rather than by the training code; the own model's folds are
    first checked against the user's own validation output with `--compare`."""
    oof_dir, models_dir = out_dir / "kernel-oof", out_dir / "models"
    oof_dir.mkdir()
    images = competition_dir / "train"
    base = {"test": {"images": "digits/train"}, "submission": {"format": "multiclass"},
            "tta": ["identity"], "batch_size": 64}
    for fold, (ids, user) in enumerate(zip(own.fold_ids, own.user_oof, strict=True)):
        parity = oof_dir / f"parity_{OWN_STEM}_f{fold}.yml"
        parity.write_text(yaml.safe_dump({**base, "models": [{"name": f"{OWN_STEM}_f{fold}"}]}))
        _kernelpack(["predict", str(parity), "--images", str(images), "--sample", str(ids),
                     "--models", str(models_dir), "-o", str(oof_dir / f"parity_f{fold}.npy"),
                     "--code", str(OWN_PACKAGE), "--compare", str(user), "--quiet"], log)
    stems = list(dict.fromkeys(model_stem(m.arch) for m in trained))
    folds = sorted({m.fold for m in trained})
    config = oof_dir / "oof.yml"
    config.write_text(yaml.safe_dump(
        {**base, "models": [{"name": stem, "folds": folds} for stem in stems]}))
    _kernelpack(["predict", str(config), "--images", str(images),
                 "--sample", str(out_dir / "oof" / "labels.csv"), "--models", str(models_dir),
                 "-o", str(oof_dir / "blend.npy"), "--per-model",
                 "--folds", str(out_dir / "oof" / "folds.npy"), "--code", str(OWN_PACKAGE),
                 "--quiet"], log)
    for stem in stems:
        (oof_dir / f"blend.{stem}.npy").rename(oof_dir / f"{stem}.npy")
    for name in ("labels.csv", "folds.npy"):
        shutil.copy(out_dir / "oof" / name, oof_dir / name)
    return oof_dir


def _only(config: EnsembleConfig, names: Sequence[str]) -> EnsembleConfig:
    """`config` with just the entries in `names`, equally weighted."""
    models = tuple(dataclasses.replace(m, weight=1.0) for m in config.models if m.name in names)
    return dataclasses.replace(config, models=models)


@dataclass
class _Task:
    """One competition of the demo: its models, OOF folder and held-back labels."""

    trained: Sequence[TrainedModel]
    oof_dir: Path
    test_labels: Path
    classes: list
    multilabel: bool

    def oof_score(self, config: EnsembleConfig) -> float:
        """The score of the blend `config` computes, on the OOF predictions of its models."""
        stems = list(dict.fromkeys(model_stem(m.arch, self.multilabel) for m in self.trained
                                   if any(e.name == m.name for e in config.models)))
        weights, shifts = oof_weights(config, stems, "the demo's config")
        oof = [np.load(self.oof_dir / f"{stem}.npy").astype(np.float64) for stem in stems]
        probs = blend_probs(oof, weights, config.blend, shifts)
        labels = pd.read_csv(self.oof_dir / "labels.csv", dtype=str, keep_default_na=False)
        truth = truth_mask(labels, self.classes, self.multilabel, self.oof_dir / "labels.csv")
        predicted = label_mask(probs, config.submission)
        return (f2 if self.multilabel else accuracy)(predicted, truth)

    def test_score(self, submission: Path) -> float:
        return score_submission(submission, self.test_labels, self.classes, self.multilabel)


class _Runner:
    """Runs a config through the runtime in-process and scores it on the held-back labels."""

    def __init__(self, out_dir: Path, input_dir: Path) -> None:
        self.out_dir, self.input_dir = out_dir, input_dir

    def __call__(self, config: EnsembleConfig, label: str, task: _Task) -> float:
        runnable = dataclasses.replace(config, input_roots=(str(self.input_dir),))
        work = self.out_dir / "singles" / label
        work.mkdir(parents=True)
        summary = run_kernel(runnable, working_dir=work, log=lambda _: None, progress=False)
        return task.test_score(summary.submission)


def run_demo(out_dir: Path, *, archs: Sequence[str] = DEFAULT_ARCHS,
             attribute_archs: Sequence[str] = ("small_cnn",), folds: int = 3,
             epochs: int = DEFAULT_EPOCHS, limit: int | None = None,
             kaggle: bool = True, log: Log = print) -> DemoReport:
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    stages: dict[str, float] = {}

    def stage(name: str, start: float) -> None:
        stages[name] = time.perf_counter() - start
        log(f"== {name}: {stages[name]:.1f} s")

    start = time.perf_counter()
    digits = make_competition(out_dir, limit=limit)
    attributes = make_competition(out_dir, limit=limit, name=ATTRIBUTES_COMPETITION)
    # input/ is what the kernel sees, laid out like /kaggle/input: competitions and datasets.
    input_dir = out_dir / "input"
    input_dir.mkdir()
    for name, target in ((COMPETITION, digits.competition_dir),
                         (ATTRIBUTES_COMPETITION, attributes.competition_dir),
                         (f"{COMPETITION}-models", out_dir / "models"),
                         (f"{ATTRIBUTES_COMPETITION}-models", out_dir / "attribute-models")):
        (input_dir / name).symlink_to(target.resolve())
    stage("data", start)

    start = time.perf_counter()
    trained = train_ensemble(digits.competition_dir, out_dir / "models", out_dir / "oof",
                             archs=archs, folds=folds, epochs=epochs, log=log)
    attribute_models = train_ensemble(
        attributes.competition_dir, out_dir / "attribute-models", out_dir / "attribute-oof",
        archs=attribute_archs, folds=folds, epochs=epochs, classes=ATTRIBUTES, log=log)
    stage("train", start)

    start = time.perf_counter()
    own = train_own(digits.competition_dir, out_dir / "oof" / "folds.npy", out_dir / "own-training",
                    epochs=epochs, log=log)
    trained = [*trained, *_import_own(own, out_dir / "models", log)]
    import_user_code([OWN_PACKAGE])  # for the in-process scoring runs below
    stage("own model (train, import-checkpoint)", start)

    start = time.perf_counter()
    kernel_oof = _oof_through_the_kernel(trained, own, digits.competition_dir, out_dir, log)
    stage("OOF through the kernel (predict)", start)

    # Fit on the out-of-fold predictions only: the test labels stay out of every choice.
    start = time.perf_counter()
    digits_base = out_dir / "ensemble.base.yml"
    digits_base.write_text(yaml.safe_dump(base_config(
        trained, COMPETITION, f"{COMPETITION}-models", {"format": "multiclass"}, "gmean"),
        sort_keys=False))
    digits_yml = out_dir / "ensemble.yml"
    _kernelpack(["blend", "search", *_oof_args(trained, kernel_oof, False),
                 "--metric", "logloss", "--base", str(digits_base), "-o", str(digits_yml)], log)
    attributes_base = out_dir / "attributes.base.yml"
    attributes_base.write_text(yaml.safe_dump(base_config(
        attribute_models, ATTRIBUTES_COMPETITION, f"{ATTRIBUTES_COMPETITION}-models",
        {"format": "multilabel", "classes": list(ATTRIBUTES), "threshold": 0.5},
        "mean"), sort_keys=False))
    attributes_blend = out_dir / "attributes.blend.yml"
    attributes_yml = out_dir / "attributes.yml"
    attribute_oof = _oof_args(attribute_models, out_dir / "attribute-oof", True)
    _kernelpack(["blend", "search", *attribute_oof, "--metric", "f2", "--base",
                 str(attributes_base), "-o", str(attributes_blend)], log)
    _kernelpack(["threshold", "search", *attribute_oof, "--base", str(attributes_blend),
                 "--min-support", "30", "-o", str(attributes_yml)], log)
    stage("fit (blend + thresholds on OOF)", start)

    start = time.perf_counter()
    kernels = {}
    for config_path, folder, code in ((digits_yml, "kernel", ["--code", str(OWN_PACKAGE)]),
                                      (attributes_yml, "kernel-attributes", [])):
        _kernelpack(["build", str(config_path), "-o", str(out_dir / folder), *code], log)
        kernels[folder] = out_dir / folder
    stage("build", start)

    start = time.perf_counter()
    submissions = {}
    for folder, kernel_dir in kernels.items():
        result = run_local(kernel_dir, input_dir, on_line=lambda line: log(f"  | {line}"))
        if result.returncode != 0 or result.submission is None:
            raise RuntimeError(f"the kernel failed (exit {result.returncode}); see {result.log}")
        submissions[folder] = result.submission
    stage("run-local (offline kernels)", start)

    start = time.perf_counter()
    run = _Runner(out_dir, input_dir)
    digits_task = _Task(trained, kernel_oof, digits.test_labels, list(range(10)), False)
    digits_table = _digits_table(digits_task, digits_yml, digits_base, submissions["kernel"],
                                 run)
    attributes_task = _Task(attribute_models, out_dir / "attribute-oof",
                            attributes.test_labels, list(ATTRIBUTES), True)
    attributes_table = _attributes_table(attributes_task, attributes_yml, attributes_base,
                                         submissions["kernel-attributes"], run)
    stage("score", start)

    loop = None
    if kaggle:
        start = time.perf_counter()
        loop = run_kaggle_loop(out_dir / "kaggle", digits_yml, out_dir / "models", COMPETITION,
                               digits.competition_dir, digits.test_labels,
                               ["--code", str(OWN_PACKAGE)], lambda argv: _kernelpack(argv, log))
        stage("Kaggle loop (local service)", start)
    singles = [row.test for row in digits_table.rows if row.name in {m.name for m in trained}]
    return DemoReport(digits_table, attributes_table, max(singles), digits_table.test(FITTED),
                      attributes_table.test(AT_HALF), attributes_table.test(SEARCHED), loop,
                      stages, submissions)


def _digits_table(task: _Task, fitted: Path, base: Path, submission: Path,
                  run: _Runner) -> Table:
    config, equal = load_config(fitted).ensemble, load_config(base).ensemble
    weights = {m.name: m.weight for m in config.models}
    rows = [Row(m.name, weights[m.name], m.val_score, run(_only(config, [m.name]), m.name, task))
            for m in task.trained]
    for arch in dict.fromkeys(m.arch for m in task.trained):
        alone = _only(config, [m.name for m in task.trained if m.arch == arch])
        rows.append(Row(f"{model_stem(arch)} ({len(alone.models)} folds)",
                        sum(weights[m.name] for m in alone.models), task.oof_score(alone),
                        run(alone, model_stem(arch), task)))
    rows.append(Row("blend, equal weights", None, task.oof_score(equal),
                    run(equal, "equal", task)))
    rows.append(Row(FITTED, None, task.oof_score(config), task.test_score(submission)))
    return Table("digits (multiclass, 10 classes)", "accuracy", rows)


def _attributes_table(task: _Task, fitted: Path, base: Path, submission: Path,
                      run: _Runner) -> Table:
    config, searched = load_config(base).ensemble, load_config(fitted).ensemble
    # Threshold 0.5 with zero labels allowed: what the threshold alone adds.
    no_minimum = dataclasses.replace(
        config, submission=dataclasses.replace(config.submission, min_labels=0))
    rows = [Row(m.name, None, m.val_score, run(_only(config, [m.name]), m.name, task))
            for m in task.trained]
    rows.append(Row(AT_HALF, None, task.oof_score(config), run(config, "at-0.5", task)))
    rows.append(Row("blend, threshold 0.5, min_labels 0", None, task.oof_score(no_minimum),
                    run(no_minimum, "at-0.5-min-0", task)))
    rows.append(Row(SEARCHED, None, task.oof_score(searched), task.test_score(submission)))
    rule = searched.submission
    threshold = rule.threshold
    shown = f"{threshold:g}" if not isinstance(threshold, tuple) else \
        "[" + ", ".join(f"{t:g}" for t in threshold) + "]"
    title = (f"digits-attributes (multilabel: {', '.join(ATTRIBUTES)}); searched rule: "
             f"threshold {shown}, min_labels {rule.min_labels}, "
             f"max_labels {rule.max_labels}")
    return Table(title, "F2", rows)


def _format_table(table: Table) -> list[str]:
    lines = ["", table.title,
             f"{'':<34}{'weight':>8}{'OOF ' + table.metric:>14}{'held-back ' + table.metric:>20}"]
    for row in table.rows:
        weight = "" if row.weight is None else f"{row.weight:.4f}"
        oof = "" if row.oof is None else f"{row.oof:.4f}"
        lines.append(f"{row.name:<34}{weight:>8}{oof:>14}{row.test:>20.4f}")
    return lines


def format_report(report: DemoReport) -> str:
    lines = ["", "Single models (OOF: on their own held-out fold) vs blends (OOF: all folds), "
             "all run through the kernel runtime on the held-back test set."]
    lines += _format_table(report.digits) + _format_table(report.attributes)
    verdict = "at least" if report.blend_accuracy >= report.best_single else "BELOW"
    lines.append(f"\nfitted blend {report.blend_accuracy:.4f} is {verdict} the best single "
                 f"model {report.best_single:.4f} (held-back accuracy)")
    verdict = "beats" if report.f2_searched > report.f2_default else "does NOT beat"
    lines.append(f"searched thresholds {report.f2_searched:.4f} {verdict} threshold 0.5 "
                 f"{report.f2_default:.4f} (held-back F2)")
    if report.kaggle is not None:
        loop = report.kaggle
        same = "the same as" if loop.agrees_with(report.blend_accuracy) else "NOT"
        lines.append(f"local Kaggle service: {loop.kernel} (a notebook, weights from the Kaggle "
                     f"Model {loop.model_version}, encrypted) submitted to {COMPETITION}, scored "
                     f"{loop.score:.4f}: {same} the offline run-local score "
                     f"{report.blend_accuracy:.4f}")
    lines += ["", f"{'stage':<34}{'seconds':>10}"]
    lines += [f"{name:<34}{seconds:>10.1f}" for name, seconds in report.stages.items()]
    lines.append(f"{'total':<34}{sum(report.stages.values()):>10.1f}")
    lines += [f"submission: {path}" for path in report.submissions.values()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.digits.demo",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, nargs="?", default=Path("demo-output"))
    parser.add_argument("--archs", nargs="+", default=list(DEFAULT_ARCHS))
    parser.add_argument("--attribute-archs", nargs="+", default=["small_cnn"])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--no-kaggle", action="store_true",
                        help="stop after run-local (skip the local Kaggle service's loop)")
    args = parser.parse_args(argv)
    report = run_demo(args.out_dir, archs=args.archs, attribute_archs=args.attribute_archs,
                      folds=args.folds, epochs=args.epochs, kaggle=not args.no_kaggle)
    print(format_report(report))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
