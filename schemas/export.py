"""Write one JSON Schema file per record so upstream teams in other languages can validate what they send."""

from __future__ import annotations

from pathlib import Path

import orjson

from tickmatch.schemas.records import ALL_RECORDS, SCHEMA_VERSION


def export_json_schemas(out_dir: Path) -> list[Path]:
    """Write ``<type>.v<version>.json`` for every record into ``out_dir``; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, cls in sorted(ALL_RECORDS.items()):
        path = out_dir / f"{name}.v{SCHEMA_VERSION}.json"
        path.write_bytes(orjson.dumps(cls.json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        written.append(path)
    return written
