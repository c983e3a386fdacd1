"""Per-record-type readers and writers compiled from the field specs: the generic code minus its per-field dispatch.

Why: the worker validates every event it consumes, and the generic loop (``Record.validate``: one ``Field.check``
call per field, each comparing its kind as a string) took 4.2 us of the 6.6 us it cost to decode a join, a fifth of
the worker's whole per-event work (bench.live backlog, issue 10). The reader compiled here checks each field with
exact-type tests written out for that record (``type(x) is str and 0 < len(x) <= 256``, ...) and builds the record
in one call. It never decides anything the generic path would not: for any value that is not plainly valid as it
stands (a wrong type, an int where a float is expected, an out-of-range number, an unsupported version) it hands
the whole map to the generic path, which raises the same error naming the field or normalises the value. List
fields are checked by their ``Field.check`` directly (the same code either way).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from tickmatch.schemas.fields import MAX_STR, Field

Reader = Callable[[dict[str, Any]], Any]
Writer = Callable[[Any], dict[str, Any]]


def compile_reader(cls: type[Any], generic: Reader, versions: frozenset[int]) -> Reader:
    """A reader of ``cls`` from a decoded wire map, equivalent to ``generic`` (which it falls back to)."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    env: dict[str, Any] = {"cls": cls, "generic": generic, "versions": versions, "isfinite": math.isfinite}
    lines = [
        "def read(data):",
        "    if data.get('v') not in versions:",
        "        return generic(data)",
        "    get = data.get",
    ]
    args = []
    for i, spec in enumerate(cls.FIELDS):
        x = f"x{i}"
        args.append(f"{spec.name}={x}")
        lines.append(f"    {x} = get({spec.name!r})")
        if spec.required:
            lines.append(f"    if {x} is None:")
            lines.append("        return generic(data)")
        else:
            env[f"d{i}"] = defaults[spec.name]
            lines.append(f"    if {x} is None:")
            lines.append(f"        {x} = d{i}")
            lines.append("    else:")
        indent = "    " if spec.required else "        "
        lines.extend(indent + line for line in _check(spec, x, i, env))
    lines.append(f"    return cls({', '.join(args)})")
    exec(compile("\n".join(lines), f"<reader of {cls.__name__}>", "exec"), env)  # our own specs
    return env["read"]  # type: ignore[no-any-return]


def _check(spec: Field, x: str, i: int, env: dict[str, Any]) -> list[str]:
    """Lines that leave ``x`` valid as is, or return the generic path's answer."""
    minimum = "" if spec.minimum is None else f" or {x} < {spec.minimum!r}"
    if spec.kind == "str":
        enum = ""
        if spec.enum is not None:
            env[f"enum{i}"] = frozenset(spec.enum)
            enum = f" or {x} not in enum{i}"
        return [f"if type({x}) is not str or not 0 < len({x}) <= {MAX_STR}{enum}:", "    return generic(data)"]
    if spec.kind == "bool":
        return [f"if type({x}) is not bool:", "    return generic(data)"]
    if spec.kind == "int":
        return [f"if type({x}) is not int{minimum}:", "    return generic(data)"]
    if spec.kind == "float":
        return [f"if type({x}) is not float or not isfinite({x}){minimum}:", "    return generic(data)"]
    env[f"spec{i}"] = spec
    return [f"{x} = spec{i}.check(cls.TYPE, {x})"]  # lists and vectors: raises SchemaError as the generic path


def compile_writer(cls: type[Any], version: int, vector: Callable[[Any], bytes]) -> Writer:
    """The wire map of a ``cls`` record (what ``Record.wire`` defines: ``type``, ``v``, then every field that is
    not None or ``()``, vectors as float32 bytes and left out when empty), as one function with the fields written
    out. Why: a worker encodes every decision, label and statistic it emits; the generic loop (a ``getattr`` and
    a kind comparison per field) was a third of encoding a decision."""
    env: dict[str, Any] = {"vector": vector}
    lines = ["def write(self):", f"    out = {{'type': {cls.TYPE!r}, 'v': {version!r}}}"]
    for spec in cls.FIELDS:
        lines.append(f"    x = self.{spec.name}")
        if spec.kind in ("str", "int", "float", "bool"):
            lines.append("    if x is not None:")  # a scalar is never ``()``
            lines.append(f"        out[{spec.name!r}] = x")
        elif spec.kind == "f32_vector":
            lines.append("    if x is not None and x != () and len(x):")
            lines.append(f"        out[{spec.name!r}] = vector(x)")
        else:
            lines.append("    if x is not None and x != ():")
            lines.append(f"        out[{spec.name!r}] = x")
    lines.append("    return out")
    exec(compile("\n".join(lines), f"<writer of {cls.__name__}>", "exec"), env)  # our own specs
    return env["write"]  # type: ignore[no-any-return]
