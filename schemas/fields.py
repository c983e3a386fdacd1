"""Declarative field specs shared by validation and JSON Schema export.

Why one spec drives both: upstream teams in other languages read the exported JSON Schema, and the worker
validates with the same rules, so the two can never drift apart.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["str", "int", "float", "bool", "str_list", "float_list", "f32_vector"]

# A feature vector: ``array('f')`` as decoded or built by the worker; records accept any sequence of numbers.
# On the wire (msgpack) it is one bin of little-endian float32 values: 4 bytes a value instead of 9 for a msgpack
# float64, and one object instead of one per value (a decision with two 81-value vectors went 1,798 -> ~700 B).
Vector = Sequence[float]
_SWAP = sys.byteorder != "little"


def f32_native(buf: bytes) -> array[float]:
    """A vector from float32 bytes in this machine's order (e.g. ``ndarray.tobytes()``)."""
    out = array("f")
    out.frombytes(buf)
    return out


def f32(values: Vector) -> array[float]:
    """A vector as ``array('f')`` (itself if it is one already)."""
    return values if isinstance(values, array) and values.typecode == "f" else array("f", values)


def f32_wire(values: Vector) -> bytes:
    """The wire bytes of a vector (little-endian float32)."""
    arr = values if isinstance(values, array) and values.typecode == "f" else array("f", values)
    if _SWAP:
        arr = array("f", arr)
        arr.byteswap()
    return arr.tobytes()


MAX_STR = 256
MAX_LIST = 64
_FLOATS = frozenset({float, int})  # exact types a number may have (bool, an int subclass, is not one)


class SchemaError(ValueError):
    """A record failed validation; ``field`` names the offending field (dotted with the record type)."""

    def __init__(self, record: str, field: str, message: str) -> None:
        self.record = record
        self.field = field
        self.message = message
        super().__init__(f"{record}.{field}: {message}")


@dataclass(frozen=True, slots=True)
class Field:
    """One record field: its kind, whether it is required, and bounds a value must respect."""

    name: str
    kind: Kind
    doc: str
    required: bool = True
    minimum: float | None = None
    enum: tuple[str, ...] | None = None
    max_items: int = MAX_LIST

    def check(self, record: str, value: Any) -> Any:
        """Return the value normalised to its kind, or raise :class:`SchemaError` saying what is wrong."""
        if self.kind == "str":
            if not isinstance(value, str):
                raise SchemaError(record, self.name, f"expected a string, got {_describe(value)}")
            if not value or len(value) > MAX_STR:
                raise SchemaError(record, self.name, f"expected 1..{MAX_STR} characters, got {len(value)}")
            if self.enum is not None and value not in self.enum:
                raise SchemaError(record, self.name, f"expected one of {list(self.enum)}, got {value!r}")
            return value
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise SchemaError(record, self.name, f"expected true/false, got {_describe(value)}")
            return value
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise SchemaError(record, self.name, f"expected an integer, got {_describe(value)}")
            self._check_min(record, value)
            return value
        if self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SchemaError(record, self.name, f"expected a number, got {_describe(value)}")
            number = float(value)
            if not math.isfinite(number):
                raise SchemaError(record, self.name, f"expected a finite number, got {number}")
            self._check_min(record, number)
            return number
        if self.kind == "float_list":
            return self._check_floats(record, value)
        if self.kind == "f32_vector":
            return self._check_vector(record, value)
        # str_list
        if not isinstance(value, list | tuple):
            raise SchemaError(record, self.name, f"expected a list of strings, got {_describe(value)}")
        if len(value) > self.max_items:
            raise SchemaError(record, self.name, f"expected at most {self.max_items} entries, got {len(value)}")
        for item in value:
            if not isinstance(item, str) or not item or len(item) > MAX_STR:
                raise SchemaError(record, self.name, f"expected non-empty strings, got {_describe(item)}")
        return tuple(value)

    def _check_floats(self, record: str, value: Any) -> tuple[float, ...]:
        if not isinstance(value, list | tuple):
            raise SchemaError(record, self.name, f"expected a list of numbers, got {_describe(value)}")
        if len(value) > self.max_items:
            raise SchemaError(record, self.name, f"expected at most {self.max_items} entries, got {len(value)}")
        if _FLOATS.issuperset(map(type, value)):  # the common case in C calls (joins carry signals)
            numbers = tuple(map(float, value))
            if all(map(math.isfinite, numbers)):
                return numbers
        out = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
                raise SchemaError(record, self.name, f"expected finite numbers, got {_describe(item)}")
            out.append(float(item))
        return tuple(out)

    def _check_vector(self, record: str, value: Any) -> array[float]:
        if isinstance(value, bytes | bytearray):
            if len(value) % 4 or len(value) // 4 > self.max_items:
                raise SchemaError(
                    record,
                    self.name,
                    f"expected up to {self.max_items} little-endian float32 values, got {len(value)} bytes",
                )
            out = f32_native(bytes(value))
            if _SWAP:
                out.byteswap()
            if not all(map(math.isfinite, out)):
                raise SchemaError(record, self.name, "expected finite numbers")
            return out
        return array("f", self._check_floats(record, value))  # a list of numbers is accepted too (JSON, older)

    def _check_min(self, record: str, value: float) -> None:
        if self.minimum is not None and value < self.minimum:
            raise SchemaError(record, self.name, f"expected >= {self.minimum}, got {value}")

    def json_schema(self) -> dict[str, Any]:
        """This field as a JSON Schema property."""
        out: dict[str, Any]
        if self.kind == "str":
            out = {"type": "string", "minLength": 1, "maxLength": MAX_STR}
            if self.enum is not None:
                out["enum"] = list(self.enum)
        elif self.kind == "bool":
            out = {"type": "boolean"}
        elif self.kind == "int":
            out = {"type": "integer"}
        elif self.kind == "float":
            out = {"type": "number"}
        elif self.kind in ("float_list", "f32_vector"):
            # (an f32_vector travels as little-endian float32 bytes in msgpack; its JSON view is this array)
            out = {"type": "array", "maxItems": self.max_items, "items": {"type": "number"}}
        else:
            out = {
                "type": "array",
                "maxItems": self.max_items,
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_STR},
            }
        if self.minimum is not None:
            out["minimum"] = self.minimum
        out["description"] = self.doc
        return out


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"
