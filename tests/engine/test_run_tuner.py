"""RunTuner: tries each layout on real groups, round robin, then keeps the one fastest per item."""

from __future__ import annotations

from engine.backends.base import RunLayout
from engine.run_tuner import RunTuner, size_class

WHOLE, SINGLE, LANES = RunLayout(1, None), RunLayout(1, 1), RunLayout(2, None)


def test_a_single_candidate_is_used_without_measuring() -> None:
    tuner = RunTuner()
    assert tuner.choose("k", [WHOLE]) == WHOLE
    tuner.record("k", WHOLE, 1.0, 4)
    assert tuner.chosen() == {}


def test_candidates_are_tried_in_turn_then_the_fastest_per_item_is_kept() -> None:
    tuner = RunTuner(trials=3)
    cost = {WHOLE: 0.8, SINGLE: 1.0, LANES: 0.5}  # seconds per group of 8
    tried = []
    for _ in range(9):
        layout = tuner.choose("k", [WHOLE, SINGLE, LANES])
        tried.append(layout)
        tuner.record("k", layout, cost[layout], 8)
    assert tried[:3] == [WHOLE, SINGLE, LANES]  # round robin: each candidate meets the same moment's noise
    assert tried.count(WHOLE) == tried.count(SINGLE) == tried.count(LANES) == 3
    assert tuner.chosen() == {"k": LANES}
    assert all(tuner.choose("k", [WHOLE, SINGLE, LANES]) == LANES for _ in range(5))


def test_one_slow_outlier_does_not_decide() -> None:
    tuner = RunTuner(trials=3)
    times = {WHOLE: [0.5, 0.5, 0.5], SINGLE: [0.4, 5.0, 0.4]}  # a hiccup in one trial of SINGLE
    for i in range(3):
        for layout in (WHOLE, SINGLE):
            assert tuner.choose("k", [WHOLE, SINGLE]) == layout
            tuner.record("k", layout, times[layout][i], 1)
    assert tuner.chosen()["k"] == SINGLE


def test_kinds_of_group_are_tuned_apart() -> None:
    tuner = RunTuner(trials=1)
    for key, faster in (("small", WHOLE), ("large", SINGLE)):
        for _ in range(2):
            layout = tuner.choose(key, [WHOLE, SINGLE])
            tuner.record(key, layout, 1.0 if layout == faster else 2.0, 1)
    assert tuner.chosen() == {"small": WHOLE, "large": SINGLE}


def test_size_classes_are_powers_of_two() -> None:
    assert [size_class(n) for n in (1, 2, 3, 4, 7, 8, 15, 16, 100)] == [1, 2, 2, 4, 4, 8, 8, 16, 64]


def test_decisions_survive_a_round_trip_and_a_new_tuner_does_not_measure_again() -> None:
    tuner = RunTuner(trials=1)
    key = ((("image", (3, 256, 256)),), 8)
    for _ in range(2):
        layout = tuner.choose(key, [WHOLE, LANES])
        tuner.record(key, layout, 1.0 if layout == LANES else 3.0, 8)
    import json

    from engine.run_tuner import from_json

    saved = json.loads(json.dumps(tuner.to_json()))
    fresh = RunTuner()
    fresh.load(from_json(saved))
    assert fresh.chosen() == {key: LANES}
    assert fresh.choose(key, [WHOLE, LANES]) == LANES
    assert fresh.choose(key, [WHOLE, SINGLE]) == WHOLE  # other candidates: measured anew
    assert from_json([{"key": [1], "chosen": "bad"}, 5]) == []
