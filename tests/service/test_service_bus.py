"""Events, dead letters, KPIs and audit verification over the API: each tenant sees only its own
events and letters (an admin every tenant's), retry and drop act as the CLI's ``dlq`` does, KPIs
count only the caller's tenant's runs, and the audit verification reads the same report as
``autonomic audit verify``."""

import asyncio
import random

from served import PING, serving

from autonomic.core.envelope import new_event
from autonomic.testing.tampering import Tamperer


def test_events_are_listed_and_published_per_tenant(store_url):
    async def go():
        async with serving(store_url) as s:
            acme, globex = await s.key("acme", "member"), await s.key("globex", "member")
            admin = await s.key("ops", "admin")
            for n in range(3):
                made = await s.client.post(
                    "/events", json={"type": PING, "data": {"n": n}}, headers=acme
                )
                assert made.status_code == 201, made.text
                assert made.json()["tenant"] == "acme"
            other = await s.client.post(
                "/events", json={"type": PING, "data": {"n": 9}, "correlation_id": "c9"},
                headers=globex,
            )  # fmt: skip
            assert other.json()["correlation_id"] == "c9"
            page = (await s.client.get("/events?limit=2", headers=acme)).json()
            assert [e["data"]["n"] for e in page["events"]] == [2, 1]  # newest first
            rest = (
                await s.client.get(f"/events?before={page['next_before']}", headers=acme)
            ).json()
            assert [e["data"]["n"] for e in rest["events"]] == [0]
            assert rest["next_before"] is None
            assert {e["tenant"] for e in page["events"] + rest["events"]} == {"acme"}
            seen = (await s.client.get("/events?limit=500", headers=globex)).json()["events"]
            assert [e["data"]["n"] for e in seen] == [9]
            everyone = (await s.client.get("/events?limit=500", headers=admin)).json()["events"]
            assert {e["tenant"] for e in everyone} == {"acme", "globex"}
            only = (await s.client.get("/events?correlation=c9", headers=admin)).json()
            assert [e["data"]["n"] for e in only["events"]] == [9]
            types = (await s.client.get("/event-types", headers=acme)).json()
            assert PING in {t["name"] for t in types}

    asyncio.run(go())


def test_publishing_refuses_runtime_unknown_and_invalid_events(sqlite_url):
    async def go():
        async with serving(sqlite_url) as s:
            member = await s.key("acme", "member")
            forged = await s.client.post(
                "/events",
                json={"type": "autonomic.run.completed", "data": {"run_id": "r", "agent": "a"}},
                headers=member,
            )
            assert forged.status_code == 422
            assert "runtime emits itself" in forged.json()["error"]["message"]
            unknown = await s.client.post(
                "/events", json={"type": "no.such.type", "data": {}}, headers=member
            )
            assert unknown.status_code == 422
            assert "unknown event type" in unknown.json()["error"]["message"]
            bad = await s.client.post("/events", json={"type": PING, "data": [1]}, headers=member)
            assert bad.status_code == 422, bad.text
            listed = (await s.client.get("/events", headers=member)).json()
            assert listed["events"] == [], "a refused event was published"

    asyncio.run(go())


def test_dead_letters_are_scoped_retried_and_dropped(store_url):
    async def go():
        async with serving(store_url) as s:
            mine, theirs = await s.dead_letter("acme"), await s.dead_letter("globex")
            member = await s.key("acme", "member")
            approver = await s.key("acme", "approver")
            admin = await s.key("ops", "admin")
            listed = (await s.client.get("/dead-letters", headers=member)).json()
            assert [x["id"] for x in listed] == [mine.id]
            assert listed[0]["error"] == "cannot handle it"
            assert listed[0]["event"]["tenant"] == "acme"
            everyone = (await s.client.get("/dead-letters", headers=admin)).json()
            assert {x["id"] for x in everyone} == {mine.id, theirs.id}
            hidden = await s.client.get(f"/dead-letters/{theirs.id}", headers=approver)
            assert hidden.status_code == 404
            assert hidden.json()["error"]["message"] == f"no dead letter {theirs.id}"
            for act, body in (("retry", None), ("drop", {"reason": "x"})):
                refused = await s.client.post(
                    f"/dead-letters/{theirs.id}/{act}", json=body, headers=approver
                )
                assert refused.status_code == 404
            assert (await s.service.bus.dead_letter(theirs.id)).id == theirs.id  # untouched
            no_reason = await s.client.post(
                f"/dead-letters/{mine.id}/drop", json={}, headers=approver
            )
            assert no_reason.status_code == 422
            retried = await s.client.post(f"/dead-letters/{mine.id}/retry", headers=approver)
            assert retried.status_code == 200, retried.text
            assert (await s.client.get("/dead-letters", headers=member)).json() == []
            again = await s.client.post(f"/dead-letters/{mine.id}/retry", headers=approver)
            assert again.status_code == 404
            dropped = await s.client.post(
                f"/dead-letters/{theirs.id}/drop", json={"reason": "obsolete"}, headers=admin
            )
            assert dropped.status_code == 200, dropped.text
            assert (await s.client.get("/dead-letters", headers=admin)).json() == []

    asyncio.run(go())


def test_kpis_count_only_the_callers_tenant(store_url):
    async def go():
        async with serving(store_url) as s:
            for _ in range(2):
                await s.waiting_run("acme", requester="ann@acme")
            await s.waiting_run("globex", requester="gil@globex")
            acme = (await s.client.get("/kpis", headers=await s.key("acme", "member"))).json()
            assert acme["runs"] == 2
            (row,) = acme["kpis"]
            assert (row["agent"], row["runs"]) == ("payer", 2)
            assert row["human_intervention_rate"] is not None
            admin = (await s.client.get("/kpis?since=1h", headers=await s.key("o", "admin"))).json()
            assert admin["runs"] == 3
            assert admin["since"] is not None
            bad = await s.client.get("/kpis?since=soon", headers=await s.key("acme", "member"))
            assert bad.status_code == 422

    asyncio.run(go())


def test_audit_verification_reports_the_log(store_url):
    async def go():
        async with serving(store_url) as s:
            run, _ = await s.waiting_run("acme", requester="ann@acme")
            admin = await s.key("ops", "admin")
            report = (await s.client.get("/audit/verify", headers=admin)).json()
            assert report["ok"] is True, report
            assert report["runs"] >= 1
            assert report["records"] >= 1
            one = (await s.client.get(f"/audit/verify?run_id={run.id}", headers=admin)).json()
            assert one["ok"] is True
            tamperer = Tamperer(store_url)
            try:
                tamperer.drop_triggers()
                tamperer.tamper(random.Random(3), "edit")
            finally:
                tamperer.close()
            broken = (await s.client.get("/audit/verify", headers=admin)).json()
            assert broken["ok"] is False
            assert broken["first_break"] is not None

    asyncio.run(go())


def test_a_published_event_of_another_tenant_never_reaches_the_events_list(sqlite_url):
    async def go():
        async with serving(sqlite_url) as s:
            await s.service.bus.publish(
                [new_event(PING, {"secret": "globex-only"}, source="t", tenant="globex")]
            )
            answer = await s.client.get(
                "/events?type=" + PING, headers=await s.key("acme", "admin")
            )
            assert "globex-only" in answer.text  # an admin sees every tenant
            member = await s.client.get("/events", headers=await s.key("acme", "approver"))
            assert "globex-only" not in member.text

    asyncio.run(go())
