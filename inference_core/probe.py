"""The probe: the first, small batch runs every model view and its timings plan the run."""

from __future__ import annotations

import time
from collections.abc import Callable

from .blend import BlendAccumulator
from .budget import DeadlineGuard, Unit, choose_units
from .predict import EnsemblePredictor, PreparedBatch

PROBE_IMAGES = 8


def batch_bounds(total: int, batch_size: int, probe: int):
    """(begin, end) of each batch: a small probe batch first, then full batches."""
    begin, end = 0, min(probe, batch_size, total)
    while begin < total:
        yield begin, end
        begin, end = end, min(end + batch_size, total)


def plan_from_probe(predictor: EnsemblePredictor, ranked: list[Unit], prepared: PreparedBatch,
                    accumulator: BlendAccumulator, deadline: float, hard_stop: float,
                    images_left: int, log: Callable[[str], None]) -> DeadlineGuard:
    """Run the probe batch with every unit, time it, and plan the remaining images.

    On the first half each model is optimised, checked against its unoptimised outputs (which
    are that half's predictions) and warmed up, paying its one-time set-up costs; the second half,
    of the same shape, is timed with the optimised models. Both halves' predictions are kept. A
    model whose check would eat the time left before `deadline` is timed as loaded."""
    members = predictor.members
    decoded = prepared.decoded.size
    half = decoded // 2
    timings: dict[int, float] = {}
    predictor.optimize(prepared.part(0, half), log, images_left + decoded - half,
                       deadline - time.monotonic(), accumulator, deadline=deadline)
    predictor.predict(prepared.part(half, decoded), set(ranked), accumulator, timings)
    timed = max(decoded - half, 1)
    cost = {u: timings.get(u.member, 0.0) / timed / len(members[u.member].tta) for u in ranked}
    base_cost = prepared.seconds / max(decoded, 1)
    plan = choose_units(ranked, cost, base_cost, images_left, deadline - time.monotonic())
    log(plan.describe())
    return DeadlineGuard(plan, deadline, hard_stop)
