"""Small commands an integrator or operator runs by hand: ``tickmatch publish`` and ``tickmatch status``.

``publish`` is the integration contract as code (README, Integration contract): a JSON object in, validated by
the same schema the worker uses, ``v`` and a current ``ts`` filled in when missing, sent as msgpack keyed by the
UTF-8 shard with murmur2 partitioning. ``status`` reads a worker's ``/ready`` and ``/metrics`` and prints them
for a terminal.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer

from tickmatch.schemas import SchemaError, encode
from tickmatch.schemas.records import INPUT_EVENTS, SCHEMA_VERSION
from tickmatch.stream import topics as names
from tickmatch.stream.settings import Settings


class PublishError(ValueError):
    """An event the command line was given that is not one (printed as one line)."""


def event_from_json(text: str, now: float) -> Any:
    """The input record a JSON object describes (``v`` and ``ts`` default to the current version and time)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PublishError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PublishError('expected a JSON object such as {"type": "join", "user_id": "u1", "shard": "en"}')
    cls = INPUT_EVENTS.get(data.get("type", ""))
    if cls is None:
        raise PublishError(f"type must be one of {sorted(INPUT_EVENTS)}, got {data.get('type')!r}")
    data.setdefault("v", SCHEMA_VERSION)
    if "ts" in {f.name for f in cls.FIELDS}:
        data.setdefault("ts", now)
    try:
        return cls.from_dict(data)
    except SchemaError as exc:
        raise PublishError(str(exc)) from exc


async def publish(bootstrap: str, settings: Settings, lines: Iterable[str]) -> list[str]:
    """Send each JSON line as an event; returns ``type shard -> topic/partition/offset`` per event sent."""
    events = [event_from_json(line, time.time()) for line in lines if line.strip()]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")  # murmur2 partitioning, like Java's
    await producer.start()
    try:
        out = []
        for event in events:
            meta = await producer.send_and_wait(
                settings.topic(names.EVENTS), value=encode(event), key=event.shard.encode()
            )
            out.append(f"{event.TYPE} {event.shard} -> {meta.topic}/{meta.partition}/{meta.offset}")
        return out
    finally:
        await producer.stop()


def fetch(url: str) -> tuple[int, str]:
    """(status, body) of a GET; (0, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text -> name -> [(labels, value)]."""
    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels = {}
        for part in rest.rstrip("}").split(",") if rest else []:
            key, _, val = part.partition("=")
            labels[key] = val.strip('"')
        out[name].append((labels, float(value)))
    return out


def quantile(buckets: list[tuple[dict[str, str], float]], q: float) -> float | None:
    """Upper bound of the histogram bucket holding quantile ``q`` (None without observations)."""
    points = sorted((float("inf") if b["le"] == "+Inf" else float(b["le"]), c) for b, c in buckets)
    total = points[-1][1] if points else 0.0
    if total <= 0:
        return None
    return next(bound for bound, count in points if count >= q * total)


def status_text(base_url: str) -> tuple[bool, str]:
    """(ready, what to print) for the worker at ``base_url``."""
    code, body = fetch(f"{base_url}/ready")
    if code == 0:
        return False, f"no worker answers at {base_url}: {body}"
    ready = json.loads(body) if body.startswith("{") else {"why": body}
    _, text = fetch(f"{base_url}/metrics")
    m = parse_metrics(text)
    p99 = quantile(m.get("tickmatch_tick_seconds_bucket", []), 0.99)
    version = next((labels["version"] for labels, _ in m.get("tickmatch_model_info", [])), "?")
    lines = [
        f"worker {ready.get('worker', '?')} at {base_url}: {'READY' if code == 200 else 'NOT READY'} "
        f"({ready.get('why')}); model {version}",
        f"ticks {m.get('tickmatch_tick_seconds_count', [({}, 0.0)])[0][1]:.0f}, tick p99 <= "
        f"{'-' if p99 is None else f'{p99 * 1000:g} ms'}; decisions "
        f"{m.get('tickmatch_decisions_total', [({}, 0.0)])[0][1]:.0f}; labels "
        f"{m.get('tickmatch_labels_total', [({}, 0.0)])[0][1]:.0f}",
    ]
    for labels, value in m.get("tickmatch_consumer_lag", []):
        lines.append(f"  partition {labels['partition']}: lag {value:.0f} events")
    for labels, value in m.get("tickmatch_waiting_users", []):
        lines.append(f"  shard {labels['shard']}: {value:.0f} waiting")
    for labels, value in m.get("tickmatch_dead_letters_total", []):
        lines.append(f"  dead letters {labels['reason']}: {value:.0f}")
    return code == 200, "\n".join(lines)
