"""Analytics over records, without Kafka: windows, rates, read-outs, the Prometheus text, and no raw user id."""

from __future__ import annotations

from tickmatch.experiments.analytics import Analytics, pseudonym
from tickmatch.schemas import DurationLabel, Join, MatchDecision


def decision(mid: str, a: str, b: str, at: float, arm: str, slice_id: int) -> MatchDecision:
    return MatchDecision(mid, 1, "s", a, b, 1.0, f"model-{arm}", "p", at, 1.0, 3.0, experiment="e", arm=arm,
                         slice_id=slice_id, washout=False)  # fmt: skip


def label(d: MatchDecision, duration: float, censored: bool = False) -> DurationLabel:
    ends = 0 if censored else 2
    return DurationLabel(d.match_id, d.shard, duration, censored, ends, d.model_version, d.policy, d.decided_at,
                         experiment=d.experiment, arm=d.arm, slice_id=d.slice_id, washout=d.washout)  # fmt: skip


def test_rates_readout_and_metrics_come_out_pseudonymous() -> None:
    an = Analytics(b"k" * 32, window_s=60.0)
    users = [f"alice{i}" for i in range(8)]
    for k, u in enumerate(users):
        an.add(Join(u, "s", 10.0 + k))
    decisions = []
    for k in range(4):  # four slices, arms alternate: 'a' chats last 100 s, 'b' 60 s
        arm = "ab"[k % 2]
        d = decision(f"m{k}", users[2 * k], users[2 * k + 1], 20.0 + k, arm, k)
        decisions.append(d)
        an.add(d)
        an.add(label(d, 100.0 if arm == "a" else 60.0))
    an.add(Join(users[0], "s", 70.0))  # alice0 comes back in the next window
    outside = MatchDecision("m9", 1, "s", users[6], users[7], 1.0, "model-a", "p", 30.0, 1.0, 3.0)  # no experiment
    an.add(label(outside, 5.0, censored=True))
    assert an.match_rate(0, "s") == 1.0  # 8 joins, 8 matched users in window 0
    assert an.return_rate(0) == 1 / 8
    (readout,) = an.readouts().values()
    assert readout.effect == 40.0 and readout.cells == {"a": 2, "b": 2}
    text = an.prometheus()
    assert 'tickmatch_analytics_decisions_total{shard="s",arm="a",model="model-a"} 2' in text
    assert 'tickmatch_analytics_chat_seconds_count{shard="s",arm="b",model="model-b"} 2' in text
    assert 'tickmatch_analytics_censored_labels_total{shard="s",arm="-",model="model-a"} 1' in text
    assert 'tickmatch_analytics_experiment_effect_seconds{experiment="e",bound="estimate"} 40' in text
    assert 'tickmatch_analytics_experiment_arm_mean_seconds{experiment="e",arm="b"} 60' in text
    assert (
        "alice" not in text
        and not any("alice" in u for u in an.user_joins)
        and not any("alice" in u for u in an.user_chats)
    )
    assert pseudonym(b"k" * 32, "alice0") in an.user_joins and pseudonym(b"x" * 32, "alice0") not in an.user_joins
