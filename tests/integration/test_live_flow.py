"""End to end on the embedded broker: events → real worker process → decisions / labels / DLQ read back."""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path

import msgpack
import pytest

from tests.integration.conftest import EXPERIMENT, Live, free_port, get
from tickmatch.cli import main
from tickmatch.demo import service_process
from tickmatch.outcomes import double_booked
from tickmatch.schemas import ChatEnd, ChatHeartbeat, Join, Leave, MatchDecision, decode_record
from tickmatch.stream.partitioning import partition_for
from tickmatch.stream.readback import Seen

pytestmark = pytest.mark.integration


def in_shard(live: Live, shard: str) -> list[MatchDecision]:
    return [d for d in live.seen.decisions if d.shard == shard]


def test_no_user_is_in_two_decisions(live: Live) -> None:
    shard = "it-a"
    users = [f"a{i}" for i in range(40)]
    joins = [Join(user, shard, time.time()) for user in users]
    for join in joins:
        live.send(join, key=shard)
    for join in joins[:10]:  # the same joins again (a client retry), waiting or already matched: no second entry
        live.send(join, key=shard)
    assert live.wait(lambda s: sum(d.shard == shard for d in s.decisions) >= 20), "not everyone was matched"
    decisions = in_shard(live, shard)
    matched = [u for d in decisions for u in (d.user_a, d.user_b)]
    assert sorted(matched) == sorted(users)
    assert double_booked(live.seen.joins, live.seen.decisions) == []


def test_user_who_left_is_never_matched(live: Live) -> None:
    shard = "it-b"
    live.send(Join("gone", shard, time.time()), key=shard)
    live.send(Leave("gone", shard, time.time()), key=shard)
    for user in ("b1", "b2", "b3", "b4"):
        live.send(Join(user, shard, time.time()), key=shard)
    assert live.wait(lambda s: sum(d.shard == shard for d in s.decisions) >= 2)
    # Another later join in the same partition: its decision proves the worker ticked well after the leave.
    live.send(Join("b5", shard, time.time()), key=shard)
    live.send(Join("b6", shard, time.time()), key=shard)
    assert live.wait(lambda s: sum(d.shard == shard for d in s.decisions) >= 3)
    assert all("gone" not in (d.user_a, d.user_b) for d in live.seen.decisions)


def test_bad_input_is_dead_lettered_with_a_reason_and_matching_goes_on(live: Live) -> None:
    shard = "it-c"
    garbage = b"\x93\xff\x00 random bytes \xde\xad"
    live.send(garbage, key=shard)
    orphan = ChatEnd("no-such-match", "c0", shard, time.time(), "hangup")
    live.send(orphan, key=shard)
    live.send(msgpack.packb({"type": "join", "v": 1, "user_id": 7, "shard": shard, "ts": time.time()}), key=shard)
    live.send(Join("c1", shard, time.time()), key=shard)
    live.send(Join("c2", shard, time.time()), key=shard)
    assert live.wait(lambda s: any({d.user_a, d.user_b} == {"c1", "c2"} for d in s.decisions))
    assert live.wait(lambda s: any(dl.reason == "unknown-match" for dl in s.dlq))
    by_reason = {dl.reason: dl for dl in live.seen.dlq}
    assert by_reason["not-msgpack"].value == garbage and by_reason["not-msgpack"].origin.startswith(
        live.settings.topic("events")
    )
    assert "join.user_id: expected a string, got int 7" in by_reason["invalid-field"].detail
    assert decode_record(by_reason["unknown-match"].value) == orphan
    assert "no-such-match" in by_reason["unknown-match"].detail


def test_every_decision_gets_exactly_one_label(live: Live) -> None:
    shard = "it-d"
    for i in range(20):
        live.send(Join(f"d{i}", shard, time.time()), key=shard)
    assert live.wait(lambda s: sum(d.shard == shard for d in s.decisions) >= 10)
    decisions = in_shard(live, shard)[:10]
    both, one, none = decisions[:4], decisions[4:7], decisions[7:]
    for d in both:
        for user in (d.user_a, d.user_b):
            live.send(ChatEnd(d.match_id, user, shard, time.time(), "hangup"), key=shard)
    for d in one:
        live.send(ChatEnd(d.match_id, d.user_a, shard, time.time(), "skip"), key=shard)
    ids = {d.match_id for d in decisions}
    assert live.wait(lambda s: ids <= {lb.match_id for lb in s.labels}, timeout=60)
    # A late end for a censored match must not create a second label (nor a dead letter) ...
    for d in none:
        live.send(ChatEnd(d.match_id, d.user_b, shard, time.time(), "hangup"), key=shard)
    # ... and a later match in the same partition, fully labelled, proves those ends were processed.
    live.send(Join("marker-1", shard, time.time()), key=shard)
    live.send(Join("marker-2", shard, time.time()), key=shard)
    assert live.wait(lambda s: any(d.user_a.startswith("marker") for d in s.decisions))
    marker = next(d for d in live.seen.decisions if d.user_a.startswith("marker"))
    for user in (marker.user_a, marker.user_b):
        live.send(ChatEnd(marker.match_id, user, shard, time.time(), "hangup"), key=shard)
    assert live.wait(lambda s: any(lb.match_id == marker.match_id for lb in s.labels))

    labels = [lb for lb in live.seen.labels if lb.match_id in ids]
    assert sorted(lb.match_id for lb in labels) == sorted(ids)
    kind = {lb.match_id: (lb.censored, lb.ends_reported) for lb in labels}
    assert all(kind[d.match_id] == (False, 2) for d in both)
    assert all(kind[d.match_id] == (False, 1) for d in one)
    assert all(kind[d.match_id] == (True, 0) for d in none)
    assert not [dl for dl in live.seen.dlq if dl.key == shard.encode()]


def test_ready_answers_503_until_the_worker_ticks_and_metrics_show_the_figures(live: Live) -> None:
    """/ready is served from the loop's first moments: 503 while the worker joins its group and recovers, then
    200; /metrics carries the series operators watch."""
    assert live.ready_statuses[-1] == 200 and 503 in live.ready_statuses, live.ready_statuses
    status, body = get(live.settings.web_port, "/metrics")
    text = body.decode()
    assert status == 200
    for series in (
        "tickmatch_ready 1",
        "tickmatch_tick_seconds_bucket{le=",
        "tickmatch_tick_seconds_count",
        "tickmatch_decisions_total",
        "tickmatch_labels_total",
        "tickmatch_consumer_lag{partition=",
        'tickmatch_model_info{version="heuristic-v2"} 1',
        "tickmatch_recovery_seconds",
        "tickmatch_events_replayed_total",
        "tickmatch_tail_events_total",
        "tickmatch_catching_up_partitions",
    ):
        assert series in text, series
    assert "tickmatch_waiting_users{shard=" in text


def test_events_on_a_partition_not_owning_their_shard_are_rerouted_and_matched(live: Live) -> None:
    """A producer with another partitioner (the key on the wrong partition) and a keyless one (no key at all, on the
    wrong partition): both joins reach the shard's own partition and are matched together, not split."""
    shard = "it-route"
    home = partition_for(shard, live.settings.partitions)
    wrong = (home + 1) % live.settings.partitions
    live.send_to(Join("r1", shard, time.time()), key=shard, partition=wrong)
    live.send_to(Join("r2", shard, time.time()), key=None, partition=wrong)
    assert live.wait(lambda s: any({d.user_a, d.user_b} == {"r1", "r2"} for d in s.decisions))
    (decision,) = [d for d in live.seen.decisions if d.shard == shard]
    assert decision.events_offset is not None
    # one worker owns every partition here, so a split would not show as a missed match: the counter shows the hop
    _, body = get(live.settings.web_port, "/metrics")
    rerouted = next(line for line in body.decode().splitlines() if line.startswith("tickmatch_events_rerouted_total"))
    assert float(rerouted.split()[-1]) >= 2


def test_publish_and_status_commands_speak_the_contract(live: Live, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """`tickmatch publish` turns JSON into contract events (v and ts filled in, murmur2 key); `tickmatch status`
    prints what /ready and /metrics say; a bad event is one clear line and exit 2."""
    for name, var in (("broker_url", "BROKER_URL"), ("app_id", "TICKMATCH_APP_ID"),
                      ("topic_prefix", "TICKMATCH_TOPIC_PREFIX"), ("partitions", "TICKMATCH_PARTITIONS")):  # fmt: skip
        monkeypatch.setenv(var, str(getattr(live.settings, name)))
    shard = "it-publish"
    joins = [f'{{"type": "join", "user_id": "{u}", "shard": "{shard}", "join_id": "t-{u}"}}' for u in ("p1", "p2")]
    assert main(["publish", *joins]) == 0
    sent = capsys.readouterr().out.splitlines()
    assert len(sent) == 2 and all(line.startswith(f"join {shard} -> ") for line in sent)
    assert live.wait(lambda s: any({d.join_a, d.join_b} == {"t-p1", "t-p2"} for d in s.decisions))
    assert main(["publish", '{"type": "join", "shard": "x"}']) == 2
    assert "not an event: join.user_id: is required" in capsys.readouterr().err
    assert main(["status", "--url", f"http://127.0.0.1:{live.settings.web_port}"]) == 0
    out = capsys.readouterr().out
    assert "READY (ticking)" in out and "tick p99 <=" in out and f"shard {shard}:" in out


def test_an_experiment_shard_switches_arms_and_every_decision_says_which(live: Live) -> None:
    shard = "it-x"
    for i in range(40):
        live.send(Join(f"x{i}", shard, time.time()), key=shard)
    assert live.wait(lambda s: sum(d.shard == shard for d in s.decisions) >= 20)
    mine = in_shard(live, shard)
    for d in mine:
        assert (d.experiment, d.slice_id) == (EXPERIMENT["id"], math.floor(d.decided_at / EXPERIMENT["slice_s"]))
        assert d.arm in EXPERIMENT["arms"] and d.washout == (d.decided_at % EXPERIMENT["slice_s"] < 0.1)
    assert all(d.experiment is None for d in live.seen.decisions if d.shard != shard)


def test_a_chat_whose_heartbeats_stop_is_censored_at_the_last_one(live: Live) -> None:
    shard = "it-h"
    for user in ("h1", "h2"):
        live.send(Join(user, shard, time.time()), key=shard)
    assert live.wait(lambda s: any(d.shard == shard for d in s.decisions))
    (d,) = in_shard(live, shard)
    for k, user in enumerate((d.user_a, d.user_b, d.user_a)):  # the clients say: alive 0.5, 1.0, 1.5 s in
        live.send(ChatHeartbeat(d.match_id, user, shard, d.decided_at + 0.5 * (k + 1)), key=shard)
    assert live.wait(lambda s: any(lb.match_id == d.match_id for lb in s.labels), timeout=30)
    (label,) = [lb for lb in live.seen.labels if lb.match_id == d.match_id]
    assert label.censored and label.ends_reported == 0 and abs(label.duration_s - 1.5) < 1e-6  # not 4 s


def test_analytics_serves_the_figures_and_report_draws_the_run(live: Live, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """`tickmatch analytics` (its own consumer group) serves arms and models on /metrics, with no user id in it;
    `tickmatch report` writes the HTML page of the run's topics, the experiment read-out included."""
    shard = "it-x"

    def cells(arm: str) -> int:
        return len({d.slice_id for d in in_shard(live, shard) if d.arm == arm and not d.washout})

    def enough(seen: Seen, target: int) -> bool:
        return sum(d.shard == shard and d.user_a.startswith("ax") for d in seen.decisions) >= target

    n = 0
    deadline = time.monotonic() + 90
    while min(cells(arm) for arm in EXPERIMENT["arms"]) < 2 and time.monotonic() < deadline:
        for _ in range(4):  # a wave of joins, decided before the next is sent: waves land in later slices
            live.send(Join(f"ax{n}", shard, time.time()), key=shard)
            n += 1
        assert live.wait(partial(enough, target=n // 2))
    assert min(cells(arm) for arm in EXPERIMENT["arms"]) >= 2
    decided = {d.match_id for d in in_shard(live, shard)}
    assert live.wait(lambda s: decided <= {lb.match_id for lb in s.labels}, timeout=60)  # censored after 4 s
    port = free_port()
    settings = live.settings.with_overrides(analytics_port=port, analytics_key="it-key")
    with service_process(settings, tmp_path / "analytics.log", "analytics"):
        body = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and b'arm="learned"' not in body:
            body = get(port, "/metrics")[1]
            time.sleep(0.2)  # polling an HTTP endpoint from outside, as a scraper does (not a synchronisation)
    text = body.decode()
    assert f'tickmatch_analytics_decisions_total{{shard="{shard}",arm="learned"' in text, [
        x for x in text.splitlines() if "decisions_total" in x
    ]
    assert 'tickmatch_analytics_censored_labels_total{shard="it-x"' in text and "ax1" not in text
    for name, var in (("broker_url", "BROKER_URL"), ("topic_prefix", "TICKMATCH_TOPIC_PREFIX"),
                      ("partitions", "TICKMATCH_PARTITIONS")):  # fmt: skip
        monkeypatch.setenv(var, str(getattr(live.settings, name)))
    assert main(["report", "--out", str(tmp_path / "report"), "--window-s", "2"]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Experiment read-out" in page and EXPERIMENT["id"] in page and page.count("data:image/png") >= 3
