"""Tenant isolation as a property: several tenants, random requests by random identities on
random objects (their own and others'), and 0 cross-tenant reads or writes."""

import asyncio
import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from served import PING, serving

from autonomic.errors import NotFound

TENANTS = ("t1", "t2", "t3")
ROLES = ("member", "approver")
OPS = (
    "list_runs", "get_run", "timeline", "cancel", "resume", "start", "inbox", "all_approvals",
    "get_approval", "approve", "deny", "agents", "events", "publish", "letters", "get_letter",
    "retry_letter", "drop_letter", "kpis",
)  # fmt: skip
LETTER_OPS = ("get_letter", "retry_letter", "drop_letter")

request_plans = st.lists(
    st.tuples(
        st.sampled_from(TENANTS),
        st.sampled_from(ROLES),
        st.sampled_from(OPS),
        st.sampled_from(TENANTS),  # whose object the request names
        st.integers(min_value=0, max_value=1),  # which of that tenant's objects
    ),
    min_size=1,
    max_size=10,
)


async def _state(store, run_id, approval_id):
    run = await store.get_run(run_id)
    approval = await store.get_approval(approval_id)
    return run.version, run.status, len(await store.load_journal(run_id)), approval.version


def test_no_request_reads_or_writes_another_tenants_objects(tmp_path):
    _random_requests(f"sqlite:///{tmp_path}/i.db", examples=40, own=5)


def test_no_request_reads_or_writes_another_tenants_objects_on_kafka(tmp_path, kafka_url):
    """The same property with events and dead letters on Kafka (fewer examples: a dead-letter
    check reads the letter topics back each time)."""
    _random_requests(f"sqlite:///{tmp_path}/i.db", examples=30, own=2, bus=kafka_url)


def _random_requests(url, *, examples, own, **service):
    loop = asyncio.new_event_loop()
    stack = contextlib.AsyncExitStack()
    s = loop.run_until_complete(stack.enter_async_context(serving(url, **service)))
    objects = {}
    for tenant in TENANTS:
        objects[tenant] = [
            loop.run_until_complete(s.waiting_run(tenant, requester=f"someone@{tenant}"))
            for _ in range(2)
        ]
    own_runs = {t: {r.id for r, _ in objects[t]} for t in TENANTS}
    letters = {t: [loop.run_until_complete(s.dead_letter(t)) for _ in range(2)] for t in TENANTS}
    settled: set[str] = set()
    counts = {"cross": 0, "own": 0}

    async def letter_alive(letter_id):
        try:
            await s.service.bus.dead_letter(letter_id)
        except NotFound:
            return False
        return True

    async def check(plan):
        for tenant, role, op, owner, index in plan:
            headers = await s.key(tenant, role)
            run, approval = objects[owner][index]
            letter = letters[owner][index]
            cross = owner != tenant
            before = await _state(s.service.store, run.id, approval.id)
            alive = await letter_alive(letter.id)
            path, method, body = {
                "list_runs": ("/runs", "GET", None),
                "get_run": (f"/runs/{run.id}", "GET", None),
                "timeline": (f"/runs/{run.id}/timeline", "GET", None),
                "cancel": (f"/runs/{run.id}/cancel", "POST", {"reason": "r"}),
                "resume": (f"/runs/{run.id}/resume", "POST", {"reason": "r"}),
                "start": ("/runs", "POST", {"agent": "triage", "task": "t"}),
                "inbox": ("/approvals", "GET", None),
                "all_approvals": ("/approvals?status=approved", "GET", None),
                "get_approval": (f"/approvals/{approval.id}", "GET", None),
                "approve": (f"/approvals/{approval.id}/approve", "POST", {}),
                "deny": (f"/approvals/{approval.id}/deny", "POST", {"reason": "r"}),
                "agents": ("/agents", "GET", None),
                "events": ("/events?limit=500", "GET", None),
                "publish": ("/events", "POST", {"type": PING, "data": {"by": tenant}}),
                "letters": ("/dead-letters?limit=1000", "GET", None),
                "get_letter": (f"/dead-letters/{letter.id}", "GET", None),
                "retry_letter": (f"/dead-letters/{letter.id}/retry", "POST", None),
                "drop_letter": (f"/dead-letters/{letter.id}/drop", "POST", {"reason": "r"}),
                "kpis": ("/kpis", "GET", None),
            }[op]
            answer = await s.client.request(method, path, json=body, headers=headers)
            assert answer.status_code < 500, answer.text
            text = answer.text.replace(run.id, "<asked>")  # a 404 may repeat the id asked for
            text = text.replace(letter.id, "<asked>")
            for other in TENANTS:
                if other != tenant:  # no id of another tenant's object in any answer
                    assert not any(r in text for r in own_runs[other]), (op, tenant, other)
                    assert not any(x.id in text for x in letters[other]), (op, tenant, other)
                    assert f'"tenant":"{other}"' not in text
                    assert f'"by":"{other}"' not in text
            if op in ("list_runs", "inbox", "all_approvals", "agents", "start", "events",
                      "publish", "letters", "kpis"):  # fmt: skip
                continue
            if op in LETTER_OPS:
                if cross:
                    counts["cross"] += 1
                    assert answer.status_code == 404, (op, answer.text)
                    assert await letter_alive(letter.id) == alive
                else:
                    counts["own"] += 1
                    expected = (200, 403) if letter.id not in settled else (404,)
                    assert answer.status_code in expected, (op, answer.text)
                    if op != "get_letter" and answer.status_code == 200:
                        settled.add(letter.id)
                continue
            if cross:
                counts["cross"] += 1
                assert answer.status_code == 404, (op, answer.text)
                assert await _state(s.service.store, run.id, approval.id) == before
            else:
                counts["own"] += 1
                assert answer.status_code in (200, 403, 409), (op, answer.text)
        for tenant in TENANTS:  # runs started by anyone belong to the starter's tenant only
            listed = (
                await s.client.get("/runs?limit=500", headers=await s.key(tenant, "member"))
            ).json()
            assert {r["tenant"] for r in listed["runs"]} <= {tenant}
            own_runs[tenant] |= {r["id"] for r in listed["runs"]}

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(plan=request_plans)
    def run_plans(plan):
        loop.run_until_complete(check(plan))

    try:
        run_plans()
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()
    assert counts["cross"] > examples // 2
    assert counts["own"] > own
