"""The population coordinator as a pure policy: views in, exploits out."""

from __future__ import annotations

import json
import math
import random

import pytest

from lrsup.supervisor.config import Mutation, PopulationSettings
from lrsup.supervisor.queue.pbt import Coordinator, MemberView, explore, quantiles


def settings(**kw):
    base = {"interval": 2, "quantile": 0.25, "metric": "val_loss", "mutations": {"lr": {"log_uniform": [1e-4, 1.0]}}}
    base.update(kw)
    return PopulationSettings.model_validate(base)


def view(name, epochs, score, checkpoint="epoch-0001", lr=0.01, alive=True):
    return MemberView(name, epochs, score, checkpoint, {"lr": lr}, alive)


def test_quantiles_follow_rays_rule_and_cap_at_half():
    views = [view(f"m{i}", 2, float(i)) for i in range(8)]  # val_loss: m0 best
    bottom, top = quantiles(views, 0.25, "min")
    assert bottom == ["m7", "m6"] and top == ["m0", "m1"]
    assert quantiles(views[:3], 0.5, "min") == (["m2"], ["m0"])  # ceil(1.5)=2 capped at 3//2=1
    assert quantiles(views[:1], 0.25, "min") == ([], [])


def test_max_mode_and_nan_is_worst():
    views = [view("a", 2, 0.9), view("b", 2, math.nan), view("c", 2, 0.5), view("d", 2, 0.7)]
    bottom, top = quantiles(views, 0.25, "max")
    assert bottom == ["b"] and top == ["a"]
    # with val_loss (min) NaN is still the worst, never a donor
    bottom, top = quantiles(views, 0.25, "min")
    assert bottom == ["b"] and top == ["c"]


def test_ties_are_broken_by_member_order_and_an_equal_donor_is_not_copied():
    views = [view("a", 2, 1.0), view("b", 2, 1.0), view("c", 2, 1.0), view("d", 2, 1.0)]
    assert quantiles(views, 0.25, "min") == (["d"], ["a"])
    assert Coordinator(settings()).decide(views) == []  # all equal: nobody gains by copying


def test_bottom_member_at_a_boundary_exploits_a_top_member():
    c = Coordinator(settings())
    views = [view("a", 2, 0.1, "epoch-0001", lr=0.1), view("b", 2, 0.5), view("c", 2, 0.4), view("d", 2, 0.9, lr=0.001)]
    (e,) = c.decide(views)
    assert (e.member, e.donor, e.epoch, e.checkpoint) == ("d", "a", 2, "epoch-0001")
    assert e.old == {"lr": 0.001}
    assert e.new["lr"] != 0.1 and 1e-4 <= e.new["lr"] <= 1.2  # explored from the donor's
    assert c.decide(views) == []  # that boundary is decided once


def test_members_at_different_epochs_compare_against_latest_scores():
    c = Coordinator(settings())
    # d is slow (epoch 1: not at a boundary); a, b, c reach epoch 2 first: nobody is worse than d's score
    views = [view("a", 2, 0.2), view("b", 2, 0.3), view("c", 2, 0.4), view("d", 1, 0.9)]
    assert c.decide(views) == []  # c is not in the bottom quantile (d is), d is not due
    views[3] = view("d", 2, 0.8)
    (e,) = c.decide(views)
    assert e.member == "d" and e.donor == "a"
    # a runs ahead to epoch 4 and is still best: due, in the top, no exploit
    assert c.decide([view("a", 4, 0.1), views[1], views[2], views[3]]) == []


def test_interval_and_burn_in():
    c = Coordinator(settings(interval=3, burn_in=4))
    views = [view("a", 3, 0.1), view("b", 3, 0.2), view("c", 3, 0.3), view("d", 3, 0.9)]
    assert c.decide(views) == []  # burn-in
    views = [view("a", 4, 0.1), view("b", 4, 0.2), view("c", 4, 0.3), view("d", 4, 0.9)]
    assert [e.member for e in c.decide(views)] == ["d"]
    views = [view("a", 6, 0.1), view("b", 6, 0.2), view("c", 6, 0.3), view("d", 6, 0.9)]
    assert c.decide(views) == []  # 2 epochs since d's boundary at 4: not yet
    views[3] = view("d", 7, 0.9)
    assert [e.member for e in c.decide(views)] == ["d"]


def test_a_dead_member_is_left_out_until_it_rejoins():
    c = Coordinator(settings())
    dead = view("a", 2, 0.01, alive=False)  # best score, but dead: never a donor
    views = [dead, view("b", 2, 0.2), view("c", 2, 0.3), view("d", 2, 0.9)]
    (e,) = c.decide(views)
    assert e.member == "d" and e.donor == "b"
    # it rejoins at epoch 4 (restarted from its checkpoint) and is a donor again
    views = [view("a", 4, 0.01), view("b", 4, 0.2), view("c", 4, 0.3), view("d", 4, 0.9)]
    assert {(e.member, e.donor) for e in c.decide(views)} == {("d", "a")}


def test_donor_without_checkpoint_is_skipped():
    c = Coordinator(settings())
    views = [view("a", 2, 0.1, checkpoint=None), view("b", 2, 0.2), view("c", 2, 0.3), view("d", 2, 0.9)]
    assert c.decide(views) == []  # the only top member (n=4: one) has nothing to give


def test_state_round_trip_decides_the_same():
    views = [view(f"m{i}", 2, float(i)) for i in range(8)]
    first = Coordinator(settings(seed=7))
    a = first.decide(views)
    second = Coordinator(settings(seed=7))
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert second.decide(views) == []  # the boundary was decided before its death
    third = Coordinator(settings(seed=7))
    assert third.decide(views) == a  # the same seed decides the same, donor and values
    with pytest.raises(ValueError, match="version"):
        third.load_state_dict({"v": 99})


def test_explore_lists_move_to_a_neighbour_or_resample():
    m = {"momentum": Mutation(values=[0.8, 0.9, 0.99])}
    seen = {explore({"momentum": 0.9}, m, 0.0, [1.2, 0.8], random.Random(i))["momentum"] for i in range(40)}
    assert seen == {0.8, 0.99}
    # a value not in the list is resampled from it
    assert explore({"momentum": 0.5}, m, 0.0, [1.2], random.Random(0))["momentum"] in (0.8, 0.9, 0.99)


def test_explore_ranges_multiply_or_resample():
    m = {"lr": Mutation(log_uniform=(1e-4, 1e-1))}
    seen = {round(explore({"lr": 0.01}, m, 0.0, [1.2, 0.8], random.Random(i))["lr"], 6) for i in range(40)}
    assert seen == {0.012, 0.008}
    always = [explore({"lr": 0.01}, m, 1.0, [1.2], random.Random(i))["lr"] for i in range(20)]
    assert all(1e-4 <= x <= 1e-1 for x in always) and len(set(always)) == 20
    assert 0.0 <= explore({}, {"wd": Mutation(uniform=(0.0, 0.1))}, 0.0, [1.2], random.Random(1))["wd"] <= 0.1


def test_settings_refuse_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown|extra"):
        PopulationSettings.model_validate({"intervall": 2})
    with pytest.raises(ValueError):
        PopulationSettings.model_validate({"quantile": 0.75})
    with pytest.raises(ValueError, match="exactly one"):
        PopulationSettings.model_validate({"mutations": {"lr": {"values": [1.0], "uniform": [0, 1]}}})
    with pytest.raises(ValueError, match="log_uniform"):
        PopulationSettings.model_validate({"mutations": {"lr": {"log_uniform": [0, 1]}}})
    assert PopulationSettings().direction == "min" and PopulationSettings(metric="val_accuracy").direction == "max"


def test_turns_park_members_at_a_boundary_while_others_wait_those_that_exploit_last():
    from dataclasses import replace

    c = Coordinator(settings())
    views = [view("a", 2, 0.1), view("b", 2, 0.5), view("c", 2, 0.4), view("d", 2, 0.9)]
    assert c.step(views).parks == []  # nobody waits: nobody is parked
    c = Coordinator(settings())
    r = c.step(views, queued=2)  # two members never started: two of the four at the boundary give way
    assert [e.member for e in r.exploits] == ["d"] and r.parks == ["a", "b"]  # d exploits: it goes last
    assert Coordinator(settings()).step(views, queued=4).parks == ["a", "b", "c", "d"]
    assert c.step(views, queued=2).parks == []  # that boundary is decided once
    # a parked member waits (it is not at a boundary while parked) and is still ranked and a donor
    c = Coordinator(settings())
    parked = [replace(views[0], parked=True, epochs=4), view("b", 4, 0.5), view("c", 4, 0.4), view("d", 4, 0.9)]
    r = c.step(parked)
    assert "a" not in r.parks and [(e.member, e.donor) for e in r.exploits] == [("d", "a")]
    assert r.parks == ["b"]  # one waits (a): one gives way
    assert not c.due(parked[0])


def test_turns_park_at_most_as_many_as_wait_and_none_without_a_boundary():
    c = Coordinator(settings())
    views = [view("a", 1, 0.1), view("b", 2, 0.5), view("c", 3, 0.4)]
    r = c.step(views, queued=1)  # a is before its boundary; b (the worst) exploits a; one waits: c parks first
    assert [e.member for e in r.exploits] == ["b"] and r.parks == ["c"]
    assert c.step([view("a", 1, 0.1), view("b", 3, 0.5), view("c", 3, 0.4)], queued=3).parks == []
    # a member at its fit's last epoch is about to end: it is not parked
    c = Coordinator(settings())
    last = [view("a", 2, 0.1), MemberView("b", 2, 0.4, "epoch-0001", {"lr": 0.01}, ending=True)]
    r = c.step(last, queued=2)
    assert r.parks == ["a"] and r.exploits == []  # b is the worst, but a copy at its last epoch trains nothing
