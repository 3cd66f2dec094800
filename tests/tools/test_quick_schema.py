"""The quick accept never says valid where the full validator would refuse (``quick_schema.py``)."""

from collections import OrderedDict
from typing import Any, Literal

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autonomic.errors import InvalidInput, ToolArgumentsInvalid
from autonomic.tools.contract import Tool, tool
from autonomic.tools.quick_schema import quick_accept

SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {"arg": {"type": "integer"}},
        "required": ["arg"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "account": {"type": "string"},
            "amount": {"type": "number"},
            "memo": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "mode": {"enum": ["fast", "safe", 1, True, None]},
            "extra": {"type": "object"},
            "flag": {"type": ["boolean", "null"], "description": "annotated"},
            "any": {},
        },
        "required": ["account"],
        "additionalProperties": False,
    },
    {"properties": {"n": {"type": "integer"}}, "required": ["n"]},  # no type: objects only
    {"type": "object", "additionalProperties": {"type": "integer"}},
    {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "number"}}}},
    {"enum": [1, "1", 1.5, False]},
    True,
]

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["arg", "account", "amount", "memo", "tags", "mode", "n", "x", "zz"]),
            inner,
            max_size=5,
        )
    ),
    max_leaves=12,
)


@pytest.mark.parametrize("schema", SCHEMAS, ids=range(len(SCHEMAS)))
@settings(max_examples=400, deadline=None)
@given(value=JSON)
def test_quick_accept_agrees_with_jsonschema_on_every_value_it_accepts(schema, value):
    accept = quick_accept(schema)
    assert accept is not None
    full = jsonschema.Draft202012Validator(schema)
    if accept(value):
        assert full.is_valid(value), (schema, value)


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        (SCHEMAS[0], {"arg": 3}),
        (SCHEMAS[0], {"arg": 3.0}),  # an integral float is an integer
        (SCHEMAS[1], {"account": "a", "memo": None, "tags": ["x"], "mode": 1, "any": [1]}),
        (SCHEMAS[2], "not an object: the object keywords do not apply"),
        (SCHEMAS[3], {"a": 1, "b": 2}),
        (SCHEMAS[4], [{"x": 1.5}, {}]),
        (SCHEMAS[5], "1"),
    ],
)
def test_the_usual_valid_values_are_accepted_quickly(schema, value):
    accept = quick_accept(schema)
    assert accept is not None
    assert accept(value)
    assert jsonschema.Draft202012Validator(schema).is_valid(value)


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        (SCHEMAS[0], {"arg": True}),  # a bool is no integer
        (SCHEMAS[0], {"arg": 1, "more": 2}),
        (SCHEMAS[0], {}),
        (SCHEMAS[1], {"account": "a", "mode": 1.0}),  # jsonschema says valid: the full one asks
        (SCHEMAS[0], OrderedDict(arg=1)),  # not a type json.loads makes: don't know
        (SCHEMAS[5], True),
    ],
)
def test_anything_else_is_left_to_the_full_validator(schema, value):
    accept = quick_accept(schema)
    assert accept is not None
    assert not accept(value)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "minimum": 0},
        {"$ref": "#/$defs/x", "$defs": {"x": {}}},
        {"type": "object", "properties": {"s": {"type": "string", "pattern": "^a"}}},
        {"type": "object", "patternProperties": {"^a": {}}},
        {"oneOf": [{"type": "string"}]},
        False,
    ],
)
def test_a_schema_with_another_keyword_has_no_quick_accept(schema):
    assert quick_accept(schema) is None


def test_a_tool_still_refuses_with_the_full_validators_message():
    @tool
    def pick(mode: Literal["a", "b"], n: int) -> None:
        """Pick."""

    pick.validate({"mode": "a", "n": 1})
    with pytest.raises(ToolArgumentsInvalid, match=r"at n: 'x' is not of type 'integer'"):
        pick.validate({"mode": "a", "n": "x"})
    with pytest.raises(ToolArgumentsInvalid, match=r"'c' is not one of \['a', 'b'\]"):
        pick.validate({"mode": "c", "n": 1})


def test_a_tool_with_a_schema_beyond_the_quick_accept_validates_as_before():
    bounded = Tool(
        name="bounded",
        fn=lambda n: n,
        parameters={"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}},
        output_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
    )
    bounded.validate({"n": 1})
    with pytest.raises(ToolArgumentsInvalid, match="less than the minimum"):
        bounded.validate({"n": -1})
    bounded.validate_output({"n": 2})
    with pytest.raises(InvalidInput, match="breaks its output_schema at n"):
        bounded.validate_output({"n": "two"})
