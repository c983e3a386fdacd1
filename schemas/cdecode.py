"""Input events decoded and validated in C (msgspec), with the Python path as the judge of everything else.

Why: decoding and validating a join took 9.2 us in Python (``msgpack.unpackb`` 1.7 us, then the compiled reader,
the unknown-field check and a frozen dataclass's ``__init__``), the largest single part of the worker's per-event
work (bench.live backlog). msgspec decodes msgpack straight into typed structs, checking types, lengths and bounds
in C: 0.8 us, plus ~0.7 us to fill our record (its slots set directly, as a frozen dataclass's own ``__init__``
does, minus the per-field Python calls).

Why it cannot change what a worker accepts: the structs are generated from the same field specs (``FIELDS``), each
check equal to or stricter than the Python one, with unknown fields forbidden; whatever they refuse (an unknown
field, an int for a float, a value out of bounds, any damage) goes to the Python path, which accepts it (normalised)
or rejects it with its own reason and message. What they accept is exactly what the Python path would build: a
differential test (``tests/schemas/test_cdecode.py``) holds the two to the same answer on generated, mutated and
hand-made wire bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import MISSING
from typing import Annotated, Any, Literal, Union

import msgspec

from tickmatch.schemas.fields import MAX_STR, Field
from tickmatch.schemas.records import SUPPORTED_VERSIONS, Record

Maker = Callable[[Any], Record | None]

_STR = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STR)]


def _type_of(spec: Field) -> Any:
    """The msgspec type that accepts a subset of what ``spec.check`` accepts; None if not expressible."""
    if spec.kind == "str":
        return Literal.__getitem__(spec.enum) if spec.enum is not None else _STR  # type: ignore[attr-defined]
    if spec.kind == "bool":
        return bool
    if spec.kind == "float":
        return float if spec.minimum is None else Annotated[float, msgspec.Meta(ge=spec.minimum)]
    if spec.kind == "int":
        if spec.minimum is not None and spec.minimum != int(spec.minimum):
            return None
        return int if spec.minimum is None else Annotated[int, msgspec.Meta(ge=int(spec.minimum))]
    if spec.kind == "str_list":
        return Annotated[tuple[_STR, ...], msgspec.Meta(max_length=spec.max_items)]
    if spec.kind == "float_list":
        return Annotated[tuple[float, ...], msgspec.Meta(max_length=spec.max_items)]
    return None  # f32_vector: output records only


def _struct(cls: type[Record]) -> type[msgspec.Struct] | None:
    """The tagged struct of ``cls``'s wire map (``type`` is the tag), or None if a field is not expressible."""
    version = Literal.__getitem__(tuple(sorted(SUPPORTED_VERSIONS)))  # type: ignore[attr-defined]
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [("v", version)]
    for spec in cls.FIELDS:
        kind = _type_of(spec)
        if kind is None or (not spec.required and cls.__dataclass_fields__[spec.name].default is MISSING):
            return None  # not expressible, or a default made by a factory: left to the Python path
        fields.append((spec.name, kind) if spec.required else (spec.name, kind | None, None))
    fields.sort(key=lambda f: len(f) == 3)  # required first, as a struct wants them
    return msgspec.defstruct(f"Wire{cls.__name__}", fields, tag_field="type", tag=cls.TYPE, forbid_unknown_fields=True)


def _maker(cls: type[Record]) -> Maker:
    """A function from ``cls``'s struct to ``cls`` (None where a float is not finite: the Python path's to say),
    filling the record's slots as its ``__init__`` would, absent values taking the field's default."""
    env: dict[str, Any] = {"new": object.__new__, "cls": cls, "isfinite": math.isfinite}
    lines = ["def make(s):", "    o = new(cls)"]
    for i, spec in enumerate(cls.FIELDS):
        x = f"x{i}"
        env[f"set{i}"] = cls.__dict__[spec.name].__set__  # the slot's own descriptor: no frozen __setattr__
        lines.append(f"    {x} = s.{spec.name}")
        finite = {"float": f"isfinite({x})", "float_list": f"all(map(isfinite, {x}))"}.get(spec.kind)
        if spec.required:
            if finite:
                lines += [f"    if not {finite}:", "        return None"]
        else:
            env[f"d{i}"] = cls.__dataclass_fields__[spec.name].default
            lines += [f"    if {x} is None:", f"        {x} = d{i}"]
            if finite:
                lines += [f"    elif not {finite}:", "        return None"]
        lines.append(f"    set{i}(o, {x})")
    lines.append("    return o")
    exec(compile("\n".join(lines), f"<maker of {cls.__name__}>", "exec"), env)  # our own specs
    return env["make"]  # type: ignore[no-any-return]


class EventDecoder:
    """Decodes the input events of ``classes`` whose fields msgspec can express; :meth:`decode` gives None for
    anything it does not accept as is."""

    def __init__(self, classes: list[type[Record]]) -> None:
        self._makers: dict[type[msgspec.Struct], Maker] = {}
        for cls in classes:
            struct = _struct(cls)
            if struct is not None:
                self._makers[struct] = _maker(cls)
        structs = tuple(self._makers)
        union = Union.__getitem__(structs) if len(structs) > 1 else structs[0]  # type: ignore[attr-defined]
        self._decoder = msgspec.msgpack.Decoder(union)

    def decode(self, data: bytes) -> Record | None:
        try:
            wire = self._decoder.decode(data)
        except Exception:  # invalid, or anything msgspec cannot decide: the Python path answers with its reason
            return None
        return self._makers[type(wire)](wire)
