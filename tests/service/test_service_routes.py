"""Authorization on every route of the OpenAPI document: no credential is 401, another tenant's
credential on an object is 404, a role without the right is 403, and the right role is answered
without an exception (no 5xx, nothing logged as unexpected)."""

import asyncio
import logging
import re

import pytest
from served import PING, serving

from autonomic.service.routes.system import PUBLIC_PATHS

ROLES = ("member", "approver", "admin")

# Who may call each route (the lowest role), and a valid body. A route missing here fails the
# test: a new route must say who may call it.
ROUTES: dict[tuple[str, str], tuple[str | None, dict | None]] = {
    ("GET", "/healthz"): (None, None),
    ("GET", "/metrics"): ("admin", None),
    ("GET", "/agents"): ("member", None),
    ("GET", "/agents/{name}"): ("member", None),
    ("POST", "/runs"): ("member", {"agent": "triage", "task": "look"}),
    ("GET", "/runs"): ("member", None),
    ("GET", "/runs/{run_id}"): ("member", None),
    ("GET", "/runs/{run_id}/timeline"): ("member", None),
    ("POST", "/runs/{run_id}/cancel"): ("approver", {"reason": "stop"}),
    ("POST", "/runs/{run_id}/resume"): ("approver", {"reason": "go on", "budget": {"cost": 10}}),
    ("GET", "/approvals"): ("member", None),
    ("GET", "/approvals/{approval_id}"): ("member", None),
    ("POST", "/approvals/{approval_id}/approve"): ("approver", {"reason": "ok"}),
    ("POST", "/approvals/{approval_id}/deny"): ("approver", {"reason": "no"}),
    ("GET", "/keys"): ("admin", None),
    ("POST", "/keys"): ("admin", {"tenant": "a", "role": "member", "name": "new"}),
    ("POST", "/keys/{key_id}/rotate"): ("admin", None),
    ("POST", "/keys/{key_id}/revoke"): ("admin", None),
    ("GET", "/events"): ("member", None),
    ("POST", "/events"): ("member", {"type": PING, "data": {"n": 2}}),
    ("GET", "/event-types"): ("member", None),
    ("GET", "/dead-letters"): ("member", None),
    ("GET", "/dead-letters/{letter_id}"): ("member", None),
    ("POST", "/dead-letters/{letter_id}/retry"): ("approver", None),
    ("POST", "/dead-letters/{letter_id}/drop"): ("approver", {"reason": "obsolete"}),
    ("GET", "/kpis"): ("member", None),
    ("GET", "/audit/verify"): ("admin", None),
}
OBJECT_PARAMS = {"run_id", "approval_id", "key_id", "letter_id"}


def _operations(app_openapi: dict) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, item in app_openapi["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    ]


def test_every_route_checks_credential_tenant_and_role(sqlite_url, caplog):
    _walk_every_route(sqlite_url, caplog)


def _walk_every_route(url, caplog, **settings):
    caplog.set_level(logging.ERROR, logger="autonomic.service")

    async def go():
        async with serving(url, **settings) as s:
            openapi = (await s.client.get("/openapi.json")).json()
            operations = _operations(openapi)
            assert set(operations) == set(ROUTES), "every route says who may call it"
            seen = {"401": 0, "404": 0, "403": 0, "ok": 0}
            for method, template in operations:
                least, body = ROUTES[method, template]
                run, approval = await s.waiting_run("a", requester="ann@a")
                throwaway = await s.service.keys.create(
                    tenant="a", role="member", name="spare", by="t", expires_in=None
                )
                letter = await s.dead_letter("a") if "{letter_id}" in template else None
                path = template.format(
                    run_id=run.id,
                    approval_id=approval.id,
                    key_id=throwaway[0].id,
                    name="triage",
                    letter_id=letter.id if letter else "",
                )
                params = set(re.findall(r"{(\w+)}", template))

                async def call(headers, path=path, method=method, body=body):
                    return await s.client.request(method, path, json=body, headers=headers)

                if least is None:
                    assert template in PUBLIC_PATHS
                    assert (await call({})).status_code == 200
                    continue
                answer = await call({})
                assert answer.status_code == 401, (method, template, answer.text)
                assert answer.json()["error"]["code"] == "unauthenticated"
                seen["401"] += 1
                if params & OBJECT_PARAMS:
                    for role in ROLES[:2]:  # an admin sees every tenant
                        answer = await call(await s.key("b", role))
                        assert answer.status_code == 404, (method, template, role, answer.text)
                        assert "b" not in answer.json()["error"]["message"].split()
                        seen["404"] += 1
                for role in ROLES[: ROLES.index(least)]:
                    answer = await call(await s.key("a", role))
                    assert answer.status_code == 403, (method, template, role, answer.text)
                    seen["403"] += 1
                answer = await call(await s.key("a", least))
                assert answer.status_code < 300, (method, template, answer.text)
                seen["ok"] += 1
            return seen

    seen = asyncio.run(go())
    assert seen["401"] == len(ROUTES) - 1
    assert seen["404"] >= 20
    assert seen["403"] >= 15
    assert seen["ok"] == len(ROUTES) - 1
    assert not [r for r in caplog.records if "unexpected" in r.getMessage()]


@pytest.mark.postgres
def test_the_walk_holds_on_postgres_too(pg_url, caplog):
    _walk_every_route(pg_url, caplog)


def test_the_walk_holds_on_a_kafka_bus_too(sqlite_url, kafka_url, caplog):
    """Events and dead letters read from Kafka: the same answers on every route."""
    _walk_every_route(sqlite_url, caplog, bus=kafka_url)
