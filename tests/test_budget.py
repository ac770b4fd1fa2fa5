import pytest

from inference_core.budget import DeadlineGuard, choose_units, rank_units

MEMBERS = [("small", 1.0, ["identity", "hflip"]), ("big", 3.0, ["identity", "hflip"]),
           ("mid", 2.0, ["identity"])]


def test_models_rank_before_tta_and_heavier_weights_first():
    assert [u.label for u in rank_units(MEMBERS)] == [
        "big:identity", "mid:identity", "small:identity", "big:hflip", "small:hflip"]


def test_one_fold_of_every_group_ranks_before_any_second_fold():
    members = [("cnn_f0", 0.2, ["identity"], "cnn"), ("cnn_f1", 0.2, ["identity"], "cnn"),
               ("cnn_f2", 0.2, ["identity", "hflip"], "cnn"),
               ("resnet_f0", 0.13, ["identity"], "resnet"),
               ("resnet_f1", 0.13, ["identity"], "resnet"), ("solo", 0.1, ["identity"])]
    assert [u.label for u in rank_units(members)] == [
        "cnn_f0:identity", "resnet_f0:identity", "solo:identity", "cnn_f1:identity",
        "resnet_f1:identity", "cnn_f2:identity", "cnn_f2:hflip"]


def _costs(ranked, seconds=0.1):
    return {u: seconds for u in ranked}


def test_without_values_the_plan_takes_the_ranking_first_fit():
    ranked = rank_units(MEMBERS)
    plan = choose_units(ranked, _costs(ranked), base_cost=0.05, images=100, available=26.0)
    assert [u.label for u in plan.kept] == ["big:identity", "mid:identity"]
    assert plan.projected == pytest.approx(25.0)
    block = plan.describe()
    assert "plan: 2 of 5 model views run on the 100 images left, projected 25.0 s of 26.0 s" \
        in block
    assert "no recorded values" in block
    assert [line.split()[:2] for line in block.splitlines()[1:]] == [
        ["runs", "big:identity"], ["runs", "mid:identity"], ["left", "out"], ["left", "out"],
        ["left", "out"]]
    assert block.splitlines()[3].split()[2:] == ["small:identity", "value", "-", "10.0", "s"]
    everything = choose_units(ranked, _costs(ranked), 0.05, 100, 1000.0)
    assert everything.dropped == []


def test_a_cheaper_unit_that_still_fits_is_not_skipped():
    ranked = rank_units(MEMBERS)
    cost = _costs(ranked)
    cost[ranked[1]] = 0.5  # mid:identity does not fit beside big:identity, the next ones do
    plan = choose_units(ranked, cost, base_cost=0.0, images=100, available=35.0)
    assert [u.label for u in plan.kept] == ["big:identity", "small:identity", "big:hflip"]


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
    # 3 units at 0.1 s per image: 100 images fit in 30 s.
    plan = choose_units(ranked, _costs(ranked), 0.0, 100, available=30.0)
    assert len(plan.kept) == 3
    return DeadlineGuard(plan, deadline, hard_stop, clock)


def test_the_guard_drops_the_lowest_ranked_units_when_the_projection_slips():
    clock = Clock()
    guard = _guard(clock)
    clock.now = 3.0  # 10 images at the estimated 0.3 s each: on track
    change = guard.after_batch(10, 3.0, images_left=50)
    assert change.dropped == [] and change.added == []
    # The next 10 took twice as long: slowdown 1.5, so 30 left at 3 x 0.1 x 1.5 s would end
    # at 9 + 13.5 > 20; without the lowest unit, 9 + 30 x 0.2 x 1.5 = 18 fits.
    clock.now = 9.0
    change = guard.after_batch(10, 6.0, images_left=30)
    assert [u.label for u in change.dropped] == ["small:identity"] and change.added == []
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
