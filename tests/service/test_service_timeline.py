"""A run's timeline over the API, a page at a time: the pages put together are the whole
timeline (same rows, same times), each page carries the cost of the whole run, and the last page
says there is no more."""

import asyncio

from served import serving


def test_the_timeline_pages_add_up_to_the_whole(store_url):
    async def go():
        async with serving(store_url) as s:
            run, _ = await s.waiting_run("acme", requester="ann@acme")
            member = await s.key("acme", "member")
            path = f"/runs/{run.id}/timeline"
            whole = (await s.client.get(f"{path}?limit=5000", headers=member)).json()
            assert whole["next_after"] is None
            assert len(whole["items"]) >= 4
            pages, after = [], 0
            while True:
                page = (await s.client.get(f"{path}?after={after}&limit=2", headers=member)).json()
                assert len(page["items"]) <= 2
                assert page["cost"] == whole["cost"]  # the whole run's cost on every page
                pages.append(page)
                if page["next_after"] is None:
                    break
                after = page["next_after"]
            rows = [item for page in pages for item in page["items"]]
            assert rows == whole["items"]
            assert len(pages) == (len(whole["items"]) + 1) // 2
            bad = await s.client.get(f"{path}?limit=0", headers=member)
            assert bad.status_code == 422

    asyncio.run(go())


def test_a_runs_cost_is_summed_once_per_version_and_again_after_a_commit(sqlite_url):
    """The service keeps a run's cost per run version (``SpendCache``): a page shown again
    does not read the run's model calls again, and a commit - here the model's second turn
    after the approval - is counted at the next view, never hidden behind the kept one."""

    async def go():
        async with serving(sqlite_url) as s:
            run, approval = await s.waiting_run("acme", requester="ann@acme")
            member, approver = await s.key("acme", "member"), await s.key("acme", "approver")
            reads = []
            store = s.service.store
            real = store.model_calls

            async def counted(run_id):
                reads.append(run_id)
                return await real(run_id)

            store.model_calls = counted
            path = f"/runs/{run.id}/timeline"
            first = (await s.client.get(path, headers=member)).json()["cost"]
            again = (await s.client.get(path, headers=member)).json()["cost"]
            assert first == again
            assert first["calls"] == 1
            assert reads == [run.id], "the cost of an unchanged run was summed again"
            other = await s.client.get(path, headers=await s.key("globex", "member"))
            assert other.status_code == 404, "another tenant was answered from the cache"
            decided = await s.client.post(
                f"/approvals/{approval.id}/approve", json={"reason": "ok"}, headers=approver
            )
            assert decided.status_code == 200, decided.text
            done = await s.finish(run.id)
            assert done.status.value == "COMPLETED", done.status_reason
            after = (await s.client.get(path, headers=member)).json()["cost"]
            assert after["calls"] == 2, "a new model call was hidden behind the kept cost"
            assert len(reads) == 2

    asyncio.run(go())
