"""Typed settings read from the environment, each with a documented default.

Why a frozen dataclass and not Faust's own config: the demo, the simulator, the tests and the worker all need
the same values, and a bad value must fail at start-up with a message naming the variable, not deep inside a
worker.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from tickmatch.matching.waiting import WaitCurve


class SettingsError(ValueError):
    """An environment variable holds a value that cannot be used."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Runtime configuration. ``ENV`` maps each field to its variable, :data:`DOCS` says what it means;
    :func:`markdown_table` renders both (the README's configuration table, ``tickmatch settings``)."""

    broker_url: str | None = None
    app_id: str = "tickmatch"
    topic_prefix: str = ""
    partitions: int = 4
    tick_interval_s: float = 0.5
    wait_ttl_s: float = 300.0
    label_grace_s: float = 5.0
    censor_after_s: float = 600.0
    orphan_grace_s: float = 10.0
    heartbeat_timeout_s: float = 30.0
    experiment_file: str = ""
    explore_share: float = 0.0
    analytics_key: str = ""
    analytics_port: int = 6067
    stats_window_s: float = 60.0
    embed_dim: int = 32
    session_timeout_s: float = 4.0
    snapshot_interval_s: float = 10.0
    max_clock_skew_s: float = 86_400.0
    broker_lost_exit_s: float = 30.0
    broker_port: int = 0
    web_port: int = 6066
    web_enabled: bool = True
    web_bind: str = "127.0.0.1"
    data_dir: str = ".tickmatch"
    worker_name: str = ""
    min_score_start: float = -math.inf
    min_score_end: float = -math.inf
    min_score_ramp_s: float = 10.0
    repeat_window_s: float = 600.0
    match_threads: int = 0
    match_k: int = 8
    follow_models: bool = True
    train_min_labels: int = 300
    train_every: int = 500

    def wait_curve(self) -> WaitCurve:
        """The waiting-time policy these settings describe."""
        return WaitCurve(self.min_score_start, self.min_score_end, self.min_score_ramp_s)

    def topic(self, name: str) -> str:
        """Full topic name with the configured prefix (lets several apps or tests share one broker)."""
        return f"{self.topic_prefix}{name}"

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests and the demo use this)."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every ``ENV`` variable that is set; raise :class:`SettingsError` naming a bad one."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = ENV[f.name]
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(var, raw, f.type)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check cross-field and range rules."""
        positive = (
            "tick_interval_s",
            "wait_ttl_s",
            "censor_after_s",
            "heartbeat_timeout_s",
            "stats_window_s",
            "session_timeout_s",
            "snapshot_interval_s",
            "max_clock_skew_s",
            "broker_lost_exit_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{ENV[name]} must be > 0, got {getattr(self, name)}")
        for name in ("label_grace_s", "orphan_grace_s"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{ENV[name]} must be >= 0, got {getattr(self, name)}")
        if not 1 <= self.partitions <= 1024:
            raise SettingsError(f"{ENV['partitions']} must be in 1..1024, got {self.partitions}")
        if not 2 <= self.embed_dim <= 1024:
            raise SettingsError(f"{ENV['embed_dim']} must be in 2..1024, got {self.embed_dim}")
        if not 0.0 <= self.explore_share < 1.0:
            raise SettingsError(f"{ENV['explore_share']} must be in [0, 1), got {self.explore_share}")
        if self.repeat_window_s < 0:
            raise SettingsError(f"{ENV['repeat_window_s']} must be >= 0, got {self.repeat_window_s}")
        if not 0 <= self.match_threads <= 64:
            raise SettingsError(f"{ENV['match_threads']} must be in 0..64, got {self.match_threads}")
        if not 1 <= self.match_k <= 64:
            raise SettingsError(f"{ENV['match_k']} must be in 1..64, got {self.match_k}")
        for name in ("train_min_labels", "train_every"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{ENV[name]} must be >= 1, got {getattr(self, name)}")
        try:
            self.wait_curve()
        except ValueError as exc:
            raise SettingsError(
                f"{ENV['min_score_start']}/{ENV['min_score_end']}/{ENV['min_score_ramp_s']}: {exc}"
            ) from exc
        if self.label_grace_s >= self.censor_after_s:
            raise SettingsError(
                f"{ENV['label_grace_s']} ({self.label_grace_s}) must be below "
                f"{ENV['censor_after_s']} ({self.censor_after_s})"
            )


ENV: dict[str, str] = {
    "broker_url": "BROKER_URL",
    "app_id": "TICKMATCH_APP_ID",
    "topic_prefix": "TICKMATCH_TOPIC_PREFIX",
    "partitions": "TICKMATCH_PARTITIONS",
    "tick_interval_s": "TICKMATCH_TICK_INTERVAL_S",
    "wait_ttl_s": "TICKMATCH_WAIT_TTL_S",
    "label_grace_s": "TICKMATCH_LABEL_GRACE_S",
    "censor_after_s": "TICKMATCH_CENSOR_AFTER_S",
    "heartbeat_timeout_s": "TICKMATCH_HEARTBEAT_TIMEOUT_S",
    "experiment_file": "TICKMATCH_EXPERIMENT_FILE",
    "explore_share": "TICKMATCH_EXPLORE_SHARE",
    "analytics_key": "TICKMATCH_ANALYTICS_KEY",
    "analytics_port": "TICKMATCH_ANALYTICS_PORT",
    "orphan_grace_s": "TICKMATCH_ORPHAN_GRACE_S",
    "stats_window_s": "TICKMATCH_STATS_WINDOW_S",
    "embed_dim": "TICKMATCH_EMBED_DIM",
    "session_timeout_s": "TICKMATCH_SESSION_TIMEOUT_S",
    "snapshot_interval_s": "TICKMATCH_SNAPSHOT_INTERVAL_S",
    "max_clock_skew_s": "TICKMATCH_MAX_CLOCK_SKEW_S",
    "broker_lost_exit_s": "TICKMATCH_BROKER_LOST_EXIT_S",
    "broker_port": "TICKMATCH_BROKER_PORT",
    "web_port": "TICKMATCH_WEB_PORT",
    "web_enabled": "TICKMATCH_WEB_ENABLED",
    "web_bind": "TICKMATCH_WEB_BIND",
    "data_dir": "TICKMATCH_DATA_DIR",
    "worker_name": "TICKMATCH_WORKER_NAME",
    "min_score_start": "TICKMATCH_MIN_SCORE_START",
    "min_score_end": "TICKMATCH_MIN_SCORE_END",
    "min_score_ramp_s": "TICKMATCH_MIN_SCORE_RAMP_S",
    "repeat_window_s": "TICKMATCH_REPEAT_WINDOW_S",
    "match_threads": "TICKMATCH_MATCH_THREADS",
    "match_k": "TICKMATCH_MATCH_K",
    "follow_models": "TICKMATCH_FOLLOW_MODELS",
    "train_min_labels": "TICKMATCH_TRAIN_MIN_LABELS",
    "train_every": "TICKMATCH_TRAIN_EVERY",
}

MAY_BE_MINUS_INF = {"TICKMATCH_MIN_SCORE_START", "TICKMATCH_MIN_SCORE_END"}  # "-inf": no minimum score

DOCS: dict[str, str] = {
    "broker_url": "Kafka bootstrap, e.g. kafka://kafka:9092. Unset: start the embedded Tansu broker on 127.0.0.1.",
    "app_id": "Faust application id (consumer group and internal topic prefix).",
    "topic_prefix": "Prefix for every topic name; lets several deployments or tests share a broker.",
    "partitions": "Partitions of events/decisions/labels. Shards hash to partitions; max useful workers.",
    "tick_interval_s": "Seconds between matching ticks.",
    "wait_ttl_s": "A waiting user not matched within this many seconds is dropped from the pool.",
    "label_grace_s": "After the first chat-end of a match, wait this long for the partner's before labelling.",
    "censor_after_s": "A match with no chat-end after this many seconds gets a censored label.",
    "analytics_key": "Key of the keyed hash that pseudonymises user ids in everything tickmatch analytics and "
    "tickmatch report keep and show (unset: a random key per process, so ids are not comparable across runs).",
    "analytics_port": "Port of tickmatch analytics' /metrics (on TICKMATCH_WEB_BIND).",
    "explore_share": "Share of each tick's waiting users paired by a uniformly random rule instead of the model "
    "(decisions carry their propensity: off-policy evaluation of other models from live logs); 0: none.",
    "experiment_file": "JSON file with the switch-back experiment to run (README, Experiments); re-read when it "
    "changes; empty or missing: none.",
    "heartbeat_timeout_s": "A chat that sent chat-heartbeat events and then none for this many seconds (and no end) "
    "gets a label censored at its last heartbeat.",
    "orphan_grace_s": "A chat-end whose match is not known yet is held this long, then dead-lettered.",
    "stats_window_s": "Width of the tumbling windows of per-shard arrival/departure/match/wait sums.",
    "embed_dim": "Dimension of the user feature embeddings the scorer uses.",
    "session_timeout_s": "Consumer session timeout: how long a killed worker's partitions wait before another takes "
    "them (and, on Tansu, about twice what a group join waits). 4 s: kill -9 -> first decision 9.6 s (6 s: 12.8 s).",
    "broker_port": "Port of the embedded broker (tickmatch broker, or any command without BROKER_URL); 0 picks a "
    "free one. It always listens on 127.0.0.1 only.",
    "broker_lost_exit_s": "A worker that cannot reach its broker this long exits with code 3 (one log line) for its "
    "supervisor to restart it, instead of retrying and logging forever.",
    "max_clock_skew_s": "An event whose time (ts, ended_at) is further than this from the worker's clock is "
    "dead-lettered implausible-time (milliseconds sent as seconds, a client clock years off).",
    "snapshot_interval_s": "Seconds between partition snapshots: what a restart or a new owner replays is at most "
    "this much of the events log (README, Reliability).",
    "web_port": "Port of the worker's web server: /ready (503 until it ticks) and /metrics (Prometheus).",
    "web_enabled": "Serve /ready, /metrics and Faust's own views (true/false).",
    "web_bind": "Address the web server listens on; loopback unless you mean to expose it.",
    "data_dir": "Directory for broker logs and Faust data.",
    "worker_name": "Name reported in tick stats (default: host-pid).",
    "min_score_start": "Minimum pair score for a user who just joined (-inf: no minimum).",
    "min_score_end": "Minimum pair score after TICKMATCH_MIN_SCORE_RAMP_S of waiting (relaxes linearly).",
    "min_score_ramp_s": "Seconds of waiting over which the minimum relaxes from start to end.",
    "repeat_window_s": "Two users matched with each other are not matched again within this many seconds.",
    "match_threads": "Scan threads of the matching engine (0: one per core).",
    "match_k": "Candidates kept per user when matching (more: better matches, slower ticks).",
    "follow_models": "Workers hot-swap in every model version published on the models topic (true/false).",
    "train_min_labels": "The trainer publishes its first model after this many training labels.",
    "train_every": "The trainer publishes a new model version after this many more training labels.",
}


def _shown(value: object) -> str:
    """A default as a user would type it into the variable."""
    if value is None or value == "":
        return "(unset)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def markdown_table() -> str:
    """Every setting as a Markdown table: variable, default, meaning (kept identical to the README's by a test)."""
    defaults = Settings()
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in fields(Settings):
        rows.append(f"| `{ENV[f.name]}` | {_shown(getattr(defaults, f.name))} | {DOCS[f.name]} |")
    return "\n".join(rows)


def _parse(var: str, raw: str, annotation: Any) -> Any:
    kind = str(annotation)
    try:
        if "bool" in kind:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true/false")
        if "int" in kind:
            return int(raw)
        if "float" in kind:
            value = float(raw)
            if value != value or value == float("inf") or (value == float("-inf") and var not in MAY_BE_MINUS_INF):
                raise ValueError("not finite" if value == value else "not a number")
            return value
        return raw
    except ValueError as exc:
        raise SettingsError(f"{var}={raw!r} is not a valid {kind.replace(' | None', '')}: {exc}") from exc
