"""The console's pages in process: sign in with a key, the runs list, a run's timeline, the
approvals inbox and its forms - who may decide, as whom, with which token, in which tenant."""

import asyncio
import html
import re

from consoled import Console, consoled, csrf_of

from autonomic.core.approval import ApprovalStatus
from autonomic.core.entries import ApprovalEvent, RunStarted
from autonomic.core.journal import record
from autonomic.core.run import RunStatus
from autonomic.service.console import live, pages
from autonomic.testing.store_conformance import make_run, new_run_id


def test_signing_in_takes_a_valid_key_and_sets_only_a_session_cookie(sqlite_url):
    async def go():
        async with consoled(sqlite_url) as c:
            anon = c.anonymous()
            away = await anon.get("/console/runs?status=COMPLETED")
            assert away.status_code == 303
            assert away.headers["location"] == (
                "/console/signin?next=%2Fconsole%2Fruns%3Fstatus%3DCOMPLETED"
            )
            form = await anon.get("/console/signin")
            assert '<label for="key">API key</label>' in form.text
            bad = await anon.post("/console/signin", data={"key": "ak_key_0000000000000000_x"})
            assert bad.status_code == 401
            assert "not valid" in bad.text
            assert "set-cookie" not in bad.headers
            empty = await anon.post("/console/signin", data={"key": "  "})
            assert empty.status_code == 400
            header = await c.served.key("acme", "member", "ann")
            secret = header["Authorization"].removeprefix("Bearer ")
            for target, expected in [
                ("/console/approvals", "/console/approvals"),
                ("//evil.example/console/", "/console/runs"),
                ("https://evil.example/", "/console/runs"),
            ]:
                fresh = c.anonymous()
                ok = await fresh.post("/console/signin", data={"key": secret, "next": target})
                assert ok.status_code == 303
                assert ok.headers["location"] == expected
                cookie = ok.headers["set-cookie"]
                assert secret not in cookie
                assert "httponly" in cookie.lower()
                assert "samesite=strict" in cookie.lower()
            page = await fresh.get("/console/runs")
            assert page.status_code == 200
            assert "ann" in page.text
            assert "member · acme" in page.text
            assert "default-src 'self'" in page.headers["content-security-policy"]
            out = await fresh.post("/console/signout")
            assert out.status_code == 303
            assert (await fresh.get("/console/runs")).status_code == 303

    asyncio.run(go())


def test_a_revoked_key_ends_its_console_session(sqlite_url):
    async def go():
        async with consoled(sqlite_url) as c:
            member = await c.browser("acme", "member", "ann")
            assert (await member.get("/console/runs")).status_code == 200
            (key,) = await c.served.service.keys.list(tenant="acme")
            await c.served.service.keys.revoke(key.id, by="test")
            assert (await member.get("/console/runs")).status_code == 303

    asyncio.run(go())


async def _inbox(c: Console):
    run, approval = await c.served.waiting_run("acme", requester="ann@acme")
    approver = await c.browser("acme", "approver", "bob")
    member = await c.browser("acme", "member", "ann")
    return run, approval, approver, member


def test_the_inbox_shows_arguments_risk_and_expiry_and_only_approvers_get_the_buttons(
    sqlite_url,
):
    async def go():
        async with consoled(sqlite_url) as c:
            _run, approval, approver, member = await _inbox(c)
            shown = (await approver.get("/console/approvals")).text
            assert approval.id in shown
            assert "pay@1" in shown
            assert "<dt>amount</dt><dd><pre>500</pre></dd>" in shown
            assert "<dt>to</dt><dd><pre>bob</pre></dd>" in shown
            assert "risk MEDIUM" in shown
            assert "payments above 100 need a second person" in shown
            assert "Expires" in shown
            assert "(in 59 min" in shown or "(in 1 h" in shown
            assert 'value="approve"' in shown
            assert f'name="binding" value="{approval.binding}"' in shown
            seen_by_member = (await member.get("/console/approvals")).text
            assert approval.id in seen_by_member
            assert "<dt>amount</dt>" in seen_by_member
            assert 'value="approve"' not in seen_by_member
            assert "Your role (member) can see approvals but not decide them" in seen_by_member
            # the requester holding an approver key sees why not, and no button either
            own = await c.browser("acme", "approver", "ann")
            seen_by_requester = (await own.get("/console/approvals")).text
            assert 'value="approve"' not in seen_by_requester
            assert "You started this run" in seen_by_requester

    asyncio.run(go())


def test_a_decision_is_made_as_the_session_with_its_token_and_nothing_else(sqlite_url):
    async def go():
        async with consoled(sqlite_url) as c:
            run, approval, approver, member = await _inbox(c)
            store = c.served.service.store
            url = f"/console/approvals/{approval.id}"
            member_page = (await member.get("/console/runs")).text
            refused = await member.post(
                url,
                data={"csrf": csrf_of(member_page), "decision": "approve", "reason": "me"},
            )
            assert refused.status_code == 403
            assert "can see approvals but not decide them" in refused.text
            token = csrf_of((await approver.get("/console/approvals")).text)
            for data in (
                {"decision": "approve"},  # no token
                {"decision": "approve", "csrf": csrf_of(member_page)},  # another session's
                {"decision": "approve", "csrf": "x" * 43},
            ):
                stale = await approver.post(url, data=data)
                assert stale.status_code == 403, data
            anonymous = await c.anonymous().post(url, data={"decision": "approve", "csrf": token})
            assert anonymous.status_code == 403
            denied_without_reason = await approver.post(
                url, data={"decision": "deny", "csrf": token}
            )
            assert denied_without_reason.status_code == 400
            assert "A denial needs a reason" in denied_without_reason.text
            wrong_binding = await approver.post(
                url, data={"decision": "approve", "csrf": token, "binding": "0" * 64}
            )
            assert wrong_binding.status_code == 409
            assert "bound to other arguments" in html.unescape(wrong_binding.text)
            assert (await store.get_approval(approval.id)).status is ApprovalStatus.PENDING
            done = await approver.post(
                url,
                data={
                    "decision": "approve",
                    "csrf": token,
                    "binding": approval.binding,
                    "reason": "checked the invoice",
                    "by": "mallory@acme",  # a form field never names the decider
                },
            )
            assert done.status_code == 303
            assert done.headers["location"] == f"/console/runs/{run.id}?decided=approved"
            decided = await store.get_approval(approval.id)
            assert decided.status is ApprovalStatus.APPROVED
            assert decided.decided_by == ("bob@acme",)
            assert (await store.get_run(run.id)).status is RunStatus.RUNNING
            events = [
                e.body
                for e in await store.load_journal(run.id)
                if isinstance(e.body, ApprovalEvent)
            ]
            assert [(e.by, e.reason) for e in events] == [(("bob@acme",), "checked the invoice")]
            page = await approver.get(done.headers["location"])
            assert "You approved the action" in page.text

    asyncio.run(go())


def test_another_tenants_run_and_approval_are_not_found(sqlite_url):
    async def go():
        async with consoled(sqlite_url) as c:
            run, approval, _approver, _member = await _inbox(c)
            other = await c.browser("globex", "approver", "gus")
            page = await other.get(f"/console/runs/{run.id}")
            missing = await other.get(f"/console/runs/{new_run_id()}")
            assert page.status_code == missing.status_code == 404
            assert page.text.replace(run.id, "ID") == missing.text.replace(
                missing.url.path.rsplit("/", 1)[1], "ID"
            ), "another tenant's run reads exactly as one that does not exist"
            assert (await other.get(f"/console/runs/{run.id}/events")).status_code == 404
            assert approval.id not in (await other.get("/console/approvals")).text
            assert run.id not in (await other.get("/console/runs")).text
            token = csrf_of((await other.get("/console/runs")).text)
            post = await other.post(
                f"/console/approvals/{approval.id}", data={"decision": "approve", "csrf": token}
            )
            assert post.status_code == 404
            assert (await c.served.service.store.get_approval(approval.id)).status is (
                ApprovalStatus.PENDING
            )
            assert (await other.get("/console/runs/not-a-run")).status_code == 404

    asyncio.run(go())


def test_the_runs_list_filters_and_pages(sqlite_url, monkeypatch):
    monkeypatch.setattr(pages, "PAGE_SIZE", 2)

    async def go():
        async with consoled(sqlite_url) as c:
            waiting = [(await c.served.waiting_run("acme", "ann@acme"))[0] for _ in range(3)]
            member = await c.browser("acme", "member", "ann")
            first = (await member.get("/console/runs")).text
            ids = re.findall(r'href="/console/runs/(run_[0-9a-f]{32})"', first)
            assert ids == [waiting[2].id, waiting[1].id]
            older = re.search(r'href="(/console/runs\?before=[^"]+)"', first)
            assert older
            second = (await member.get(html.unescape(older.group(1)))).text
            assert re.findall(r'href="/console/runs/(run_[0-9a-f]{32})"', second) == [waiting[0].id]
            assert "Older" not in second
            none = (await member.get("/console/runs?status=COMPLETED")).text
            assert "No runs match these filters" in none
            some = (await member.get("/console/runs?status=WAITING_FOR_HUMAN&agent=payer")).text
            assert waiting[2].id in some
            nobody = (await member.get("/console/runs?agent=nobody")).text
            assert "No runs match" in nobody
            bad = await member.get("/console/runs?status=BOGUS")
            assert bad.status_code == 400
            assert "is not a run status" in bad.text
            junk_cursor = await member.get("/console/runs?before=junk&page=7")
            assert junk_cursor.status_code == 200
            assert "Page 1" in junk_cursor.text

    asyncio.run(go())


def test_a_run_page_draws_its_timeline_its_cost_and_its_children(sqlite_url):
    async def go():
        async with consoled(sqlite_url) as c:
            run, _approval = await c.served.waiting_run("acme", "ann@acme")
            store = c.served.service.store
            child = make_run(tenant="acme", parent_run_id=run.id, created_at=run.created_at + 1)
            started = RunStarted("helper", "1", "scripted:x", "", "sub-task", (), 3, "acme")
            await store.create_run(
                child,
                [record(child.id, 1, started, prev_hash="0" * 64, created_at=child.created_at)],
            )
            member = await c.browser("acme", "member", "ann")
            page = (await member.get(f"/console/runs/{run.id}")).text
            entries = await store.load_journal(run.id)
            for e in entries:
                assert f'id="step-{e.seq}"' in page
            assert 'class="step decision warn nested"' in page
            assert "needs_approval" in page
            assert "WAITING_FOR_HUMAN" in page
            assert f'href="/console/runs/{child.id}"' in page
            assert f'sse-connect="/console/runs/{run.id}/events?after={entries[-1].seq}"' in page
            child_page = (await member.get(f"/console/runs/{child.id}")).text
            assert f'href="/console/runs/{run.id}"' in child_page  # its parent

    asyncio.run(go())


def test_the_live_stream_sends_new_entries_the_status_and_the_end(sqlite_url, monkeypatch):
    monkeypatch.setattr(live, "MAX_STREAM_S", 20.0)  # a failing test ends instead of hanging

    async def go():
        async with consoled(sqlite_url) as c:
            run, approval = await c.served.waiting_run("acme", "ann@acme")
            store = c.served.service.store
            approver = await c.browser("acme", "approver", "bob")
            await c.served.service.desk.approve(approval.id, by="bob@acme", reason="ok")
            # a worker finishes the run; the stream of a finished run ends by itself
            assert (await c.finish(run.id)).status is RunStatus.COMPLETED
            entries = await store.load_journal(run.id)
            whole = await approver.get(f"/console/runs/{run.id}/events?after=0")
            assert whole.headers["content-type"].startswith("text/event-stream")
            seqs = [int(s) for s in re.findall(r"^id: (\d+)$", whole.text, re.M)]
            assert seqs == [e.seq for e in entries]
            assert "event: status" in whole.text
            assert "COMPLETED" in whole.text
            assert whole.text.rstrip().endswith("event: end\ndata:")
            for line in whole.text.splitlines():
                assert line == "" or line.startswith(("event: ", "id: ", "data: ", "retry: "))
            resumed = await approver.get(
                f"/console/runs/{run.id}/events", headers={"Last-Event-ID": str(seqs[-3])}
            )
            assert [int(s) for s in re.findall(r"^id: (\d+)$", resumed.text, re.M)] == seqs[-2:]
            anon = await c.anonymous().get(f"/console/runs/{run.id}/events")
            assert anon.status_code == 401

    asyncio.run(go())


def test_static_files_are_the_vendored_ones_and_nothing_else(sqlite_url):
    async def go():
        async with consoled(sqlite_url) as c:
            anon = c.anonymous()
            js = await anon.get("/console/static/htmx.min.js")
            assert js.status_code == 200
            assert js.headers["content-type"].startswith("text/javascript")
            assert b"htmx" in js.content
            assert (await anon.get("/console/static/console.css")).status_code == 200
            for name in ("..%2Fviews.py", "views.py", ".hidden.js", "nope.js", "VENDORED.md"):
                assert (await anon.get(f"/console/static/{name}")).status_code == 404, name

    asyncio.run(go())


def test_the_console_is_not_in_the_api_document(sqlite_url):
    async def go():
        async with consoled(sqlite_url) as c:
            doc = (await c.anonymous().get("/openapi.json")).json()
            assert not [p for p in doc["paths"] if p.startswith("/console")]

    asyncio.run(go())


def test_the_run_started_by_a_member_shows_who_asked(sqlite_url):
    async def go():
        async with consoled(sqlite_url) as c:
            _run, approval = await c.served.waiting_run("acme", "ann@acme")
            approver = await c.browser("acme", "approver", "bob")
            shown = (await approver.get("/console/approvals")).text
            assert "asked by ann@acme" in shown
            assert approval.requester == "ann@acme"

    asyncio.run(go())


def test_earlier_rows_and_a_steps_entry_load_on_demand_in_the_tenant_only(sqlite_url, monkeypatch):
    monkeypatch.setattr(pages, "WINDOW", 3)

    async def go():
        async with consoled(sqlite_url) as c:
            run, _approval = await c.served.waiting_run("acme", "ann@acme")
            entries = await c.served.service.store.load_journal(run.id)
            member = await c.browser("acme", "member", "ann")
            page = (await member.get(f"/console/runs/{run.id}")).text
            shown = [int(s) for s in re.findall(r'<li id="step-(\d+)"', page)]
            assert shown == [e.seq for e in entries[-3:]]
            assert f"Show the {len(entries) - 3} earlier steps" in page
            earlier = await member.get(f"/console/runs/{run.id}/timeline?before={shown[0]}")
            assert [int(s) for s in re.findall(r'<li id="step-(\d+)"', earlier.text)] == [
                e.seq for e in entries[:-3]
            ]
            whole = (await member.get(f"/console/runs/{run.id}?all=1")).text
            assert len(re.findall(r'<li id="step-', whole)) == len(entries)
            one = await member.get(f"/console/runs/{run.id}/steps/1")
            assert one.text.startswith("<pre>")
            assert "&#34;agent&#34;: &#34;payer&#34;" in one.text or "&quot;agent&quot;" in one.text
            assert (await member.get(f"/console/runs/{run.id}/steps/999")).status_code == 404
            other = await c.browser("globex", "member", "gus")
            assert (await other.get(f"/console/runs/{run.id}/steps/1")).status_code == 404
            assert (await other.get(f"/console/runs/{run.id}/timeline?before=9")).status_code == 404

    asyncio.run(go())
