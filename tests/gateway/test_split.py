"""Model split: planning and refinement go to the providers the agent names for them."""

import asyncio

import pytest

from autonomic.bootstrap import build_model, build_store
from autonomic.core.journal import EntryKind
from autonomic.core.messages import Message, Role
from autonomic.core.timeline import spend
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.planning import Planning
from autonomic.errors import ConfigError
from autonomic.gateway import Gateway
from autonomic.gateway.split import ModelSplit, Phase, view_spec
from autonomic.testing.gateway import gateway_config, provider
from autonomic.testing.openai_server import OpenAITestServer, completion
from autonomic.tools.contract import tool


@tool(idempotent=True)
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_each_phase_uses_its_own_provider():
    with (
        OpenAITestServer(default=completion("plan")) as small,
        OpenAITestServer(default=completion("refined")) as large,
    ):
        gateway = Gateway(
            gateway_config(provider("small", small.base_url), provider("large", large.base_url))
        )
        split = ModelSplit.from_config({"planning": "small", "refinement": ["large"]}, gateway)

        async def main():
            try:
                plan = await split.for_phase(Phase.PLANNING).complete([Message(Role.USER, "t")], [])
                refined = await split.for_phase("refinement").complete(
                    [Message(Role.USER, "t")], []
                )
                return plan, refined
            finally:
                await gateway.aclose()

        plan, refined = asyncio.run(main())
    assert (plan.provider, plan.content) == ("small", "plan")
    assert (refined.provider, refined.content) == ("large", "refined")
    assert split.planning.name == "gateway:planning:small"
    assert len(small.requests) == len(large.requests) == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"planning": "small"}, "models.refinement is missing"),
        ({"planning": "small", "refinement": "huge"}, "no provider named 'huge'"),
        ({"planning": "small", "refinement": "small", "review": "small"}, "unknown phase"),
        ({"planning": 3, "refinement": "small"}, "must be a provider name"),
    ],
)
def test_bad_split_configs_say_what_is_wrong(data, message):
    gateway = Gateway(gateway_config(provider("small", "http://127.0.0.1:1/v1")))
    with pytest.raises(ConfigError, match=message):
        ModelSplit.from_config(data, gateway, source="agents/rec.yaml")


def test_a_planning_agent_plans_on_the_small_provider_and_acts_on_the_large(tmp_path):
    """The model split end to end: ``gateway:FILE#small`` plans, ``gateway:FILE#large`` acts,
    both views of the one gateway the engine built; the second task of the pattern costs the
    small provider nothing."""
    plan = '{"steps": ["Add the two numbers with add", "Answer with the sum"]}'
    acting = [
        completion(None, [("c1", "add", '{"a": 1, "b": 2}')]),
        completion("3"),
        completion(None, [("c2", "add", '{"a": 5, "b": 7}')]),
        completion("12"),
    ]
    with (
        OpenAITestServer(default=completion(plan)) as small,
        OpenAITestServer(acting) as large,
    ):
        config = tmp_path / "providers.yaml"
        config.write_text(
            "providers:\n"
            f"  - {{name: small, base_url: '{small.base_url}', model: gpt-4o-mini,"
            " price: {input: 0.15, output: 0.6}}\n"
            f"  - {{name: large, base_url: '{large.base_url}', model: gpt-4o,"
            " price: {input: 2.5, output: 10}}\n"
            "retry: {max_attempts: 2, base_delay: 0.01, max_delay: 0.02}\n"
        )
        agent = Agent(
            name="calc",
            instructions="Add numbers with the add tool.",
            tools=(add,),
            model=f"gateway:{config}#large",
            planning=Planning(model=f"gateway:{config}#small"),
        )

        async def main():
            store = build_store(f"sqlite:///{tmp_path / 'runs.db'}")
            await store.migrate()
            engine = Engine(store, AgentRegistry([agent]), build_model)
            try:
                runs = [await engine.run("calc", f"add {a} and {b}") for a, b in ((1, 2), (5, 7))]
                journals = [await store.load_journal(r.id) for r in runs]
                parent = engine.model_for(f"gateway:{config}")
                views = [engine.model_for(agent.model), engine.model_for(f"gateway:{config}#small")]
                return runs, journals, parent, views
            finally:
                await engine.aclose()
                await store.close()

        runs, journals, parent, views = asyncio.run(main())
    assert [r.output for r in runs] == ["3", "12"]
    assert len(small.requests) == 1  # the second run reused the plan
    assert len(large.requests) == 4
    assert "1. Add the two numbers with add" in large.requests[0]["messages"][0]["content"]
    assert "add <n> and <n>" in small.requests[0]["messages"][-1]["content"]
    (planned,) = [e.payload for e in journals[0] if e.kind is EntryKind.PLAN]
    assert planned["provider"] == "small"
    assert planned["cost_usd"] > 0
    responses = [e.payload for e in journals[0] if e.kind is EntryKind.MODEL_RESPONSE]
    assert {r["provider"] for r in responses} == {"large"}
    assert set(spend(journals[0])["providers"]) == {"small", "large"}
    (reused,) = [e.payload for e in journals[1] if e.kind is EntryKind.PLAN]
    assert reused["source"] == "cache"
    assert set(spend(journals[1])["providers"]) == {"large"}
    for view in views:  # one gateway: shared limits, breakers and ledger
        assert view.buckets is parent.buckets
        assert view.breakers is parent.breakers
        assert view.ledger is parent.ledger
    assert parent.ledger.providers["small"].calls == 1


def test_a_view_spec_names_providers_of_a_gateway():
    assert view_spec("gateway:p.yaml#small") == ("gateway:p.yaml", ["small"])
    assert view_spec("gateway:p.yaml#small, vllm") == ("gateway:p.yaml", ["small", "vllm"])
    assert view_spec("function:x#y") == ("function:x#y", None)
    with pytest.raises(ConfigError, match="empty provider name"):
        view_spec("gateway:p.yaml#small,")


def test_a_view_of_an_unknown_provider_says_which_exist(tmp_path):
    config = tmp_path / "providers.yaml"
    config.write_text("providers:\n  - {name: main, base_url: 'http://127.0.0.1:1/v1', model: m}\n")
    with pytest.raises(ConfigError, match="no provider named 'huge'") as err:
        build_model(f"gateway:{config}#huge")
    assert err.value.hint == "known: main"
