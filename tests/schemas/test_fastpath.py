"""The compiled readers (``schemas.fastpath``) decide exactly as the generic validation: the same record for every
map it accepts, the same error for every map it rejects, whatever field is broken and how."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.schemas.test_records import SAMPLES
from tickmatch.schemas import ALL_RECORDS, Record, SchemaError
from tickmatch.schemas.fields import MAX_STR, f32_wire
from tickmatch.schemas.records import SCHEMA_VERSION

# Values that are valid for some kinds and not others, or valid but not in the form the record keeps (an int for
# a float), or at an edge (empty, longest, negative, not finite).
ODD = st.sampled_from(
    [None, 0, 1, -1, 2**70, 0.0, -0.5, 1.5, float("nan"), float("inf"), True, False, "", "x", "x" * MAX_STR,
     "x" * (MAX_STR + 1), "hangup", [], [1.0, 2], ["a", ""], ["a"], (1.0,), b"\x00\x00\x80\x3f", {"a": 1}]
)  # fmt: skip


def outcome(read: Any, data: dict[str, Any]) -> object:
    try:
        return read(data)
    except SchemaError as exc:
        return ("error", str(exc))


@settings(max_examples=400, deadline=None)
@given(
    sample=st.sampled_from(SAMPLES),
    changes=st.lists(st.tuples(st.integers(0, 40), ODD), max_size=3),
    version=st.sampled_from([1, 1, 1, None, 2, "1", True]),
)
def test_the_compiled_reader_agrees_with_the_generic_validation(
    sample: Record, changes: list[tuple[int, object]], version: object
) -> None:
    cls = type(sample)
    data = sample.wire()
    data["v"] = version
    names = [spec.name for spec in cls.FIELDS]
    for index, value in changes:
        data[names[index % len(names)]] = value
    fast, generic = outcome(cls.from_dict, data), outcome(cls.validate, data)
    assert fast == generic, (data, fast, generic)
    if not isinstance(fast, tuple):
        assert type(fast) is cls


@pytest.mark.parametrize("name", sorted(ALL_RECORDS))
def test_every_record_type_has_a_reader_that_reads_its_samples(name: str) -> None:
    cls = ALL_RECORDS[name]
    for sample in (s for s in SAMPLES if type(s) is cls):
        assert cls.from_dict(sample.wire()) == sample


def generic_wire(record: Record) -> dict[str, Any]:
    """The wire map by the rules, field spec by field spec (what the compiled writer must equal)."""
    out: dict[str, Any] = {"type": record.TYPE, "v": SCHEMA_VERSION}
    for spec in record.FIELDS:
        value = getattr(record, spec.name)
        if value is None or value == ():
            continue
        if spec.kind == "f32_vector":
            if not len(value):
                continue
            value = f32_wire(value)
        out[spec.name] = value
    return out


@pytest.mark.parametrize("record", SAMPLES, ids=lambda r: r.TYPE)
def test_the_compiled_writer_writes_what_the_generic_rules_say(record: Record) -> None:
    assert record.wire() == generic_wire(record)
    empty = {spec.name: () for spec in type(record).FIELDS if spec.kind.endswith(("list", "vector"))}
    if empty:  # empty sequences are left out by both
        bare = dataclasses.replace(record, **empty)  # type: ignore[type-var]
        assert bare.wire() == generic_wire(bare) and not set(empty) & set(bare.wire())
