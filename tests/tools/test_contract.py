import asyncio

import pytest

from autonomic.errors import InvalidInput, NotFound, ToolArgumentsInvalid, UserError
from autonomic.tools.contract import Tool, ToolContext, tool
from autonomic.tools.registry import ToolRegistry

CTX = ToolContext(run_id="r", call_id="c", idempotency_key="r:1")


@tool(idempotent=True)
def transfer(
    account: str, amount_cents: int, memo: str | None = None, ctx: ToolContext | None = None
) -> dict[str, object]:
    """Move money."""
    return {"account": account, "amount": amount_cents, "key": ctx.idempotency_key if ctx else None}


def test_schema_comes_from_type_hints():
    assert transfer.parameters["required"] == ["account", "amount_cents"]
    assert transfer.parameters["properties"]["amount_cents"] == {"type": "integer"}
    assert "ctx" not in transfer.parameters["properties"]
    assert transfer.parameters["additionalProperties"] is False
    assert transfer.description == "Move money."
    assert transfer.ref == "transfer@1"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"account": "a"', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"account": "a"}', "'amount_cents' is a required property"),
        ('{"account": "a", "amount_cents": "ten"}', "amount_cents: 'ten' is not of type 'integer'"),
        ('{"account": "a", "amount_cents": 1, "extra": 1}', "Additional properties"),
    ],
)
def test_model_arguments_are_parsed_and_validated_with_a_clear_message(raw, expected):
    with pytest.raises(ToolArgumentsInvalid) as info:
        transfer.parse_arguments(raw)
    assert expected in str(info.value)


def test_invoke_passes_the_idempotency_key():
    args = transfer.parse_arguments('{"account": "a", "amount_cents": 5}')
    assert asyncio.run(transfer.invoke(args, CTX)) == {"account": "a", "amount": 5, "key": "r:1"}


def test_timeouts_are_enforced():
    async def slow() -> None:
        await asyncio.Event().wait()

    t = Tool(name="slow", fn=slow, parameters={"type": "object"}, timeout=0.01)
    with pytest.raises(TimeoutError):
        asyncio.run(t.invoke({}, CTX))


def test_invalid_names_and_schemas_are_refused():
    with pytest.raises(InvalidInput, match="invalid tool name"):
        Tool(name="rm -rf", fn=lambda: None, parameters={"type": "object"})
    with pytest.raises(InvalidInput, match="not a valid JSON schema"):
        Tool(name="x", fn=lambda: None, parameters={"type": "nonsense"})


def test_registry_resolves_versions_and_refuses_duplicates():
    v1 = Tool(name="t", fn=lambda: 1, parameters={"type": "object"}, version="1")
    v2 = Tool(name="t", fn=lambda: 2, parameters={"type": "object"}, version="2")
    registry = ToolRegistry([v1, v2])
    assert registry.get("t") is v2
    assert registry.resolve("t@1") is v1
    with pytest.raises(NotFound, match="t@3"):
        registry.resolve("t@3")
    with pytest.raises(UserError, match="already registered"):
        registry.register(Tool(name="t", fn=lambda: 3, parameters={"type": "object"}, version="1"))
