"""Versioned records: the input events upstream apps publish and the outcome records the engine emits.

Every record on the wire is a map with ``type`` (record name) and ``v`` (schema version) next to its fields.
Readers accept every version in ``SUPPORTED_VERSIONS`` so producers can be upgraded before consumers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from tickmatch.schemas.fastpath import Reader, Writer, compile_reader, compile_writer
from tickmatch.schemas.fields import Field, SchemaError, Vector, f32, f32_wire

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

_USER = Field("user_id", "str", "Stable user identifier.")
_SHARD = Field("shard", "str", "Matching pool the user waits in (region, language, ...); the Kafka key.")
_TS = Field("ts", "float", "Event time, seconds since the Unix epoch (client clock).", minimum=0.0)
_MATCH = Field("match_id", "str", "Identifier of the match decision this event refers to.")

_PROFILE = (
    Field("country", "str", "ISO country code of the user.", required=False),
    Field("language", "str", "Preferred language code.", required=False),
    Field("gender", "str", "Self-declared gender.", required=False),
    Field("age_band", "str", "Age band, e.g. '18-24'.", required=False),
)
_FILTERS = (
    Field("want_country", "str_list", "Only match partners from these countries (empty: any).", required=False),
    Field("want_language", "str_list", "Only match partners speaking one of these (empty: any).", required=False),
    Field("want_gender", "str_list", "Only match partners of these genders (empty: any).", required=False),
    Field("blocked", "str_list", "Users this user must never be matched with (both directions).", required=False),
)

_SIGNALS = Field(
    "signals",
    "float_list",
    "Behavioural signals the client computes (interest scores and the like), at most 16 finite numbers; "
    "absent means unknown (zeros).",
    required=False,
    max_items=16,
)
MAX_SIGNALS = _SIGNALS.max_items
MAX_FEATURES = 1024
_FEATURES = tuple(
    Field(
        f"features_{side}",
        "f32_vector",
        f"Raw feature vector of user_{side} as the scorer saw it; logged so training reads exactly what serving read "
        "(msgpack: one bin of little-endian float32).",
        required=False,
        max_items=MAX_FEATURES,
    )
    for side in ("a", "b")
)

_EXPERIMENT = (
    Field("experiment", "str", "Switch-back experiment the deciding shard was in (absent: none).", required=False),
    Field("arm", "str", "The experiment arm the shard ran in this time slice.", required=False),
    Field("slice_id", "int", "Time slice of the experiment (arms switch between slices).", required=False, minimum=0),
    Field(
        "washout",
        "bool",
        "Decided in the first washout_s of its slice: left out of the experiment read-out.",
        required=False,
    ),
)

_EXPLORATION = (
    Field(
        "propensity",
        "float",
        "Set on exploration pairs (policy 'explore-uniform'): the probability the randomised rule had of pairing "
        "these two within their exploration group; off-policy estimates weight the pair's outcome by 1/propensity.",
        required=False,
        minimum=0.0,
    ),
    Field(
        "explore_group",
        "str",
        "The exploration group (worker/tick/shard) an exploration pair came from.",
        required=False,
    ),
)

_JOIN_ID = Field(
    "join_id",
    "str",
    "Client-chosen id of this join request (a ticket id). A join with the ticket of one already applied (waiting, "
    "matched or left) changes nothing, so clients may retry freely; decisions echo it. Absent: user_id and ts "
    "together identify the request.",
    required=False,
)

END_REASONS = ("hangup", "skip", "disconnect", "report", "timeout")

R = TypeVar("R", bound="Record")


_KNOWN: dict[str, frozenset[str]] = {}
_READERS: dict[type[Any], Reader] = {}  # record class -> its compiled reader (built at first use)
_WRITERS: dict[type[Any], Writer] = {}  # record class -> its compiled writer (built at first use)


def _known_keys(record_type: str, fields: tuple[Field, ...]) -> frozenset[str]:
    """Keys a record of this type may carry (computed once per type, not per decoded event)."""
    known = _KNOWN.get(record_type)
    if known is None:
        known = _KNOWN[record_type] = frozenset(spec.name for spec in fields) | {"type", "v"}
    return known


@dataclass(frozen=True, slots=True)
class Record:
    """Base of all records; subclasses declare ``TYPE`` and ``FIELDS`` in wire order."""

    TYPE: ClassVar[str] = ""
    FIELDS: ClassVar[tuple[Field, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON view: the fields plus ``type`` and ``v``; optional fields left at their default are omitted,
        sequences become lists (what JSON tools expect)."""
        out = self.wire()
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        for spec in self.FIELDS:
            if spec.kind == "f32_vector" and spec.name in out:
                out[spec.name] = list(getattr(self, spec.name))
        return out

    def wire(self) -> dict[str, Any]:
        """Wire form for msgpack: like :meth:`to_dict` but with sequences left as tuples (msgpack packs them as
        arrays), and no deep copy of the record (``dataclasses.asdict`` cost ~5 % of the worker under load).
        Runs a writer compiled for this record type (``schemas.fastpath``): ``type``, ``v``, then every field that
        is not None or ``()``, vectors as float32 bytes and left out when empty."""
        cls = type(self)
        writer = _WRITERS.get(cls)
        if writer is None:
            writer = _WRITERS[cls] = compile_writer(cls, SCHEMA_VERSION, f32_wire)
        return writer(self)

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        """Validate a decoded wire map and build the record; raise :class:`SchemaError` naming the bad field.

        Keys this version does not know are ignored (see :func:`unknown_fields`): a producer on a newer schema
        may add fields without breaking older workers, as protobuf allows. ``v`` is required: it is what tells a
        future worker which rules an event was written under.

        Runs a reader compiled for this record type (``schemas.fastpath``), which hands anything not plainly
        valid to :meth:`validate`: the rules and the error messages are that method's."""
        reader = _READERS.get(cls)
        if reader is None:
            reader = _READERS[cls] = compile_reader(cls, cls.validate, SUPPORTED_VERSIONS)
        return reader(data)  # type: ignore[no-any-return]

    @classmethod
    def validate(cls: type[R], data: dict[str, Any]) -> R:
        """The generic validation of a wire map, field spec by field spec (see :meth:`from_dict`)."""
        version = data.get("v")
        if version is None:
            raise SchemaError(cls.TYPE, "v", f"is required (the schema version, {SCHEMA_VERSION} today)")
        if version not in SUPPORTED_VERSIONS:
            raise SchemaError(cls.TYPE, "v", f"unsupported schema version {version!r}")
        values: dict[str, Any] = {}
        for spec in cls.FIELDS:
            raw = data.get(spec.name)
            if raw is None:
                if spec.required:
                    raise SchemaError(cls.TYPE, spec.name, "is required")
                continue
            values[spec.name] = spec.check(cls.TYPE, raw)
        return cls(**values)

    @classmethod
    def unknown_fields(cls, data: dict[str, Any]) -> list[str]:
        """Keys of a wire map this version does not know (ignored by :meth:`from_dict`, counted by the worker)."""
        known = _known_keys(cls.TYPE, cls.FIELDS)
        if known.issuperset(data):  # one C call: the common case, every event on the hot path
            return []
        return sorted(str(k) for k in data if k not in known)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """JSON Schema (draft 2020-12) of this record's wire form."""
        props: dict[str, Any] = {
            "type": {"const": cls.TYPE},
            "v": {"type": "integer", "enum": sorted(SUPPORTED_VERSIONS)},
        }
        props.update({spec.name: spec.json_schema() for spec in cls.FIELDS})
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"tickmatch/{cls.TYPE}.v{SCHEMA_VERSION}.json",
            "title": cls.TYPE,
            "description": (cls.__doc__ or "").strip().splitlines()[0],
            "type": "object",
            "properties": props,
            "required": ["type", "v"] + [spec.name for spec in cls.FIELDS if spec.required],
            "additionalProperties": True,  # ignored by this version, counted (forward compatibility)
        }


class _Vectors:
    """For records with the two feature vectors: they compare and encode as float32 arrays, however given."""

    __slots__ = ()
    features_a: Vector
    features_b: Vector

    def __post_init__(self) -> None:
        object.__setattr__(self, "features_a", f32(self.features_a))
        object.__setattr__(self, "features_b", f32(self.features_b))


@dataclass(frozen=True, slots=True)
class Join(Record):
    """A user starts waiting for a partner in a shard."""

    TYPE: ClassVar[str] = "join"
    FIELDS: ClassVar[tuple[Field, ...]] = (_USER, _SHARD, _TS, *_PROFILE, _SIGNALS, *_FILTERS, _JOIN_ID)

    user_id: str
    shard: str
    ts: float
    country: str | None = None
    language: str | None = None
    gender: str | None = None
    age_band: str | None = None
    signals: tuple[float, ...] = ()
    want_country: tuple[str, ...] = ()
    want_language: tuple[str, ...] = ()
    want_gender: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()
    join_id: str | None = None

    @property
    def ticket(self) -> str:
        """What makes this join one request: the client's ``join_id``, or (for clients that send none) the user
        and ``ts`` together, so a retried send of the same join is still recognised."""
        return self.join_id if self.join_id is not None else f"{self.user_id}@{self.ts!r}"


@dataclass(frozen=True, slots=True)
class Leave(Record):
    """A waiting user gives up before being matched."""

    TYPE: ClassVar[str] = "leave"
    FIELDS: ClassVar[tuple[Field, ...]] = (_USER, _SHARD, _TS)

    user_id: str
    shard: str
    ts: float


@dataclass(frozen=True, slots=True)
class ChatEnd(Record):
    """One participant's client reports that a matched chat ended."""

    TYPE: ClassVar[str] = "chat-end"
    FIELDS: ClassVar[tuple[Field, ...]] = (
        _MATCH,
        _USER,
        _SHARD,
        Field("ended_at", "float", "When the chat ended, seconds since the epoch (client clock).", minimum=0.0),
        Field("reason", "str", "Why the chat ended.", enum=END_REASONS),
    )

    match_id: str
    user_id: str
    shard: str
    ended_at: float
    reason: str


@dataclass(frozen=True, slots=True)
class ChatHeartbeat(Record):
    """A participant's client says a matched chat is still going (sent every few seconds while it lasts).

    Why: a client that drops silently never reports an end. Without heartbeats its chat is censored at
    TICKMATCH_CENSOR_AFTER_S ("lasted at least 600 s", an over-statement); with them it is censored at its last
    heartbeat once none came for TICKMATCH_HEARTBEAT_TIMEOUT_S."""

    TYPE: ClassVar[str] = "chat-heartbeat"
    FIELDS: ClassVar[tuple[Field, ...]] = (
        _MATCH,
        _USER,
        _SHARD,
        Field(
            "at", "float", "When the chat was last known alive, seconds since the epoch (client clock).", minimum=0.0
        ),
    )

    match_id: str
    user_id: str
    shard: str
    at: float


@dataclass(frozen=True, slots=True)
class ProfileUpdate(Record):
    """Profile attributes changed; a waiting user's features are refreshed in place."""

    TYPE: ClassVar[str] = "profile-update"
    FIELDS: ClassVar[tuple[Field, ...]] = (_USER, _SHARD, _TS, *_PROFILE, _SIGNALS)

    user_id: str
    shard: str
    ts: float
    country: str | None = None
    language: str | None = None
    gender: str | None = None
    age_band: str | None = None
    signals: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class MatchDecision(_Vectors, Record):
    """The engine paired two waiting users in one tick."""

    TYPE: ClassVar[str] = "match-decision"
    FIELDS: ClassVar[tuple[Field, ...]] = (
        _MATCH,
        Field("tick_id", "int", "Monotonic tick number of the worker that decided.", minimum=0),
        _SHARD,
        Field("user_a", "str", "First user of the pair."),
        Field("user_b", "str", "Second user of the pair."),
        Field("score", "float", "Predicted value of the pair under the model."),
        Field("model_version", "str", "Version of the scoring model used."),
        Field("policy", "str", "Matching policy name (experiment arm)."),
        Field("decided_at", "float", "Worker clock at decision, seconds since the epoch.", minimum=0.0),
        Field("wait_a_s", "float", "How long user_a had waited.", minimum=0.0),
        Field("wait_b_s", "float", "How long user_b had waited.", minimum=0.0),
        *_FEATURES,
        Field(
            "events_offset",
            "int",
            "Offset in the shard's events partition up to which (exclusive) the deciding tick had applied events; "
            "recovery replays events and re-applies decisions in this order.",
            required=False,
            minimum=0,
        ),
        Field(
            "join_a", "str", "Ticket of user_a's join this decision answers (its join_id, or user@ts).", required=False
        ),
        Field("join_b", "str", "Ticket of user_b's join this decision answers.", required=False),
        *_EXPERIMENT,
        *_EXPLORATION,
    )

    match_id: str
    tick_id: int
    shard: str
    user_a: str
    user_b: str
    score: float
    model_version: str
    policy: str
    decided_at: float
    wait_a_s: float
    wait_b_s: float
    features_a: Vector = ()
    features_b: Vector = ()
    events_offset: int | None = None
    join_a: str | None = None
    join_b: str | None = None
    experiment: str | None = None
    arm: str | None = None
    slice_id: int | None = None
    washout: bool | None = None
    propensity: float | None = None
    explore_group: str | None = None


@dataclass(frozen=True, slots=True)
class DurationLabel(_Vectors, Record):
    """Training label: how long a matched chat lasted, or that it lasted at least ``duration_s`` (censored)."""

    TYPE: ClassVar[str] = "duration-label"
    FIELDS: ClassVar[tuple[Field, ...]] = (
        _MATCH,
        _SHARD,
        Field("duration_s", "float", "Chat duration, or the lower bound when censored.", minimum=0.0),
        Field("censored", "bool", "True when no end was reported in time: the chat lasted at least duration_s."),
        Field("ends_reported", "int", "How many participants reported the end (0, 1 or 2).", minimum=0),
        Field("model_version", "str", "Model version of the decision."),
        Field("policy", "str", "Policy of the decision."),
        Field("decided_at", "float", "Decision time copied from the decision.", minimum=0.0),
        *_FEATURES,
        *_EXPERIMENT,
        *_EXPLORATION,
    )

    match_id: str
    shard: str
    duration_s: float
    censored: bool
    ends_reported: int
    model_version: str
    policy: str
    decided_at: float
    features_a: Vector = ()
    features_b: Vector = ()
    experiment: str | None = None
    arm: str | None = None
    slice_id: int | None = None
    washout: bool | None = None
    propensity: float | None = None
    explore_group: str | None = None


@dataclass(frozen=True, slots=True)
class ModelUpdate(Record):
    """A trained duration model version; workers hot-swap it in (see learning.model.DurationModel)."""

    TYPE: ClassVar[str] = "model-update"
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("version", "str", "Model version, e.g. 'duration-v7'; decisions scored with it carry it."),
        Field("trained_at", "float", "Trainer clock when the version was made, seconds since the epoch.", minimum=0.0),
        Field("labels_seen", "int", "Training labels the version learned from.", minimum=0),
        Field("raw_dim", "int", "Width of the raw feature vector the weights apply to.", minimum=1),
        Field("log_sigma", "float", "Log of the noise scale of log-duration."),
        Field(
            "weights",
            "float_list",
            "Symmetric raw_dim x raw_dim bilinear weights over raw features, row-major; mu = a . W . b is the "
            "predicted mean log-duration of a pair.",
            max_items=MAX_FEATURES * MAX_FEATURES,
        ),
        Field("holdout", "int", "Held-out labels the metrics below were computed on.", minimum=0),
        Field("auroc", "float", "Held-out AUROC, long vs short chat.", required=False),
        Field("mse", "float", "Held-out MSE of log-duration on observed labels.", required=False),
    )

    version: str
    trained_at: float
    labels_seen: int
    raw_dim: int
    log_sigma: float
    weights: tuple[float, ...]
    holdout: int
    auroc: float | None = None
    mse: float | None = None


@dataclass(frozen=True, slots=True)
class TickStats(Record):
    """Per-tick health record of one worker: pool size, matches made and how long the tick took."""

    TYPE: ClassVar[str] = "tick-stats"
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("worker", "str", "Worker identifier."),
        Field("tick_id", "int", "Monotonic tick number.", minimum=0),
        Field("at", "float", "Worker clock at the start of the tick.", minimum=0.0),
        Field("waiting", "int", "Users waiting over all local shards before matching.", minimum=0),
        Field("pairs", "int", "Pairs decided in this tick.", minimum=0),
        Field("elapsed_ms", "float", "Wall time of the matching work in this tick.", minimum=0.0),
        Field("events", "int", "Input events this worker consumed since it started, all shards.", required=False),
    )

    worker: str
    tick_id: int
    at: float
    waiting: int
    pairs: int
    elapsed_ms: float
    events: int | None = None


@dataclass(frozen=True, slots=True)
class ShardStats(Record):
    """Per-tick activity of one shard, for the windowed statistics (one record per active shard and tick instead
    of a table write per event: the per-event path is the worker's hot path)."""

    TYPE: ClassVar[str] = "shard-stats"
    FIELDS: ClassVar[tuple[Field, ...]] = (
        _SHARD,
        Field("tick_id", "int", "Tick of the worker that owns the shard.", minimum=0),
        Field("at", "float", "Worker clock at the start of the tick.", minimum=0.0),
        Field("waiting", "int", "Users waiting in the shard before matching.", minimum=0),
        Field("arrivals", "int", "Joins applied since the previous tick.", minimum=0),
        Field("departures", "int", "Leaves applied since the previous tick (expiries not included).", minimum=0),
        Field("matched_users", "int", "Users matched in this tick (twice the pairs).", minimum=0),
        Field("wait_sum_s", "float", "Summed waiting time of the users matched in this tick.", minimum=0.0),
    )

    shard: str
    tick_id: int
    at: float
    waiting: int
    arrivals: int
    departures: int
    matched_users: int
    wait_sum_s: float


INPUT_EVENTS: dict[str, type[Record]] = {cls.TYPE: cls for cls in (Join, Leave, ChatEnd, ChatHeartbeat, ProfileUpdate)}
OUTPUT_RECORDS: dict[str, type[Record]] = {
    cls.TYPE: cls for cls in (MatchDecision, DurationLabel, TickStats, ShardStats, ModelUpdate)
}
ALL_RECORDS: dict[str, type[Record]] = {**INPUT_EVENTS, **OUTPUT_RECORDS}

InputEvent = Join | Leave | ChatEnd | ChatHeartbeat | ProfileUpdate
