import pytest

from inference_core.budget import DeadlineGuard, Plan, choose_units, rank_units

MEMBERS = [("small", 1.0, ["identity", "hflip"]), ("big", 3.0, ["identity", "hflip"]),
           ("mid", 2.0, ["identity"])]


def test_models_rank_before_tta_and_heavier_weights_first():
    assert [u.label for u in rank_units(MEMBERS)] == [
        "big:identity", "mid:identity", "small:identity", "big:hflip", "small:hflip"]


def _costs(ranked, seconds=0.1):
    return {u: seconds for u in ranked}


def test_the_plan_keeps_the_longest_prefix_that_fits():
    ranked = rank_units(MEMBERS)
    plan = choose_units(ranked, _costs(ranked), base_cost=0.05, images=100, available=26.0)
    assert [u.label for u in plan.kept] == ["big:identity", "mid:identity"]
    assert plan.projected == pytest.approx(25.0)
    assert "dropped: small:identity, big:hflip, small:hflip" in plan.describe()
    everything = choose_units(ranked, _costs(ranked), 0.05, 100, 1000.0)
    assert everything.dropped == []


def test_the_plan_never_drops_the_first_unit():
    ranked = rank_units(MEMBERS)
    plan = choose_units(ranked, _costs(ranked), 0.05, 100, available=0.1)
    assert [u.label for u in plan.kept] == ["big:identity"]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _guard(clock, deadline=20.0, hard_stop=25.0):
    ranked = rank_units(MEMBERS)
    plan = Plan(ranked[:3], ranked[3:], 0.0, 0.0)
    return DeadlineGuard(plan, _costs(ranked), 0.0, deadline, hard_stop, clock)


def test_the_guard_drops_the_lowest_ranked_units_when_the_projection_slips():
    clock = Clock()
    guard = _guard(clock)
    clock.now = 3.0  # 10 images at the estimated 0.3 s each: on track
    assert guard.after_batch(10, 3.0, images_left=50) == []
    # The next 10 took twice as long: slowdown 1.5, so 30 left at 3 x 0.1 x 1.5 s would end
    # at 9 + 13.5 > 20; without the lowest unit, 9 + 30 x 0.2 x 1.5 = 18 fits.
    clock.now = 9.0
    dropped = guard.after_batch(10, 6.0, images_left=30)
    assert [u.label for u in dropped] == ["small:identity"]
    assert guard.projected_finish(30) == pytest.approx(18.0)


def test_the_guard_keeps_one_unit_and_stops_at_the_hard_stop():
    clock = Clock()
    guard = _guard(clock)
    clock.now = 19.0
    guard.after_batch(10, 19.0, images_left=1000)
    assert [u.label for u in guard.active] == ["big:identity"]
    # slowdown 19 / 10 / 0.3 = 6.33: one more image takes 0.1 x 6.33 s
    assert guard.can_run(1) and guard.can_run(9)
    assert not guard.can_run(10)  # 19 + 10 x 0.633 > 25
    clock.now = 25.0
    assert not guard.can_run(1)
