"""The pure parts of ``tickmatch publish`` and ``tickmatch status``."""

from __future__ import annotations

import pytest

from tickmatch.ops import PublishError, event_from_json, parse_metrics, quantile
from tickmatch.schemas import ChatEnd, Join


def test_json_events_get_the_schema_version_and_the_current_time() -> None:
    assert event_from_json('{"type": "join", "user_id": "u", "shard": "en"}', 123.5) == Join("u", "en", 123.5)
    end = '{"type": "chat-end", "match_id": "m", "user_id": "u", "shard": "en", "ended_at": 9.0, "reason": "skip"}'
    assert event_from_json(end, 123.5) == ChatEnd("m", "u", "en", 9.0, "skip")
    bad_ones = [
        ("[1]", "expected a JSON object"),
        ('{"type": "hello"}', "type must be one of"),
        ("{", "not JSON"),
        ('{"type": "leave", "shard": "en"}', "leave.user_id: is required"),
    ]
    for bad, text in bad_ones:
        with pytest.raises(PublishError, match=text):
            event_from_json(bad, 0.0)


def test_metrics_text_is_parsed_and_a_histogram_quantile_read() -> None:
    text = "\n".join(
        [
            "# HELP tickmatch_tick_seconds x",
            'tickmatch_tick_seconds_bucket{le="0.01"} 90',
            'tickmatch_tick_seconds_bucket{le="0.1"} 99',
            'tickmatch_tick_seconds_bucket{le="+Inf"} 100',
            'tickmatch_waiting_users{shard="en"} 7',
            "tickmatch_decisions_total 5",
        ]
    )
    m = parse_metrics(text)
    assert m["tickmatch_waiting_users"] == [({"shard": "en"}, 7.0)] and m["tickmatch_decisions_total"][0][1] == 5
    assert quantile(m["tickmatch_tick_seconds_bucket"], 0.5) == 0.01
    assert quantile(m["tickmatch_tick_seconds_bucket"], 0.99) == 0.1
    assert quantile(m["tickmatch_tick_seconds_bucket"], 0.999) == float("inf")
    assert quantile([], 0.99) is None
