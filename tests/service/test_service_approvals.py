"""Deciding approvals over the API: the decider is the credential's identity (never a body
field), a requester cannot decide on its own run, and the journal records who did each act."""

import asyncio

from served import serving

from autonomic.core.entries import ApprovalEvent, Transition


def test_an_approver_decides_and_the_journal_names_the_credential(sqlite_url):
    async def go():
        async with serving(sqlite_url) as s:
            run, approval = await s.waiting_run("acme", requester="ann@acme")
            member = await s.key("acme", "member", "ann")
            approver = await s.key("acme", "approver", "bob")
            inbox = (await s.client.get("/approvals", headers=member)).json()
            assert [a["id"] for a in inbox] == [approval.id]
            assert inbox[0]["arguments"] == {"to": "bob", "amount": 500}
            assert "second person" in inbox[0]["explanation"]
            # a body naming someone else is refused: the decider is not a field
            forged = await s.client.post(
                f"/approvals/{approval.id}/approve",
                json={"reason": "ok", "by": "carl@acme"},
                headers=approver,
            )
            assert forged.status_code == 422
            assert forged.json()["error"]["code"] == "unknown_field"
            wrong = await s.client.post(
                f"/approvals/{approval.id}/approve",
                json={"binding": "0" * 64},
                headers=approver,
            )
            assert wrong.status_code == 409, wrong.text
            done = await s.client.post(
                f"/approvals/{approval.id}/approve",
                json={"reason": "checked", "binding": approval.binding},
                headers=approver,
            )
            assert done.status_code == 200, done.text
            assert done.json()["status"] == "approved"
            assert done.json()["decided_by"] == ["bob@acme"]
            again = await s.client.post(
                f"/approvals/{approval.id}/deny", json={"reason": "no"}, headers=approver
            )
            assert again.status_code == 409
            cancelled = await s.client.post(
                f"/runs/{run.id}/cancel", json={"reason": "enough"}, headers=approver
            )
            assert cancelled.json()["status"] == "CANCELLED"
            entries = await s.service.store.load_journal(run.id)
            return [e.body for e in entries]

    bodies = asyncio.run(go())
    events = [b for b in bodies if isinstance(b, ApprovalEvent)]
    assert [e.by for e in events][-1] == ("bob@acme",)
    operator = [b for b in bodies if isinstance(b, Transition) and b.target == "CANCELLED"]
    assert operator[0].by == "bob@acme"


def test_an_approver_never_decides_its_own_request(sqlite_url):
    async def go():
        async with serving(sqlite_url) as s:
            started = await s.client.post(
                "/runs",
                json={"agent": "triage", "task": "look"},
                headers=await s.key("acme", "approver", "bob"),
            )
            requester = (await s.service.store.load_journal(started.json()["id"]))[0].body
            _run, approval = await s.waiting_run("acme", requester="bob@acme")
            # the same person with another key (another role) is still the requester
            for role in ("approver", "admin"):
                answer = await s.client.post(
                    f"/approvals/{approval.id}/approve",
                    json={},
                    headers=await s.key("acme", role, "bob"),
                )
                assert answer.status_code == 403, answer.text
                assert answer.json()["error"]["code"] == "own_request"
            still = await s.service.store.get_approval(approval.id)
            return requester, still

    requester, still = asyncio.run(go())
    assert requester.requester == "bob@acme"
    assert still.status.value == "pending"
