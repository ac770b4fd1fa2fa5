"""Fit the ensemble into the time budget: plan on a probe batch, then guard the deadline.

Work comes in units: one TTA view of one model. Units are ranked models first, then TTA: every
model's first view (highest weight first), then every model's second view, and so on, because a
second model usually adds more than a second view of the first. The planner keeps the longest
prefix of that ranking whose projected time fits what is left of the budget; the guard re-projects
after every batch from measured times and drops units from the end of the ranking when the
projection slips. At least one unit always runs; if even that cannot finish, the hard stop lets
the kernel write fallback rows for the rest, so a submission is always written in time. A model
that loses views keeps its weight in the blend: the views it still runs are combined and carry it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Unit:
    member: int  # index into the ensemble's members
    op: str  # TTA op
    label: str  # "<model name>:<op>", for logs


def rank_units(members: Sequence[tuple[str, float, Sequence[str]]]) -> list[Unit]:
    """Units of `(name, weight, tta ops)` members in priority order: models first, then TTA."""
    by_weight = sorted(range(len(members)), key=lambda m: -members[m][1])  # stable: config order
    depth = max(len(ops) for _, _, ops in members)
    return [Unit(m, members[m][2][rank], f"{members[m][0]}:{members[m][2][rank]}")
            for rank in range(depth) for m in by_weight if rank < len(members[m][2])]


@dataclass
class Plan:
    kept: list[Unit]
    dropped: list[Unit]
    projected: float  # seconds for the images left, with the kept units
    available: float  # seconds left before the planning deadline

    def describe(self) -> str:
        kept = ", ".join(u.label for u in self.kept)
        text = (f"plan: {len(self.kept)} of {len(self.kept) + len(self.dropped)} model views fit "
                f"(projected {self.projected:.1f} s of {self.available:.1f} s left): {kept}")
        if self.dropped:
            text += f"; dropped: {', '.join(u.label for u in self.dropped)}"
        return text


def choose_units(ranked: Sequence[Unit], cost: dict[Unit, float], base_cost: float,
                 images: int, available: float) -> Plan:
    """The longest prefix of `ranked` whose projected time for `images` fits in `available`
    (seconds per image: `base_cost` for decoding plus `cost[unit]` per unit); never empty."""
    kept = 1
    per_image = base_cost + cost[ranked[0]]
    while kept < len(ranked) and images * (per_image + cost[ranked[kept]]) <= available:
        per_image += cost[ranked[kept]]
        kept += 1
    return Plan(list(ranked[:kept]), list(ranked[kept:]), images * per_image, available)


class DeadlineGuard:
    """Re-projects the finish after each batch and drops the lowest-ranked units that no longer
    fit. `deadline` is the planning target; past `hard_stop` no more predictions are made."""

    def __init__(self, plan: Plan, cost: dict[Unit, float], base_cost: float, deadline: float,
                 hard_stop: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.active = list(plan.kept)
        self.cost = cost
        self.base_cost = base_cost
        self.deadline = deadline
        self.hard_stop = hard_stop
        self.clock = clock
        self.slowdown: float | None = None  # measured / estimated seconds per image, smoothed

    def estimated_per_image(self) -> float:
        return self.base_cost + sum(self.cost[u] for u in self.active)

    def after_batch(self, images: int, seconds: float, images_left: int) -> list[Unit]:
        """Record a batch; return the units dropped to keep the projection inside the deadline."""
        if images > 0 and seconds > 0:
            ratio = seconds / images / self.estimated_per_image()
            self.slowdown = ratio if self.slowdown is None else 0.5 * (self.slowdown + ratio)
        dropped = []
        while len(self.active) > 1 and self.projected_finish(images_left) > self.deadline:
            dropped.append(self.active.pop())
        return dropped

    def projected_finish(self, images_left: int) -> float:
        slowdown = 1.0 if self.slowdown is None else self.slowdown
        return self.clock() + images_left * self.estimated_per_image() * slowdown

    def can_run(self, images: int) -> bool:
        """Whether a batch of `images` is projected to end before the hard stop."""
        return self.projected_finish(images) <= self.hard_stop
