"""Switch-back schedules: deterministic, balanced, scoped; definitions validated with a reason."""

from __future__ import annotations

import math

import pytest

from tickmatch.experiments.switchback import Experiment, ExperimentError

ARMS = {"learned": "current", "base": "heuristic"}


def test_the_schedule_is_a_pure_function_balanced_over_slices_and_shards() -> None:
    exp = Experiment("e1", ARMS, slice_s=60.0, washout_s=10.0, seed=3, start=1000.0)
    again = Experiment.from_dict({"id": "e1", "arms": ARMS, "slice_s": 60, "washout_s": 10, "seed": 3, "start": 1000})
    cells = [(f"s{k}", i) for k in range(4) for i in range(500)]
    arms = [exp.arm_of(shard, i) for shard, i in cells]
    assert arms == [again.arm_of(shard, i) for shard, i in cells]  # every worker computes the same schedule
    share = arms.count("learned") / len(arms)
    assert 0.45 < share < 0.55  # uniform draw per (shard, slice)
    other_seed = Experiment("e1", ARMS, slice_s=60.0, seed=4, start=1000.0)
    assert arms != [other_seed.arm_of(shard, i) for shard, i in cells]


def test_an_assignment_names_the_slice_and_its_washout_and_is_none_out_of_scope() -> None:
    exp = Experiment("e1", ARMS, slice_s=60.0, washout_s=10.0, shards=("s1",), start=1000.0, end=2000.0)
    first = exp.assign("s1", 1000.0)
    assert first is not None and (first.slice_id, first.washout) == (0, True)
    later = exp.assign("s1", 1130.0)
    assert later is not None and (later.slice_id, later.washout) == (2, False)
    assert later.arm == exp.arm_of("s1", 2) and later.experiment == "e1"
    assert exp.assign("s2", 1130.0) is None  # shard not in scope
    assert exp.assign("s1", 999.0) is None and exp.assign("s1", 2000.0) is None  # before start, after end


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"id": "e", "arms": {"a": "current"}}, "at least two"),
        ({"id": "e", "arms": {"a": "current", "b": "oracle"}}, "arms.b: model must be one of"),
        ({"id": "e", "arms": ARMS, "slice_s": 60, "washout_s": 60}, "washout_s"),
        ({"arms": ARMS}, "id: required"),
        ({"id": "e", "arms": ARMS, "slices": 3}, "unknown fields ['slices']"),
        ({"id": "e", "arms": ARMS, "slice_s": "soon"}, "bad value"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_a_bad_definition_is_refused_with_the_field_named(doc: object, reason: str) -> None:
    with pytest.raises(ExperimentError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        Experiment.from_dict(doc)


def test_an_open_ended_experiment_runs_forever() -> None:
    exp = Experiment.from_dict({"id": "e", "arms": ARMS})
    assert exp.end == math.inf and exp.assign("s", 1e12) is not None
