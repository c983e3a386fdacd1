"""The C decoder of input events (``schemas.cdecode``) never decides differently from the Python path: whatever it
accepts, the Python path accepts too, as the same record with the same value types and no unknown fields; anything
else it leaves to the Python path (None). Checked on valid events, on mutated ones (every field swapped for values of
every other shape, dropped, nulled, extra fields, other versions and types) and on damaged bytes."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickmatch.schemas import ChatEnd, ChatHeartbeat, DecodeError, Join, Leave, ProfileUpdate, Record, encode
from tickmatch.schemas.cdecode import EventDecoder
from tickmatch.schemas.codec import decode_event_fields
from tickmatch.schemas.records import INPUT_EVENTS

DECODER = EventDecoder(list(INPUT_EVENTS.values()))

SAMPLES: list[Record] = [
    Join("u1", "s", 1.5, country="de", language="en", gender="f", age_band="18-24", signals=(0.5, -1.0, 3.0),
         want_country=("de", "at"), want_language=("en",), want_gender=("m",), blocked=("u9",), join_id="j-1"),
    Join("u2", "s", 2.0),
    Leave("u1", "s", 3.0),
    ProfileUpdate("u1", "s", 4.0, country="fr", signals=(1.0,)),
    ChatEnd("m1", "u1", "s", 5.0, "hangup"),
    ChatHeartbeat("m1", "u1", "s", 6.0),
]  # fmt: skip

ODD_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 2**40, 2**64 - 1, -(2**63), 0.0, -0.0, 1.5, -2.5, 1e308, float("nan"),
    float("inf"), float("-inf"), "", "x", "é" * 256, "é" * 257, "a" * 256, "a" * 257, "hangup", b"", b"\x00\x01",
    [], [1.0], [1, 2], [True], ["a"], [""], ["a"] * 65, [0.5] * 16, [0.5] * 17, [float("nan")], [None], [[1.0]],
    {}, {"a": 1},
]  # fmt: skip


def same_answer(data: bytes) -> None:
    """The C decoder's answer is None or exactly the Python path's."""
    fast = DECODER.decode(data)
    if fast is None:
        return
    try:
        slow, unknown = decode_event_fields(data)
    except DecodeError as exc:  # pragma: no cover - the failure this test exists to catch
        pytest.fail(f"C decoder accepted what the Python path rejects ({exc.reason}: {exc}): {fast!r}")
    assert unknown == [] and type(slow) is type(fast) and slow == fast
    for f in dataclasses.fields(slow):  # 1 == 1.0 and (1,) == (1.0,): equality alone would miss an int
        a, b = getattr(fast, f.name), getattr(slow, f.name)
        assert type(a) is type(b) and repr(a) == repr(b), (f.name, a, b)


@pytest.mark.parametrize("record", SAMPLES, ids=lambda r: type(r).__name__)
def test_valid_events_are_decoded_in_c_as_the_python_path_decodes_them(record: Record) -> None:
    data = encode(record)
    assert DECODER.decode(data) == record
    same_answer(data)


FIELD_NAMES = sorted({f.name for cls in INPUT_EVENTS.values() for f in cls.FIELDS} | {"type", "v", "extra"})


@pytest.mark.parametrize("base", SAMPLES, ids=lambda r: type(r).__name__)
def test_every_field_swapped_for_every_odd_value_gets_the_python_paths_answer_or_none(base: Record) -> None:
    for key in FIELD_NAMES:
        for value in [*ODD_VALUES, "<drop>", *INPUT_EVENTS, 2]:
            wire = base.wire()
            if value == "<drop>":
                wire.pop(key, None)
            else:
                wire[key] = value
            same_answer(msgpack.packb(wire, use_bin_type=True))


@settings(max_examples=1500, deadline=None)
@given(
    base=st.sampled_from(SAMPLES),
    changes=st.lists(
        st.tuples(
            st.sampled_from(FIELD_NAMES),
            st.one_of(st.sampled_from(ODD_VALUES), st.just("<drop>"), st.sampled_from([*INPUT_EVENTS, 2, 0])),
        ),
        min_size=1,
        max_size=3,
    ),
)  # fmt: skip
def test_mutated_events_get_the_python_paths_answer_or_none(base: Record, changes: list[tuple[str, Any]]) -> None:
    wire = base.wire()
    for key, value in changes:
        if value == "<drop>":
            wire.pop(key, None)
        else:
            wire[key] = value
    same_answer(msgpack.packb(wire, use_bin_type=True))


@settings(max_examples=500, deadline=None)
@given(base=st.sampled_from(SAMPLES), cut=st.integers(0, 200), tail=st.binary(max_size=8))
def test_damaged_bytes_get_the_python_paths_answer_or_none(base: Record, cut: int, tail: bytes) -> None:
    data = encode(base)
    same_answer(data[: max(0, len(data) - cut)] + tail)


def test_a_key_given_twice_is_not_decided_in_c() -> None:
    # msgpack.unpackb keeps the last of duplicate keys; whatever msgspec does, the answer must be the same
    wire = Leave("u1", "s", 3.0).wire()
    body = b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in wire.items())
    twice = msgpack.packb("user_id") + msgpack.packb("other")
    data = bytes([0x80 | (len(wire) + 1)]) + body + twice
    same_answer(data)
    assert decode_event_fields(data)[0] == Leave("other", "s", 3.0)


def test_json_and_oversized_events_are_left_to_the_python_path() -> None:
    assert DECODER.decode(b'{"type": "leave"}') is None
    with pytest.raises(DecodeError, match="looks like JSON"):
        decode_event_fields(b'{"type": "leave"}')
