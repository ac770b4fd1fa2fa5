"""`budget_value_kept`: how much of the best OOF gain the budget plan keeps (`make bench`).

The demo ensemble (small_cnn and ResNet-18, 3 folds each, trained on the digits as
`examples/digits/train.py` trains them), its blend fitted and its values written by
`kernelpack blend search --metric logloss`, each fold model's seconds per image measured on the
test images with the runtime's own predictor. At budgets of 30 %, 50 % and 70 % of the full
cost, the plan (`inference_core.budget.choose_units`, fed those costs) is scored on OOF against
the best subset of the same model views found by trying every subset that fits:

    kept = (prior - plan) / (prior - best)

where each score is the OOF log loss of the fitted blend of the models with at least one fold
kept (one fold model predicts unseen images as the model's OOF file, made by all its folds,
predicted its rows; what averaging more folds adds is not visible on OOF, so a second fold counts
for nothing here), and `prior` is the kernel's fallback row on every row. The figure is the
lowest of the three; `kept_without_values` is the same for the diverse order the kernel uses
when the config has no values.

    .venv/bin/python -m benchmarks.budget_value [--epochs 3] [--cache DIR]

The trained ensemble is kept in `--cache` (default: kernelpack-bench-digits-ensemble/epochs-N
in the temp folder) and trained only when missing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from examples.digits.prepare import make_competition
from examples.digits.train import train_ensemble
from inference_core.blend import BlendAccumulator
from inference_core.budget import choose_units, rank_units
from inference_core.config import EnsembleConfig, EnsembleMember
from inference_core.runner import discover, load_ensemble
from kernelpack import cli
from kernelpack.config import load_config
from kernelpack.search.fitted_config import entries_of, oof_weights
from kernelpack.search.metrics import get_metric
from kernelpack.search.oof import load_oof_set
from kernelpack.search.values import blended_score

FRACTIONS = (0.3, 0.5, 0.7)
TIMED_IMAGES = 256
# The trained ensemble is kept between runs (training takes minutes on a busy CPU), one folder
# per number of epochs; make bench trains 3 epochs (the demo trains 6) to keep it short.
CACHE = Path(tempfile.gettempdir()) / "kernelpack-bench-digits-ensemble"
BENCH_EPOCHS = 3


def _train(cache: Path, epochs: int) -> None:
    """Train the demo ensemble into `cache` (data/, models/, oof/), unless it is there."""
    if (cache / "DONE").exists():
        return
    competition = make_competition(cache / "data")
    train_ensemble(competition.competition_dir, cache / "models", cache / "oof", epochs=epochs,
                   log=lambda _: None)
    (cache / "DONE").write_text(f"epochs {epochs}\n")


def _fit(cache: Path, work: Path) -> tuple[Path, Path, list[str]]:
    """Fit the trained ensemble's blend (and values): the fitted config, the OOF folder and
    the OOF names."""
    (work / "input").mkdir()
    (work / "input" / "models").symlink_to(cache / "models")
    (work / "input" / "digits").symlink_to(cache / "data" / "competition" / "digits")
    oof_dir = cache / "oof"
    stems = sorted(p.stem for p in oof_dir.glob("*.npy") if p.stem != "folds")
    base = {"models": [{"name": p.stem, "weight": 1.0}
                       for p in sorted((cache / "models").glob("*.pt"))],
            "test": {"images": "digits/test",
                     "sample_submission": "digits/sample_submission.csv"},
            "submission": {"format": "multiclass"}, "tta": ["identity"], "batch_size": 64,
            "input_roots": [str(work / "input")]}
    (work / "base.yml").write_text(yaml.safe_dump(base))
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["blend", "search", *(f"--oof={s}={oof_dir / s}.npy" for s in stems),
                         "--labels", str(oof_dir / "labels.csv"),
                         "--folds", str(oof_dir / "folds.npy"), "--metric", "logloss",
                         "--mode", "gmean", "--base", str(work / "base.yml"),
                         "-o", str(work / "fitted.yml")])
    if code != 0:
        raise RuntimeError("blend search failed")
    return work / "fitted.yml", oof_dir, stems


def _costs(config: EnsembleConfig) -> tuple[list, dict, list[EnsembleMember]]:
    """Each model view's seconds per image, timed with the runtime's predictor (after a
    warm-up pass, the faster of two passes)."""
    log = lambda _: None  # noqa: E731
    discovery = discover(config, config.input_roots, log)
    ensemble = load_ensemble(config, discovery, None, log)
    root = Path(config.input_roots[0]) / config.test.images
    prepared = ensemble.predictor.prepare(sorted(root.glob("*.png"))[:TIMED_IMAGES])
    rows = prepared.decoded.size
    best: dict[int, float] = {}
    with torch.inference_mode():
        for attempt in range(3):
            timings: dict[int, float] = {}
            ensemble.predictor.predict(prepared, set(ensemble.units),
                                       BlendAccumulator(rows, len(ensemble.classes)), timings)
            if attempt:
                best = {m: min(s, best.get(m, s)) for m, s in timings.items()}
    cost = {u: best[u.member] / rows for u in ensemble.units}
    members = config.members()
    return ensemble.units, cost, members


def measure(epochs: int = BENCH_EPOCHS, cache: Path | None = None) -> dict:
    started = time.perf_counter()
    cache = cache or CACHE / f"epochs-{epochs}"
    _train(cache, epochs)
    trained = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        fitted, oof_dir, stems = _fit(cache, Path(tmp))
        config = load_config(fitted).ensemble
        units, cost, members = _costs(config)
        submission = config.submission
        oof = load_oof_set({s: oof_dir / f"{s}.npy" for s in stems}, oof_dir / "labels.csv",
                           oof_dir / "folds.npy", None, False)
        weights, shifts = oof_weights(config, oof.names, str(fitted))
        # Each fold model's OOF name.
        owner = {config.models[i].name: oof.names.index(name)
                 for name, indices in entries_of(config.models, oof.names,
                                                 str(fitted)).items() for i in indices}
        metric = get_metric("logloss")

        def score(kept) -> float:
            """OOF log loss of the fitted blend of the models with a fold in `kept`."""
            present = [np.zeros(len(oof.truth), dtype=bool) for _ in oof.names]
            for unit in kept:
                present[owner[members[unit.member].group]][:] = True
            return blended_score(oof, weights, config.blend, shifts, metric, submission,
                                 present)

        prior = score([])
        full_cost = sum(cost.values())
        no_values = rank_units([(m.label, m.weight, ["identity"], m.group)
                                for m in members])
        by_member = {u.member: cost[u] for u in units}
        rows = []
        for fraction in FRACTIONS:
            room = fraction * full_cost
            plan = choose_units(units, cost, 0.0, 1, room)
            diverse = choose_units(no_values, {u: by_member[u.member] for u in no_values},
                                   0.0, 1, room)
            fitting = [subset for r in range(1, len(units) + 1)
                       for subset in itertools.combinations(units, r)
                       if sum(cost[u] for u in subset) <= room + 1e-12]
            best = min(fitting, key=score)
            gain = prior - score(best)
            rows.append({
                "budget_fraction": fraction,
                "kept": round((prior - score(plan.kept)) / gain, 4),
                "kept_without_values": round((prior - score(diverse.kept)) / gain, 4),
                "plan": [u.label for u in plan.kept],
                "best": [u.label for u in best],
                "plan_logloss": round(score(plan.kept), 5),
                "best_logloss": round(score(best), 5),
                "subsets_tried": len(fitting),
            })
    return {
        "value": min(row["kept"] for row in rows),
        "prior_logloss": round(prior, 5),
        "full_logloss": round(score(units), 5),
        "ms_per_image": {u.label: round(1000 * cost[u], 3) for u in units},
        "values": {m.label: m.value for m in members},
        "budgets": rows,
        "epochs": epochs,
        "training_seconds": round(trained, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=BENCH_EPOCHS)
    parser.add_argument("--cache", type=Path, default=None,
                        help="where the trained ensemble is kept (trained when missing)")
    args = parser.parse_args()
    print(json.dumps(measure(args.epochs, args.cache), indent=2))


if __name__ == "__main__":
    main()
