"""Events, dead letters, KPIs and audit verification over the API: each tenant sees only its own
events and letters (an admin every tenant's), retry and drop act as the CLI's ``dlq`` does, KPIs
count only the caller's tenant's runs, and the audit verification reads the same report as
``autonomic audit verify``."""

import asyncio
import random
import uuid

from aiokafka import AIOKafkaProducer
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
                await s.client.get(f"/events?cursor={page['next_cursor']}", headers=acme)
            ).json()
            assert [e["data"]["n"] for e in rest["events"]] == [0]
            assert rest["next_cursor"] is None
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
    asyncio.run(_work_the_dead_letters(store_url))


async def _work_the_dead_letters(url, **settings):
    async with serving(url, **settings) as s:
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
        no_reason = await s.client.post(f"/dead-letters/{mine.id}/drop", json={}, headers=approver)
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


def _bootstrap(kafka_url):
    return kafka_url.removeprefix("kafka://").partition("?")[0]


def test_events_are_listed_per_tenant_on_kafka_and_a_bad_cursor_is_refused(sqlite_url, kafka_url):
    """The same routes over a Kafka bus: each tenant's key lists only its own events, newest
    first, page by page; filters work; records that are not our CloudEvents (garbage, a tenant
    that is not a string) are skipped; a garbled cursor, or one of other filters, is a 422."""

    async def go():
        async with serving(sqlite_url, bus=kafka_url) as s:
            acme, globex = await s.key("acme", "member"), await s.key("globex", "member")
            admin = await s.key("ops", "admin")
            for n in range(5):
                for who in (acme, globex):
                    made = await s.client.post(
                        "/events",
                        json={"type": PING, "data": {"n": n}, "correlation_id": f"c{n % 2}"},
                        headers=who,
                    )
                    assert made.status_code == 201, made.text
            producer = AIOKafkaProducer(bootstrap_servers=_bootstrap(kafka_url), acks="all")
            await producer.start()
            try:
                topic = s.service.bus.topic_of(PING)
                garbled = b'{"specversion":"1.0","id":"x","source":"s","type":"%s","tenant":7}'
                for junk in (b"not json", b'{"a": 1}', garbled % PING.encode(), None):
                    await producer.send_and_wait(topic, value=junk, key=b"c0")
            finally:
                await producer.stop()
            for who, tenant in ((acme, "acme"), (globex, "globex")):
                seen, cursor = [], None
                for _ in range(100):
                    query = "/events?limit=2" + (f"&cursor={cursor}" if cursor else "")
                    answer = await s.client.get(query, headers=who)
                    assert answer.status_code == 200, answer.text
                    page = answer.json()
                    seen += page["events"]
                    cursor = page["next_cursor"]
                    if cursor is None:
                        break
                assert sorted(e["data"]["n"] for e in seen) == [0, 1, 2, 3, 4], seen
                stamps = [e["published_at"] for e in seen]
                assert stamps == sorted(stamps, reverse=True), "not newest first"
                for key in ("c0", "c1"):  # one key, one partition: exactly newest first
                    mine = [e["data"]["n"] for e in seen if e["correlation_id"] == key]
                    assert mine == sorted(mine, reverse=True)
                assert {e["tenant"] for e in seen} == {tenant}
                assert all(e["position"].startswith(topic + "/") for e in seen)
            everyone = (await s.client.get("/events?limit=500", headers=admin)).json()
            assert {e["tenant"] for e in everyone["events"]} == {"acme", "globex"}
            assert len(everyone["events"]) == 10, "junk records must be skipped"
            keyed = (await s.client.get("/events?correlation=c1", headers=acme)).json()
            assert [e["data"]["n"] for e in keyed["events"]] == [3, 1]
            typed = (await s.client.get(f"/events?type={PING}&limit=1", headers=acme)).json()
            assert typed["next_cursor"], "one of five events leaves a cursor"
            since = typed["events"][0]["published_at"]
            recent = (await s.client.get(f"/events?since={since}", headers=acme)).json()
            assert 4 in [e["data"]["n"] for e in recent["events"]]
            assert all(e["published_at"] >= since for e in recent["events"])
            for bad in ("garbage", "a" * 40, typed["next_cursor"][:-4]):
                refused = await s.client.get(f"/events?cursor={bad}", headers=acme)
                assert refused.status_code == 422, refused.text
                assert refused.json()["error"]["code"] == "invalid_input"
            other = await s.client.get(
                f"/events?correlation=c1&cursor={typed['next_cursor']}", headers=acme
            )
            assert other.status_code == 422
            assert "other filters" in other.json()["error"]["message"]
            stolen = await s.client.get(
                f"/events?type={PING}&cursor={typed['next_cursor']}", headers=globex
            )
            assert stolen.status_code == 422, "a cursor of another tenant's listing was used"

    asyncio.run(go())


def test_dead_letters_are_scoped_retried_and_dropped_on_kafka(sqlite_url, kafka_url):
    """The dead-letter routes over a Kafka bus, as over the embedded one."""
    asyncio.run(_work_the_dead_letters(sqlite_url, bus=kafka_url))


def test_a_service_on_kafka_with_no_events_yet_lists_nothing(sqlite_url, kafka_url):
    async def go():
        async with serving(sqlite_url, bus=kafka_url) as s:
            member = await s.key("acme", "member")
            empty = await s.client.get(f"/events?type={PING}", headers=member)
            assert empty.json() == {"events": [], "next_cursor": None}
            assert (await s.client.get("/events", headers=member)).json()["events"] == []
            fresh = f"t{uuid.uuid4().hex[:6]}.x"
            assert (await s.client.get(f"/events?type={fresh}", headers=member)).status_code == 200

    asyncio.run(go())
