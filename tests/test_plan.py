"""The budget plan with and without recorded values, and the guard adding work back; costs and
clocks are fed in directly, so nothing here depends on how fast this machine is."""

import pytest

from inference_core.budget import ADD_HEADROOM, DeadlineGuard, choose_units, rank_units
from inference_core.config import EnsembleConfig
from inference_core.errors import ConfigError
from inference_core.runner import run_kernel

# The demo's digits kernel: small_cnn x 3 folds at weight 0.2 each, ResNet-18 x 3 folds at 0.13.
SMALL, RESNET = 0.001, 0.004  # seconds per image of one fold
IMAGES, DECODE = 1000, 0.0005


def _demo(values=None):
    values = values or {}
    members = [(f"{arch}_f{k}", weight, ["identity"], arch, values.get(arch))
               for arch, weight in (("small_cnn", 0.2), ("resnet18", 0.13)) for k in range(3)]
    ranked = rank_units(members)
    cost = {u: SMALL if u.label.startswith("small") else RESNET for u in ranked}
    return ranked, cost


def _kept(plan):
    return [u.label.split(":")[0] for u in plan.kept]


@pytest.mark.parametrize("values", [None, {"small_cnn": 0.010, "resnet18": 0.008}])
def test_a_budget_that_fits_one_resnet_fold_beside_the_small_folds_keeps_one(values):
    ranked, cost = _demo(values)
    # 3 small folds + 1 ResNet fold + decoding = 7.5 s; a second ResNet fold would need 11.5 s.
    plan = choose_units(ranked, cost, DECODE, IMAGES, available=8.0)
    assert sorted(_kept(plan)) == ["resnet18_f0", "small_cnn_f0", "small_cnn_f1", "small_cnn_f2"]
    assert plan.projected == pytest.approx(7.5)


def test_without_values_one_fold_of_every_model_comes_before_second_folds():
    ranked, cost = _demo()
    # 6.6 s: three small folds (3.5 s) would leave no room for a ResNet fold; the diverse order
    # keeps one of each and then the second small fold.
    plan = choose_units(ranked, cost, DECODE, IMAGES, available=6.6)
    assert _kept(plan) == ["small_cnn_f0", "resnet18_f0", "small_cnn_f1"]


def test_a_group_is_worth_its_folds_values_on_its_first_fold_and_the_log_shows_it():
    ranked, cost = _demo({"small_cnn": 0.010, "resnet18": 0.036})
    cost[next(u for u in ranked if u.label == "resnet18_f1:identity")] = 0.003
    # The groups are worth 0.03 (30 per second) and 0.108, credited to the cheapest ResNet fold
    # (36 per second): both run, then the other folds fill what is left in the diverse order,
    # where resnet18_f1 counts as its group's first fold.
    plan = choose_units(ranked, cost, DECODE, IMAGES, available=9.0)
    assert _kept(plan) == ["resnet18_f1", "small_cnn_f0", "small_cnn_f1", "small_cnn_f2"]
    block = plan.describe().splitlines()
    assert "by OOF value per second: a model's value on its cheapest fold, the other views " \
        "after); decoding 0.5 s" in block[0]
    assert [row.split()[:4] for row in block[1:7]] == [
        ["runs", "resnet18_f1:identity", "value", "0.108"],
        ["runs", "small_cnn_f0:identity", "value", "0.03"],
        ["runs", "small_cnn_f1:identity", "value", "-"],
        ["runs", "small_cnn_f2:identity", "value", "-"],
        ["left", "out", "resnet18_f0:identity", "value"],
        ["left", "out", "resnet18_f2:identity", "value"]]
    assert block[5].split()[4:] == ["-", "4.0", "s"]
    assert block[-1] == "  value kept 0.138 of 0.138"


def test_the_more_valuable_group_wins_when_only_one_fits():
    ranked, cost = _demo({"small_cnn": 0.001, "resnet18": 0.030})
    # 4.5 s: one ResNet fold (worth 0.09) or up to four small ones (worth 0.003 together).
    plan = choose_units(ranked, cost, DECODE, IMAGES, available=4.5)
    assert _kept(plan) == ["resnet18_f0"]
    ranked, cost = _demo()
    assert _kept(choose_units(ranked, cost, DECODE, IMAGES, available=4.5)) == [
        "small_cnn_f0", "small_cnn_f1", "small_cnn_f2"]


def test_the_swap_repair_trades_cheap_views_for_a_more_valuable_one():
    members = [("a", 1.0, ["identity"], None, 2.0), ("b", 1.0, ["identity"], None, 2.0),
               ("c", 1.0, ["identity"], None, 5.0)]
    ranked = rank_units(members)
    cost = {u: 3.0 if u.label.startswith("c") else 1.0 for u in ranked}
    # Greedy by value per second takes a and b (2/s each) and has no room for c (5/3 per
    # second); c alone is worth more than both.
    plan = choose_units(ranked, cost, 0.0, 1, available=3.0)
    assert _kept(plan) == ["c"] and plan.value() == 5.0


def test_views_without_a_value_fill_the_time_left_and_never_displace_valued_ones():
    members = [("a", 1.0, ["identity", "hflip"], None, 1.0), ("b", 1.0, ["identity"], None, 0.5),
               ("c", 1.0, ["identity"], None, -0.1)]
    ranked = rank_units(members)
    cost = {u: 1.0 for u in ranked}
    plan = choose_units(ranked, cost, 0.0, 1, available=3.0)
    # a's identity and b carry values; c (a negative value) comes before a's second view in
    # the diverse order and takes the last second.
    assert [u.label for u in plan.kept] == ["a:identity", "b:identity", "c:identity"]
    assert [u.label for u in choose_units(ranked, cost, 0.0, 1, 2.0).kept] == [
        "a:identity", "b:identity"]


def test_a_model_without_a_value_plans_everything_in_the_diverse_order():
    members = [("a", 1.0, ["identity"], None, 0.0001), ("b", 2.0, ["identity"], None, None)]
    ranked = rank_units(members)
    plan = choose_units(ranked, {u: 1.0 for u in ranked}, 0.0, 1, 1.0)
    assert not plan.by_value and [u.label for u in plan.kept] == ["b:identity"]
    assert "(no recorded value for b: one fold of every model first" in plan.describe()


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_run_that_is_ahead_adds_left_out_views_back():
    ranked, cost = _demo({"small_cnn": 0.010, "resnet18": 0.008})
    plan = choose_units(ranked, cost, DECODE, IMAGES, available=8.0)
    clock = Clock()
    guard = DeadlineGuard(plan, deadline=7.0, hard_stop=9.0, clock=clock)
    # The first 100 images took half the estimated 7.5 ms each: 900 images left at 3.75 ms
    # end at 0.375 + 3.375 s; a second ResNet fold adds 900 x 4 ms x 0.5 (+ headroom) = 2.07 s.
    clock.now = 0.375
    change = guard.after_batch(100, 0.375, images_left=900)
    assert change.dropped == []
    assert [u.label for u in change.added] == ["resnet18_f1:identity"]
    assert guard.projected_finish(900) == pytest.approx(0.375 + 900 * 0.0115 * 0.5)
    # The third fold does not fit: 5.55 + 900 x 4 ms x 0.5 x (1 + headroom) > 7.
    assert 0.375 + 900 * 0.0115 * 0.5 + 900 * RESNET * 0.5 * (1 + ADD_HEADROOM) > 7.0
    # On track after that: nothing changes; then slower (slowdown 0.65, projected 7.1 s): the
    # last of the plan's order (the third small fold) goes first, and that is enough.
    clock.now = 0.95
    assert guard.after_batch(100, 0.575, images_left=800) == type(change)([], [])
    clock.now = 1.87
    change = guard.after_batch(100, 0.92, images_left=700)
    assert [u.label for u in change.dropped] == ["small_cnn_f2:identity"] and change.added == []
    assert [u.label for u in guard.active] == [
        "small_cnn_f0:identity", "resnet18_f0:identity", "small_cnn_f1:identity",
        "resnet18_f1:identity"]
    # After the last batch there is nothing left to drop views for, however late it is.
    clock.now = 8.5
    assert guard.after_batch(100, 6.0, images_left=0) == type(change)([], [])
    assert len(guard.active) == 4


def test_the_guard_adds_nothing_before_it_has_measured_a_batch():
    ranked, cost = _demo()
    plan = choose_units(ranked, cost, DECODE, IMAGES, available=4.0)
    guard = DeadlineGuard(plan, deadline=100.0, hard_stop=110.0, clock=Clock())
    assert guard.after_batch(0, 0.0, images_left=1000).added == []
    assert len(guard.after_batch(10, 0.01, images_left=990).added) == len(plan.dropped)


def test_config_values_one_number_per_member():
    config = EnsembleConfig.from_dict({
        "models": [{"name": "cnn", "folds": [0, 2], "value": [0.01, 0.03]},
                   {"name": "res", "folds": [0, 1], "value": 0.04},
                   {"name": "solo", "value": -0.002}],
        "test": {"images": "t"}, "submission": {"format": "multiclass"}})
    members = config.members()
    assert [(m.label, m.value) for m in members] == [
        ("cnn_f0", 0.01), ("cnn_f2", 0.03), ("res_f0", 0.02), ("res_f1", 0.02),
        ("solo", -0.002)]
    # A missing fold keeps the listed values of the others; a single number is re-split.
    present = config.members(present={"cnn_f2", "res_f1", "solo"})
    assert [m.value for m in present] == [0.03, 0.04, -0.002]
    for bad, message in (
            ({"name": "cnn", "folds": [0, 1], "value": [0.1]},
             "models[0].value: 1 values for 2 folds; give one per fold, in the order of folds"),
            ({"name": "cnn", "value": [0.1]},
             "models[0].value: a list of values is for a folds group"),
            ({"name": "cnn", "value": "high"}, "models[0].value: must be a number, got 'high'")):
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            EnsembleConfig.from_dict({"models": [bad], "test": {"images": "t"},
                                      "submission": {"format": "multiclass"}})


def test_the_kernel_plans_with_the_values_in_its_config(digits_input, tmp_path):
    config = {"models": [{"name": "cnn", "folds": [0, 1], "value": [0.02, 0.01]}],
              "input_roots": [str(digits_input)],
              "test": {"images": "digits/test",
                       "sample_submission": "digits/sample_submission.csv"},
              "submission": {"format": "multiclass"}, "tta": ["identity", "hflip"],
              "batch_size": 16}
    lines = []
    summary = run_kernel(EnsembleConfig.from_dict(config), working_dir=tmp_path,
                         log=lines.append, progress=False)
    plan = next(line for line in lines if line.startswith("plan:")).splitlines()
    assert "4 of 4 model views run" in plan[0] and "by OOF value per second" in plan[0]
    # The group's value (0.02 + 0.01) sits on its cheaper fold (which one depends on the
    # measured seconds), then the other fold; the further views carry none.
    rows = [row.split()[:4] for row in plan[1:5]]
    assert rows[0][2:] == ["value", "0.03"] and rows[1][2:] == ["value", "-"]
    assert sorted(row[1] for row in rows[:2]) == ["cnn_f0:identity", "cnn_f1:identity"]
    first = rows[0][1].split(":")[0]
    assert rows[2:] == [["runs", f"{first}:hflip", "value", "-"],
                        ["runs", f"{rows[1][1].split(':')[0]}:hflip", "value", "-"]]
    assert plan[5] == "  value kept 0.03 of 0.03"
    assert summary.dropped == () and summary.added == ()
