"""Model split: planning and refinement go to the providers the agent names for them."""

import asyncio

import pytest

from autonomic.core.messages import Message, Role
from autonomic.errors import ConfigError
from autonomic.gateway import Gateway
from autonomic.gateway.split import ModelSplit, Phase
from autonomic.testing.gateway import gateway_config, provider
from autonomic.testing.openai_server import OpenAITestServer, completion


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
