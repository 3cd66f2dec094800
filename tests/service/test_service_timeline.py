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
