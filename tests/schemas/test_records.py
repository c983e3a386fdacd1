"""Round trips and validation errors of every record type, and the exported JSON Schemas."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import msgpack
import orjson
import pytest

from tickmatch.schemas import (
    ChatEnd,
    ChatHeartbeat,
    DecodeError,
    DurationLabel,
    Join,
    Leave,
    MatchDecision,
    ModelUpdate,
    ProfileUpdate,
    Record,
    ShardStats,
    TickStats,
    decode_event,
    decode_record,
    encode,
)
from tickmatch.schemas.codec import decode_event_fields
from tickmatch.schemas.export import export_json_schemas

SAMPLES: list[Record] = [
    Join("u1", "lang-en", 1.5, country="US", language="en", gender="f", age_band="18-24", want_gender=("m",)),
    Join("u2", "lang-en", 2.0, signals=(0.5, -1.25, 3.0)),
    Leave("u1", "lang-en", 3.0),
    ChatEnd("m1", "u1", "lang-en", 10.0, "hangup"),
    ProfileUpdate("u1", "lang-en", 4.0, language="es"),
    ChatHeartbeat("m1", "u1", "lang-en", 9.0),
    MatchDecision("m1", 7, "lang-en", "u1", "u2", 0.5, "heuristic-v1", "greedy", 5.0, 1.0, 2.0),
    DurationLabel("m1", "lang-en", 12.5, False, 2, "heuristic-v1", "greedy", 5.0),
    TickStats("w1", 7, 5.0, 10, 3, 1.25),
    ShardStats("lang-en", 7, 5.0, 10, 4, 1, 6, 7.5),
    ModelUpdate("duration-v2", 9.0, 400, 2, -0.1, (1.0, 0.5, 0.5, 2.0), 100, auroc=0.8, mse=0.7),
    MatchDecision(
        "m2", 8, "lang-en", "u1", "u2", 4.5, "duration-v2", "auction-top8", 6.0, 0.0, 0.5, (1.0, 0.2), (1.0, -0.3)
    ),
    MatchDecision(
        "m3",
        9,
        "lang-en",
        "u1",
        "u2",
        4.5,
        "duration-v2",
        "auction-top8",
        6.0,
        0.0,
        0.5,
        (0.25,),
        (0.5,),
        experiment="e1",
        arm="learned",
        slice_id=3,
        washout=False,
    ),
    DurationLabel(
        "m3", "lang-en", 30.0, True, 0, "duration-v2", "auction-top8", 6.0, (0.25,), (0.5,), "e1", "learned", 3, True
    ),
]
INPUTS = 6  # the first SAMPLES are input events


@pytest.mark.parametrize("record", SAMPLES, ids=lambda r: r.TYPE)
def test_round_trip(record: Record) -> None:
    assert decode_record(encode(record)) == record


def test_input_events_decode_with_decode_event() -> None:
    for record in SAMPLES[:INPUTS]:
        assert decode_event(encode(record)) == record


def test_output_record_is_not_an_input_event() -> None:
    with pytest.raises(DecodeError) as err:
        decode_event(encode(SAMPLES[INPUTS]))
    assert err.value.reason == "unknown-type"


def _join(**changes: object) -> bytes:
    data: dict[str, object] = {"type": "join", "v": 1, "user_id": "u1", "shard": "s", "ts": 1.0}
    data.update(changes)
    packed: bytes = msgpack.packb({k: v for k, v in data.items() if v is not None})
    return packed


def test_unknown_fields_are_ignored_and_reported() -> None:
    """A producer on a newer schema adds a field: older workers still take the event, and can count it."""
    event, unknown = decode_event_fields(_join(premium=True, color="red"))
    assert event == Join("u1", "s", 1.0) and unknown == ["color", "premium"]
    assert decode_event_fields(_join())[1] == []


@pytest.mark.parametrize(
    ("payload", "reason", "text"),
    [
        (b"\xc1\xff garbage", "not-msgpack", "not a msgpack document"),
        (msgpack.packb([1, 2]), "not-a-map", "expected a msgpack map, got list"),
        (msgpack.packb({"type": "teleport"}), "unknown-type", "got 'teleport'"),
        (_join(user_id=None), "invalid-field", "join.user_id: is required"),
        (_join(user_id=42), "invalid-field", "join.user_id: expected a string, got int 42"),
        (_join(user_id=""), "invalid-field", "join.user_id: expected 1..256 characters, got 0"),
        (_join(ts=float("nan")), "invalid-field", "join.ts: expected a finite number"),
        (_join(ts=-1.0), "invalid-field", "join.ts: expected >= 0.0, got -1.0"),
        (_join(ts=True), "invalid-field", "join.ts: expected a number, got bool"),
        (_join(want_gender="f"), "invalid-field", "join.want_gender: expected a list of strings"),
        (_join(want_gender=["f", 3]), "invalid-field", "join.want_gender: expected non-empty strings"),
        (_join(signals=[1.0, float("inf")]), "invalid-field", "join.signals: expected finite numbers"),
        (_join(signals=[0.5] * 17), "invalid-field", "join.signals: expected at most 16 entries, got 17"),
        (_join(signals="high"), "invalid-field", "join.signals: expected a list of numbers"),
        (_join(v=99), "invalid-field", "join.v: unsupported schema version 99"),
        (_join(v=None), "invalid-field", "join.v: is required"),
        (b'{"type": "join", "v": 1, "user_id": "u1", "shard": "s", "ts": 1.0}', "not-msgpack", "looks like JSON"),
        (
            msgpack.packb(
                {
                    "type": "chat-end",
                    "v": 1,
                    "match_id": "m",
                    "user_id": "u",
                    "shard": "s",
                    "ended_at": 1.0,
                    "reason": "bored",
                }
            ),
            "invalid-field",
            "chat-end.reason: expected one of",
        ),
        (b"x" * (64 * 1024 + 1), "too-large", "limit 65536"),
        (None, "empty", "no value"),
    ],
)
def test_validation_errors_name_the_problem(payload: bytes | None, reason: str, text: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_event(payload)
    assert err.value.reason == reason
    assert text in str(err.value)


def test_exported_json_schemas_accept_our_records_and_reject_bad_ones(tmp_path: Path) -> None:
    paths = export_json_schemas(tmp_path)
    schemas = {p.name.split(".v")[0]: orjson.loads(p.read_bytes()) for p in paths}
    assert set(schemas) == {r.TYPE for r in SAMPLES}
    for record in SAMPLES:
        jsonschema.validate(record.to_dict(), schemas[record.TYPE])
    bad = SAMPLES[0].to_dict() | {"user_id": 5}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schemas["join"])
    jsonschema.validate(SAMPLES[0].to_dict() | {"extra": 1}, schemas["join"])  # newer producers may add fields
    without_v = {k: v for k, v in SAMPLES[0].to_dict().items() if k != "v"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(without_v, schemas["join"])
