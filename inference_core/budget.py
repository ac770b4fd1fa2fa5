"""Fit the ensemble into the time budget: plan on a probe batch, then guard the deadline.

Work comes in units: one TTA view of one model (each fold of a folds group is a model). The plan
chooses the units that run on the images left:

- With recorded values (every model has a `value`, written by `blend search`: what the blended
  OOF score loses without it), a model's first view carries its value. The planner keeps the
  units with the most value that fit: greedy by value per second, first fit (a unit that does
  not fit is skipped, and a cheaper one after it that still fits is taken), then a swap repair
  (a left-out unit replaces kept ones of lower value per second when that gains value). Units
  without a value (further TTA views, or a value <= 0) then fill the time left, in the order
  below.
- Without values, the diverse order: one fold of every model, heaviest weight first, before any
  second fold of any model; then further folds; then every model's further TTA views; first fit.

The guard re-projects after every batch from measured times: when the projection slips it drops
kept units, lowest priority first; when the run is ahead by enough for a left-out unit on the
images left (with some headroom), that unit joins. Rows are blended with per-row weights, so a
model that runs on only part of the images counts only there, and a model that loses views keeps
its weight: the views it still runs are combined and carry it. At least one unit always runs; if
even that cannot finish, the hard stop lets the kernel write fallback rows for the rest, so a
submission is always written in time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

# A left-out unit joins only when the projection stays this much inside the deadline with it,
# so that measurement noise does not add and drop the same unit batch after batch.
ADD_HEADROOM = 0.15
_EPS = 1e-12


@dataclass(frozen=True)
class Unit:
    member: int  # index into the ensemble's members
    op: str  # TTA op
    label: str  # "<model name>:<op>", for logs
    value: float | None = None  # the model's recorded OOF value, on its first view only


class ViewSource(NamedTuple):
    """What the planner reads of one member: `group` is its config entry (its folds group's
    name, or its own), `value` its recorded OOF value (None when there is none)."""

    name: str
    weight: float
    tta: Sequence[str]
    group: str | None = None
    value: float | None = None


def rank_units(members: Sequence[tuple]) -> list[Unit]:
    """Every unit of `members` (`ViewSource` fields, as tuples) in the diverse order: the first
    fold of every group (heaviest group first, ties in config order), then every group's second
    fold, ...; all first views before any second view."""
    sources = [ViewSource(*member) for member in members]
    groups: dict[str, list[int]] = {}
    for m, source in enumerate(sources):
        groups.setdefault(source.group or source.name, []).append(m)
    heaviest = sorted(groups.values(), key=lambda ms: -sum(sources[m].weight for m in ms))
    by_fold = [ms[rank] for rank in range(max(map(len, heaviest))) for ms in heaviest
               if rank < len(ms)]
    depth = max(len(source.tta) for source in sources)
    return [Unit(m, sources[m].tta[view], f"{sources[m].name}:{sources[m].tta[view]}",
                 sources[m].value if view == 0 else None)
            for view in range(depth) for m in by_fold if view < len(sources[m].tta)]


def _valued(unit: Unit) -> bool:
    return unit.value is not None and unit.value > 0


def has_values(ranked: Sequence[Unit]) -> bool:
    """Whether every model's first view carries a recorded value."""
    first = {}
    for unit in ranked:
        first.setdefault(unit.member, unit)
    return bool(first) and all(unit.value is not None for unit in first.values())


def priority_order(ranked: Sequence[Unit], cost: dict[Unit, float]) -> list[Unit]:
    """Units in the order the plan considers them (and the guard adds them back): with values,
    valued units by value per second, then the rest in `ranked` order; else `ranked`."""
    if not has_values(ranked):
        return list(ranked)
    valued = sorted((u for u in ranked if _valued(u)),
                    key=lambda u: -u.value / max(cost[u], _EPS))  # stable: ranked order
    return valued + [u for u in ranked if not _valued(u)]


def _first_fit(order: Sequence[Unit], cost: dict[Unit, float], room: float,
               kept: list[Unit]) -> list[Unit]:
    used = sum(cost[u] for u in kept)
    for unit in order:
        if unit not in kept and used + cost[unit] <= room + _EPS:
            kept.append(unit)
            used += cost[unit]
    return kept


def _swap_repair(order: Sequence[Unit], cost: dict[Unit, float], room: float,
                 kept: list[Unit]) -> list[Unit]:
    """Let each left-out valued unit (most valuable first) replace the kept units of lowest
    value per second that make room for it, when it is worth more than they are together."""
    for unit in sorted((u for u in order if _valued(u) and u not in kept), key=lambda u: -u.value):
        free = room - sum(cost[u] for u in kept)
        removed: list[Unit] = []
        for victim in reversed(kept):  # kept is in priority order: lowest value per second last
            if free + _EPS >= cost[unit]:
                break
            removed.append(victim)
            free += cost[victim]
        if free + _EPS >= cost[unit] and sum(v.value for v in removed) < unit.value:
            kept = [u for u in order if (u in kept and u not in removed) or u == unit]
    return kept


@dataclass
class Plan:
    order: list[Unit]  # every unit, in priority order
    kept: list[Unit]  # the units that run, in priority order
    cost: dict[Unit, float]  # seconds per image of each unit
    base_cost: float  # seconds per image of decoding and preparing
    images: int  # images left to predict
    available: float  # seconds left before the planning deadline

    @property
    def dropped(self) -> list[Unit]:
        return [u for u in self.order if u not in self.kept]

    @property
    def _first_op(self) -> dict[int, str]:
        first: dict[int, str] = {}
        for unit in self.order:
            first.setdefault(unit.member, unit.op)
        return first

    @property
    def by_value(self) -> bool:
        return has_values(self.order)

    @property
    def projected(self) -> float:
        """Seconds for the images left, with the kept units."""
        return self.images * (self.base_cost + sum(self.cost[u] for u in self.kept))

    def value(self, units: Sequence[Unit] | None = None) -> float:
        return sum(u.value for u in (self.kept if units is None else units) if _valued(u))

    def describe(self) -> str:
        """The plan as one log block: what runs, what is left out, value and seconds of each."""
        unvalued = sorted({u.label[:-len(u.op) - 1] for u in self.order
                           if u.value is None and u.op == self._first_op[u.member]})
        rule = ("by recorded OOF value per second, then the views without a value"
                if self.by_value else
                ("no recorded values" if len(unvalued) == len(self._first_op) else
                 f"no recorded value for {', '.join(unvalued)}")
                + ": one fold of every model first, then further folds, then TTA views")
        lines = [f"plan: {len(self.kept)} of {len(self.order)} model views run on the "
                 f"{self.images} images left, projected {self.projected:.1f} s of "
                 f"{self.available:.1f} s ({rule}); decoding {self.images * self.base_cost:.1f} s"]
        width = max(len(u.label) for u in self.order)
        for status, units in (("runs", self.kept), ("left out", self.dropped)):
            for u in units:
                value = "-" if u.value is None else f"{u.value:.5g}"
                lines.append(f"  {status:<9}{u.label:<{width}}  value {value:>9}  "
                             f"{self.images * self.cost[u]:8.1f} s")
        if self.by_value:
            lines.append(f"  value kept {self.value():.5g} of {self.value(self.order):.5g}")
        return "\n".join(lines)


def choose_units(ranked: Sequence[Unit], cost: dict[Unit, float], base_cost: float,
                 images: int, available: float) -> Plan:
    """The units of `ranked` (in `rank_units` order) that run on `images` in `available`
    seconds (per image: `base_cost` for decoding plus `cost[unit]` per unit); never empty."""
    order = priority_order(ranked, cost)
    if images <= 0:
        return Plan(order, list(order), cost, base_cost, images, available)
    room = available / images - base_cost
    if has_values(ranked):
        kept = _first_fit([u for u in order if _valued(u)], cost, room, [])
        kept = _swap_repair(order, cost, room, kept)
    else:
        kept = []
    kept = _first_fit(order, cost, room, kept)
    if not kept:
        kept = [order[0]]
    return Plan(order, [u for u in order if u in kept], cost, base_cost, images, available)


@dataclass
class GuardChange:
    dropped: list[Unit]
    added: list[Unit]


class DeadlineGuard:
    """Re-projects the finish after each batch: drops the lowest-priority kept units that no
    longer fit, or adds left-out units the run is ahead enough for. `deadline` is the planning
    target; past `hard_stop` no more predictions are made."""

    def __init__(self, plan: Plan, deadline: float, hard_stop: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.order = list(plan.order)
        self.active = list(plan.kept)
        self.cost = plan.cost
        self.base_cost = plan.base_cost
        self.deadline = deadline
        self.hard_stop = hard_stop
        self.clock = clock
        self.slowdown: float | None = None  # measured / estimated seconds per image, smoothed

    def estimated_per_image(self) -> float:
        return self.base_cost + sum(self.cost[u] for u in self.active)

    def after_batch(self, images: int, seconds: float, images_left: int) -> GuardChange:
        """Record a batch; return the units dropped to keep the projection inside the deadline,
        or added because the images left have time for them."""
        if images > 0 and seconds > 0:
            ratio = seconds / images / self.estimated_per_image()
            self.slowdown = ratio if self.slowdown is None else 0.5 * (self.slowdown + ratio)
        change = GuardChange([], [])
        while len(self.active) > 1 and self.projected_finish(images_left) > self.deadline:
            change.dropped.append(self.active.pop())
        if change.dropped or self.slowdown is None or images_left <= 0:
            return change
        for unit in self.order:
            extra = images_left * self.cost[unit] * self.slowdown * (1 + ADD_HEADROOM)
            if unit not in self.active and \
                    self.projected_finish(images_left) + extra <= self.deadline:
                self.active = [u for u in self.order if u in self.active or u == unit]
                change.added.append(unit)
        return change

    def projected_finish(self, images_left: int) -> float:
        slowdown = 1.0 if self.slowdown is None else self.slowdown
        return self.clock() + images_left * self.estimated_per_image() * slowdown

    def can_run(self, images: int) -> bool:
        """Whether a batch of `images` is projected to end before the hard stop."""
        return self.projected_finish(images) <= self.hard_stop
