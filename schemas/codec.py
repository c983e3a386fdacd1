"""The msgpack wire codec: ``encode`` for every record we write, a strict decoder for input events.

Every topic is raw bytes to Faust: we encode and decode ourselves, once per record, so that a malformed message
becomes a dead-letter record with a reason instead of an exception inside a stream.
"""

from __future__ import annotations

from typing import Any, cast

import msgpack
import orjson

from tickmatch.schemas.cdecode import EventDecoder
from tickmatch.schemas.fields import SchemaError
from tickmatch.schemas.records import ALL_RECORDS, INPUT_EVENTS, InputEvent, Record

MAX_EVENT_BYTES = 64 * 1024
MAX_MODEL_BYTES = 16 * 1024 * 1024


class DecodeError(ValueError):
    """The bytes are not a valid event; ``reason`` is a short machine-friendly code, ``str()`` the detail."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(detail)


def encode(record: Record) -> bytes:
    """Serialise a record to msgpack."""
    return cast(bytes, msgpack.packb(record.wire(), use_bin_type=True))


def _unpack(data: bytes, limit: int = MAX_EVENT_BYTES) -> dict[str, Any]:
    if len(data) > limit:
        raise DecodeError("too-large", f"event is {len(data)} bytes, limit {limit}")
    if data[:1] in (b"{", b"[") and data.rstrip()[-1:] in (b"}", b"]"):
        raise DecodeError("not-msgpack", "looks like JSON; events are msgpack maps (README, Integration contract)")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise DecodeError("not-msgpack", f"not a msgpack document: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, dict):
        raise DecodeError("not-a-map", f"expected a msgpack map, got {type(obj).__name__}")
    return obj


def decode_event(data: bytes | None) -> InputEvent:
    """Decode and validate one input event; raise :class:`DecodeError` with a reason on any problem."""
    return decode_event_fields(data)[0]


_FAST = EventDecoder(list(INPUT_EVENTS.values()))


def decode_event_fields(data: bytes | None) -> tuple[InputEvent, list[str]]:
    """:func:`decode_event`, plus the names of the fields it ignored because this version does not know them.

    Decoded in C where that can decide (``schemas.cdecode``: plainly valid events, the common case), else here."""
    if data is None:
        raise DecodeError("empty", "message has no value")
    if len(data) <= MAX_EVENT_BYTES:
        fast = _FAST.decode(data)
        if fast is not None:
            return fast, []  # type: ignore[return-value]  # an input event: _FAST knows input events only
    obj = _unpack(data)
    kind = obj.get("type")
    cls = INPUT_EVENTS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise DecodeError("unknown-type", f"type must be one of {sorted(INPUT_EVENTS)}, got {kind!r}")
    try:
        return cast(InputEvent, cls.from_dict(obj)), cls.unknown_fields(obj)
    except SchemaError as exc:
        raise DecodeError("invalid-field", str(exc)) from exc


def decode_record(data: bytes, limit: int = MAX_EVENT_BYTES) -> Record:
    """Decode any record type (inputs and outputs); used by read-back consumers and tests. Model updates are
    bigger than events (a weight matrix): their reader passes :data:`MAX_MODEL_BYTES` as ``limit``."""
    obj = _unpack(data, limit)
    cls = ALL_RECORDS.get(obj.get("type", ""))
    if cls is None:
        raise DecodeError("unknown-type", f"unknown record type {obj.get('type')!r}")
    try:
        return cls.from_dict(obj)
    except SchemaError as exc:
        raise DecodeError("invalid-field", str(exc)) from exc


def to_json(record: Record) -> bytes:
    """JSON view of a record (for logs, HTTP views and humans)."""
    return orjson.dumps(record.to_dict())
