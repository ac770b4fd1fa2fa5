"""The end-to-end demo (`make demo`): a real little competition, from images to a scored kernel.

Stages: make the digits competition -> train archs x folds on CPU -> write the ensemble config ->
`kernelpack build` -> `kernelpack run-local` (offline sandbox) -> score the submission against the
held-back labels, beside each single model scored through the same runtime.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from examples.digits.prepare import make_competition
from examples.digits.train import DEFAULT_ARCHS, DEFAULT_EPOCHS, TrainedModel, train_ensemble
from inference_core.runner import run_kernel
from kernelpack.build import build_kernel
from kernelpack.sandbox import run_local

COMPETITION = "digits"
MODELS_DATASET = "digits-models"


@dataclass
class DemoReport:
    models: list[tuple[TrainedModel, float]]  # each model with its held-back test accuracy
    blend_accuracy: float
    stages: dict[str, float] = field(default_factory=dict)
    submission: Path | None = None

    @property
    def best_single(self) -> float:
        return max(accuracy for _, accuracy in self.models)


def ensemble_config(trained: Sequence[TrainedModel], blend: str = "gmean") -> dict:
    """The ensemble YAML for `kernelpack build`: every trained model, equal weights."""
    return {
        "models": [{"name": m.name, "path": f"{MODELS_DATASET}/{m.path.name}", "weight": 1.0}
                   for m in trained],
        "test": {"images": f"{COMPETITION}/test",
                 "sample_submission": f"{COMPETITION}/sample_submission.csv"},
        "submission": {"format": "multiclass", "id_column": "id", "label_column": "label"},
        "blend": blend,
        "tta": ["identity"],  # digits are not flip-symmetric
        "batch_size": 64,
        "kernel": {"id": "your-username/digits-ensemble", "competition_sources": [COMPETITION],
                   "dataset_sources": [f"your-username/{MODELS_DATASET}"]},
    }


def accuracy(submission: Path, labels: Path) -> float:
    predicted = pd.read_csv(submission, dtype=str)
    truth = pd.read_csv(labels, dtype=str)
    merged = truth.merge(predicted, on="id", how="left", suffixes=("", "_pred"))
    if merged["label_pred"].isna().any():
        raise ValueError(f"{submission} misses {int(merged['label_pred'].isna().sum())} test ids")
    return float((merged["label"] == merged["label_pred"]).mean())


def run_demo(out_dir: Path, *, archs: Sequence[str] = DEFAULT_ARCHS, folds: int = 3,
             epochs: int = DEFAULT_EPOCHS, limit: int | None = None,
             log: Callable[[str], None] = print) -> DemoReport:
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    stages: dict[str, float] = {}

    def stage(name: str, start: float) -> None:
        stages[name] = time.perf_counter() - start
        log(f"== {name}: {stages[name]:.1f} s")

    start = time.perf_counter()
    paths = make_competition(out_dir, limit=limit)
    # input/ is what the kernel sees, laid out like /kaggle/input: the competition and a dataset.
    input_dir = out_dir / "input"
    input_dir.mkdir()
    (input_dir / COMPETITION).symlink_to(paths.competition_dir.resolve())
    (input_dir / MODELS_DATASET).symlink_to((out_dir / "models").resolve())
    stage("data", start)

    start = time.perf_counter()
    trained = train_ensemble(paths.competition_dir, out_dir / "models", out_dir / "oof",
                             archs=archs, folds=folds, epochs=epochs, log=log)
    stage("train", start)

    start = time.perf_counter()
    config = ensemble_config(trained)
    config_path = out_dir / "ensemble.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    build = build_kernel(config_path, out_dir / "kernel")
    log(f"built {build.kernel} ({build.size_bytes / 1024:.1f} KiB)")
    stage("build", start)

    start = time.perf_counter()
    result = run_local(out_dir / "kernel", input_dir, on_line=lambda line: log(f"  | {line}"))
    if result.returncode != 0 or result.submission is None:
        raise RuntimeError(f"the kernel failed (exit {result.returncode}); see {result.log}")
    stage("run-local (offline kernel)", start)

    start = time.perf_counter()
    singles = []
    for model in trained:
        # Each model alone, through the same runtime, to compare with the blend.
        alone = {**config, "models": [c for c in config["models"] if c["name"] == model.name],
                 "input_roots": [str(input_dir)]}
        alone.pop("kernel")
        work = out_dir / "singles" / model.name
        work.mkdir(parents=True)
        summary = run_kernel(alone, working_dir=work, log=lambda _: None, progress=False)
        singles.append((model, accuracy(summary.submission, paths.test_labels)))
    blend_accuracy = accuracy(result.submission, paths.test_labels)
    stage("score", start)
    return DemoReport(singles, blend_accuracy, stages, result.submission)


def format_report(report: DemoReport) -> str:
    lines = ["", f"{'model':<28}{'val acc (OOF fold)':>20}{'test acc (held back)':>22}"]
    for model, test_accuracy in report.models:
        lines.append(f"{model.name:<28}{model.val_accuracy:>20.4f}{test_accuracy:>22.4f}")
    lines.append(f"{'blend (kernel.py, offline)':<28}{'':>20}{report.blend_accuracy:>22.4f}")
    verdict = "at least" if report.blend_accuracy >= report.best_single else "BELOW"
    lines += [f"\nblend {report.blend_accuracy:.4f} is {verdict} the best single model "
              f"{report.best_single:.4f}", "", f"{'stage':<28}{'seconds':>10}"]
    lines += [f"{name:<28}{seconds:>10.1f}" for name, seconds in report.stages.items()]
    lines.append(f"{'total':<28}{sum(report.stages.values()):>10.1f}")
    lines.append(f"\nsubmission: {report.submission}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.digits.demo",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, nargs="?", default=Path("demo-output"))
    parser.add_argument("--archs", nargs="+", default=list(DEFAULT_ARCHS))
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    args = parser.parse_args(argv)
    report = run_demo(args.out_dir, archs=args.archs, folds=args.folds, epochs=args.epochs)
    print(format_report(report))
    return 0 if report.blend_accuracy >= report.best_single else 1


if __name__ == "__main__":
    sys.exit(main())
