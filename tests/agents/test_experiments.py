"""Experiments in the worker: the definition file is hot-reloaded, each shard's ticks run its arm's model, and
every decision and label says which experiment, arm and slice it belongs to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from tickmatch.agents.experiment_file import ExperimentFile
from tickmatch.agents.runtime import WorkerRuntime
from tickmatch.experiments.switchback import Experiment
from tickmatch.learning.features import RAW_DIM
from tickmatch.learning.scorer import scorer_from_raw_weights
from tickmatch.schemas import ChatEnd, Join
from tickmatch.stream.settings import Settings
from tickmatch.testing import ManualClock, Msg, RecordingSink

ARMS = {"learned": "current", "base": "heuristic"}


def test_the_definition_file_is_reloaded_when_it_changes_and_a_bad_one_keeps_the_last(tmp_path: Path) -> None:
    path = tmp_path / "experiment.json"
    clock = ManualClock()
    source = ExperimentFile(path, every_s=2.0, clock=clock)
    assert not source.poll() and source.current is None  # no file: no experiment
    path.write_bytes(orjson.dumps({"id": "e1", "arms": ARMS, "slice_s": 60}))
    assert not source.poll()  # checked 0 s ago: not yet
    clock.advance(2.0)
    assert source.poll() and source.current is not None and source.current.id == "e1"
    path.write_bytes(b'{"id": "e2", "arms": {"x": "current"}}')  # invalid: one arm
    clock.advance(2.0)
    assert not source.poll() and source.current.id == "e1" and "at least two" in (source.problem or "")
    path.write_bytes(orjson.dumps({"id": "e2", "arms": ARMS, "slice_s": 30}))
    clock.advance(2.0)
    assert source.poll() and source.current.id == "e2" and source.problem is None
    path.unlink()
    clock.advance(2.0)
    assert source.poll() and source.current is None


def test_each_shard_runs_its_arms_model_and_decisions_and_labels_carry_the_arm() -> None:
    clock = ManualClock(1_800_000_000.0)
    sink = RecordingSink()
    runtime = WorkerRuntime(Settings(censor_after_s=60.0, label_grace_s=1.0), sink, clock)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((RAW_DIM, RAW_DIM))
    learned = scorer_from_raw_weights((w + w.T) / 2, runtime.settings.embed_dim, "learned-v1")
    runtime.set_model(learned)
    exp = Experiment("e1", ARMS, slice_s=10.0, washout_s=2.0, seed=1, start=clock())
    runtime.experiment = exp
    n = 0
    for _ in range(80):  # 40 s: four slices per shard
        msgs = []
        for shard in ("s0", "s1"):
            for _ in range(6):
                msgs.append(Msg.of(Join(f"u{n}", shard, clock(), country=f"c{n % 3}"), offset=n))
                n += 1
        runtime.apply_batch(msgs)
        runtime.tick()
        clock.advance(0.5)
    assert sink.decisions
    for d in sink.decisions:
        cell = exp.assign(d.shard, d.decided_at)
        assert cell is not None and (d.experiment, d.arm, d.slice_id, d.washout) == (
            "e1", cell.arm, cell.slice_id, cell.washout
        )  # fmt: skip
        assert d.model_version == ("learned-v1" if cell.arm == "learned" else runtime.heuristic.version)
    assert {d.arm for d in sink.decisions} == {"learned", "base"}  # both arms ran in the 8 (shard, slice) cells
    d = sink.decisions[-1]
    runtime.apply_batch([Msg.of(ChatEnd(d.match_id, u, d.shard, clock(), "hangup")) for u in (d.user_a, d.user_b)])
    label = sink.labels[-1]
    assert (label.match_id, label.experiment, label.arm, label.slice_id) == (d.match_id, "e1", d.arm, d.slice_id)

    runtime.experiment = None  # experiment over: every shard back on the current model
    runtime.apply_batch([Msg.of(Join(f"x{k}", "s0", clock()), offset=n + k) for k in range(4)])
    runtime.tick()
    tail = sink.decisions[-2:]
    assert all(x.arm is None and x.model_version == "learned-v1" for x in tail) and not runtime.pinned
