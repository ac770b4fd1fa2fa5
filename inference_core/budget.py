"""Fit the ensemble into the time budget: plan on a probe batch, then guard the deadline.

Work comes in units: one TTA view of one model. Each fold of a model is a model of its own, and
the folds of one model form its group (a `folds:` entry, or entries named NAME_f<k>). The plan
chooses the units that run on the images left:

- With recorded values (every model has a `value`, written by `blend search`: what the blended
  OOF score loses without that fold on its OOF rows), a group's value is the sum of its folds'
  values: what the blend loses without the whole model. One fold model predicts every test image
  as the OOF file's fold models predicted theirs, so the group's cheapest fold is credited with
  the whole group value; further folds and further TTA views get no credit (OOF
  predictions cannot show what averaging folds or views adds). The plan keeps the credited units
  with the most value that fit: greedy by value per second, first fit (a unit that does not fit
  is skipped, and a cheaper one after it that still fits is taken), then a swap repair (a
  left-out unit replaces kept ones of lower value per second when that gains value). The other
  units then fill the time left, in the order below.
- Without values, the diverse order: one fold of every group, heaviest weight first, before any
  second fold of any group; then further folds; then every model's further TTA views; first fit.

The guard re-projects after every batch from measured times: when the projection slips it drops
kept units, the last in the plan's order first; when the run is ahead by enough for a left-out
unit on the images left (with some headroom), that unit joins. Rows are blended with per-row
weights, so a model that runs on only part of the images counts only there, and a model that
loses views keeps its weight: the views it still runs are combined and carry it. At least one
unit always runs; if even that cannot finish, the hard stop lets the kernel write fallback rows
for the rest, so a submission is always written in time. Before all this, the kernel has written
a whole fallback submission (see `startup`), and start-up answers to the same deadline: a model
that cannot load in time is left out, a model whose optimise check does not fit runs as loaded.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

# A left-out unit joins only when the projection stays this much inside the deadline with it,
# so that measurement noise does not add and drop the same unit batch after batch.
ADD_HEADROOM = 0.15
_EPS = 1e-12


@dataclass(frozen=True)
class Deadlines:
    """The run's two moments on the `time.monotonic()` clock: planned work ends by `plan` (the
    budget less its margin); no prediction starts after `hard_stop` (half the margin left, for
    the last batch and the file). Start-up (loading, the optimise-and-check pass) answers to
    `plan` too: it is the models' time it would eat."""

    plan: float
    hard_stop: float

    @classmethod
    def from_budget(cls, started: float, budget: float, margin: float) -> Deadlines:
        return cls(started + budget * (1 - margin), started + budget * (1 - margin / 2))

    def left(self) -> float:
        """Seconds left before `plan` (negative once it has passed)."""
        return self.plan - time.monotonic()


@dataclass(frozen=True)
class Unit:
    member: int  # index into the ensemble's members
    op: str  # TTA op
    label: str  # "<model name>:<op>", for logs
    value: float | None = None  # the model's recorded OOF value, on its first view only
    group: str = ""  # the model's group: the name its folds share


class ViewSource(NamedTuple):
    """What the planner reads of one member: `group` is its config entry (its folds group's
    name, or its own), `value` its recorded OOF value (None when there is none)."""

    name: str
    weight: float
    tta: Sequence[str]
    group: str | None = None
    value: float | None = None


def model_group(source: ViewSource) -> str:
    """The name a model's folds share: a folds group's name, or NAME for an entry NAME_f<k>
    (the naming `config.fold_member_name` gives a group's folds)."""
    return re.sub(r"_f\d+$", "", source.group or source.name)


def rank_units(members: Sequence[tuple]) -> list[Unit]:
    """Every unit of `members` (`ViewSource` fields, as tuples) in the diverse order: the first
    fold of every group (heaviest group first, ties in config order), then every group's second
    fold, ...; all first views before any second view."""
    sources = [ViewSource(*member) for member in members]
    groups: dict[str, list[int]] = {}
    for m, source in enumerate(sources):
        groups.setdefault(model_group(source), []).append(m)
    heaviest = sorted(groups.values(), key=lambda ms: -sum(sources[m].weight for m in ms))
    by_fold = [ms[rank] for rank in range(max(map(len, heaviest))) for ms in heaviest
               if rank < len(ms)]
    depth = max(len(source.tta) for source in sources)
    return [Unit(m, sources[m].tta[view], f"{sources[m].name}:{sources[m].tta[view]}",
                 sources[m].value if view == 0 else None, model_group(sources[m]))
            for view in range(depth) for m in by_fold if view < len(sources[m].tta)]


def _first_views(ranked: Sequence[Unit]) -> list[Unit]:
    first: dict[int, Unit] = {}
    for unit in ranked:
        first.setdefault(unit.member, unit)
    return list(first.values())


def has_values(ranked: Sequence[Unit]) -> bool:
    """Whether every model's first view carries a recorded value."""
    first = _first_views(ranked)
    return bool(first) and all(unit.value is not None for unit in first)


def credits(ranked: Sequence[Unit], cost: dict[Unit, float]) -> dict[Unit, float]:
    """With values: each group's value (the sum of its models' values) on its cheapest fold's
    first view (ties: the first in config order), for groups worth more than nothing; without
    values, none."""
    if not has_values(ranked):
        return {}
    groups: dict[str, list[Unit]] = {}
    for unit in _first_views(ranked):
        groups.setdefault(unit.group, []).append(unit)
    credit = {}
    for units in groups.values():
        value = sum(unit.value for unit in units)
        if value > 0:
            credit[min(units, key=lambda u: cost[u])] = value
    return credit


def priority_order(ranked: Sequence[Unit], cost: dict[Unit, float],
                   credit: dict[Unit, float]) -> list[Unit]:
    """Units in the order the plan considers them (and the guard adds them back): credited
    units by value per second, then the rest in the diverse order of `ranked`, where a group's
    credited fold counts as its first."""
    valued = sorted(credit, key=lambda u: -credit[u] / max(cost[u], _EPS))
    views: dict[int, int] = {}  # member -> views seen so far
    folds: dict[str, list[int]] = {}  # group -> its members, credited first
    groups: dict[str, int] = {}  # group -> rank
    key = {}
    for unit in ranked:
        view = views[unit.member] = views.get(unit.member, -1) + 1
        groups.setdefault(unit.group, len(groups))
        if view == 0:
            folds.setdefault(unit.group, []).append(unit.member)
    for unit in credit:
        folds[unit.group].remove(unit.member)
        folds[unit.group].insert(0, unit.member)
    views.clear()
    for unit in ranked:
        view = views[unit.member] = views.get(unit.member, -1) + 1
        key[unit] = (view, folds[unit.group].index(unit.member), groups[unit.group])
    return valued + sorted((u for u in ranked if u not in credit), key=key.__getitem__)


def _first_fit(order: Sequence[Unit], cost: dict[Unit, float], room: float,
               kept: list[Unit]) -> list[Unit]:
    used = sum(cost[u] for u in kept)
    for unit in order:
        if unit not in kept and used + cost[unit] <= room + _EPS:
            kept.append(unit)
            used += cost[unit]
    return kept


def _swap_repair(order: Sequence[Unit], cost: dict[Unit, float], credit: dict[Unit, float],
                 room: float, kept: list[Unit]) -> list[Unit]:
    """Let each left-out credited unit (most valuable first) replace the kept units of lowest
    value per second that make room for it, when it is worth more than they are together."""
    for unit in sorted((u for u in credit if u not in kept), key=lambda u: -credit[u]):
        free = room - sum(cost[u] for u in kept)
        removed: list[Unit] = []
        for victim in reversed(kept):  # kept is in priority order: lowest value per second last
            if free + _EPS >= cost[unit]:
                break
            removed.append(victim)
            free += cost[victim]
        if free + _EPS >= cost[unit] and sum(credit[v] for v in removed) < credit[unit]:
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
    credit: dict[Unit, float] = field(default_factory=dict)  # value credited to units

    @property
    def dropped(self) -> list[Unit]:
        return [u for u in self.order if u not in self.kept]

    @property
    def by_value(self) -> bool:
        return has_values(self.order)

    @property
    def projected(self) -> float:
        """Seconds for the images left, with the kept units."""
        return self.images * (self.base_cost + sum(self.cost[u] for u in self.kept))

    def value(self, units: Sequence[Unit] | None = None) -> float:
        return sum(self.credit.get(u, 0.0) for u in (self.kept if units is None else units))

    def describe(self) -> str:
        """The plan as one log block: what runs, what is left out, value and seconds of each."""
        first = _first_views(self.order)
        unvalued = [u.label[:-len(u.op) - 1] for u in first if u.value is None]
        rule = ("by OOF value per second: a model's value on its cheapest fold, the other "
                "views after" if self.by_value else
                ("no recorded values" if len(unvalued) == len(first) else
                 f"no recorded value for {', '.join(unvalued)}")
                + ": one fold of every model first, then further folds, then TTA views")
        lines = [f"plan: {len(self.kept)} of {len(self.order)} model views run on the "
                 f"{self.images} images left, projected {self.projected:.1f} s of "
                 f"{self.available:.1f} s ({rule}); decoding {self.images * self.base_cost:.1f} s"]
        width = max(len(u.label) for u in self.order)
        for status, units in (("runs", self.kept), ("left out", self.dropped)):
            for u in units:
                value = f"{self.credit[u]:.5g}" if u in self.credit else "-"
                lines.append(f"  {status:<9}{u.label:<{width}}  value {value:>9}  "
                             f"{self.images * self.cost[u]:8.1f} s")
        if self.by_value:
            lines.append(f"  value kept {self.value():.5g} of {self.value(self.order):.5g}")
        return "\n".join(lines)


def choose_units(ranked: Sequence[Unit], cost: dict[Unit, float], base_cost: float,
                 images: int, available: float) -> Plan:
    """The units of `ranked` (in `rank_units` order) that run on `images` in `available`
    seconds (per image: `base_cost` for decoding plus `cost[unit]` per unit); never empty."""
    credit = credits(ranked, cost)
    order = priority_order(ranked, cost, credit)
    if images <= 0:
        return Plan(order, list(order), cost, base_cost, images, available, credit)
    room = available / images - base_cost
    kept = _first_fit([u for u in order if u in credit], cost, room, [])
    kept = _swap_repair(order, cost, credit, room, kept)
    kept = _first_fit(order, cost, room, kept)
    if not kept:
        kept = [order[0]]
    return Plan(order, [u for u in order if u in kept], cost, base_cost, images, available,
                credit)


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
        if images_left <= 0:  # nothing left to plan for
            return change
        while len(self.active) > 1 and self.projected_finish(images_left) > self.deadline:
            change.dropped.append(self.active.pop())
        if change.dropped or self.slowdown is None:
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
