"""Versioned wire records, the msgpack codec and JSON Schema export."""

from tickmatch.schemas.codec import DecodeError, decode_event, decode_record, encode
from tickmatch.schemas.fields import SchemaError
from tickmatch.schemas.records import (
    ALL_RECORDS,
    ChatEnd,
    ChatHeartbeat,
    DurationLabel,
    Join,
    Leave,
    MatchDecision,
    ModelUpdate,
    ProfileUpdate,
    Record,
    ShardStats,
    TickStats,
)

__all__ = [
    "ALL_RECORDS",
    "ChatEnd",
    "ChatHeartbeat",
    "DecodeError",
    "DurationLabel",
    "Join",
    "Leave",
    "MatchDecision",
    "ModelUpdate",
    "ProfileUpdate",
    "Record",
    "SchemaError",
    "ShardStats",
    "TickStats",
    "decode_event",
    "decode_record",
    "encode",
]
