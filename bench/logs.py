"""The workers' JSON log lines, as the benchmarks read them (recovery and snapshot figures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def log_records(path: Path, message: str) -> list[dict[str, Any]]:
    """The JSON lines of a worker log whose ``msg`` is ``message`` ([] if there is no log). A repeated line may be
    suppressed by the log's rate limit: these are the lines written, not necessarily every event."""
    if not path.exists():
        return []
    needle = message.encode()
    out = []
    for line in path.read_bytes().splitlines():
        if needle not in line:
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("msg") == message:
            out.append(rec)
    return out
