"""Bad input at the API: each case is a clear 4xx in the one error shape, and nothing changes."""

import asyncio
import hashlib
import logging

import pytest
from served import serving

JSON = {"content-type": "application/json"}
TABLES = ("runs", "journal", "approvals", "api_keys")


async def _snapshot(service) -> str:
    """A digest of every row the service could have written."""
    store = service.store
    text = []
    for table in TABLES:
        rows = await store._read(f"SELECT * FROM {table} ORDER BY 1", {})
        text.append(repr(sorted(map(repr, rows))))
    return hashlib.sha256("\n".join(text).encode()).hexdigest()


def _cases(run_id, approval_id, key_id):
    big = "x" * (1024 * 1024 + 1)
    return [
        # (method, path, body kwargs, who, status, code)
        ("POST", "/runs", {"content": b'{"agent": "triage", "task": ', "headers": JSON}, "member", 400, "malformed_json"),
        ("POST", "/runs", {"content": b"[1, 2]", "headers": JSON}, "member", 422, None),
        ("POST", "/runs", {"json": {"agent": "triage", "task": "t", "tenant": "b"}}, "member", 422, "unknown_field"),
        ("POST", "/runs", {"json": {"task": "t"}}, "member", 422, "missing_field"),
        ("POST", "/runs", {"json": {"agent": "nobody", "task": "t"}}, "member", 422, "invalid_input"),
        ("POST", "/runs", {"json": {"agent": "triage", "task": ""}}, "member", 422, "invalid_input"),
        ("POST", "/runs", {"json": {"agent": "triage", "task": "t", "max_turns": 0}}, "member", 422, "invalid_value"),
        ("POST", "/runs", {"json": {"agent": "triage", "task": big}}, "member", 413, "body_too_large"),
        ("POST", "/runs", {"content": b"x" * 10, "headers": {"content-length": "-5"}}, "member", 413, "body_too_large"),
        ("GET", "/runs/bad id!", {}, "member", 422, "invalid_value"),
        ("GET", "/runs?limit=0", {}, "member", 422, "invalid_value"),
        ("GET", "/runs?status=DONE", {}, "member", 422, "invalid_value"),
        ("GET", "/runs?cursor=not-a-cursor", {}, "member", 422, "invalid_input"),
        ("GET", "/events?cursor=not-a-cursor", {}, "member", 422, "invalid_input"),
        ("GET", "/events?cursor=" + "A" * 20_000, {}, "member", 422, "invalid_value"),
        ("GET", "/events?since=-1", {}, "member", 422, "invalid_value"),
        ("GET", "/events?since=soon", {}, "member", 422, "invalid_value"),
        ("GET", "/runs/run_00000000000000000000000000000000", {}, "member", 404, "not_found"),
        ("GET", "/approvals/apr_nothex", {}, "member", 422, "invalid_value"),
        ("POST", f"/approvals/{approval_id}/deny", {"json": {}}, "approver", 422, "missing_field"),
        ("POST", f"/approvals/{approval_id}/deny", {"json": {"reason": ""}}, "approver", 422, "invalid_value"),
        ("POST", f"/approvals/{approval_id}/approve", {"json": {"binding": "zz"}}, "approver", 422, "invalid_value"),
        ("POST", f"/runs/{run_id}/resume", {"json": {"reason": "go", "budget": {"nope": 1}}}, "approver", 422, "invalid_input"),
        ("POST", f"/runs/{run_id}/resume", {"json": {"reason": "go", "metadata": {"priority": "urgent!"}}}, "approver", 422, None),
        ("POST", f"/runs/{run_id}/cancel", {"json": {"reason": "x", "force": True}}, "approver", 422, "unknown_field"),
        ("POST", "/keys", {"json": {"tenant": "a", "role": "root", "name": "n"}}, "admin", 422, "invalid_value"),
        ("POST", "/keys", {"json": {"tenant": "a", "role": "member", "name": "n", "expires": "soon"}}, "admin", 422, "invalid_value"),
        ("POST", "/keys/key_zz/revoke", {}, "admin", 422, "invalid_value"),
        ("POST", "/keys/key_0123456789abcdef/revoke", {}, "admin", 404, "not_found"),
        ("DELETE", "/runs", {}, "member", 405, "method_not_allowed"),
        ("GET", "/nowhere", {}, "member", 404, "no_route"),
    ]  # fmt: skip


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_each_bad_request_is_a_clear_4xx_and_changes_nothing(store, request, caplog):
    url = request.getfixturevalue({"sqlite": "sqlite_url", "postgres": "pg_url"}[store])
    caplog.set_level(logging.ERROR, logger="autonomic.service")

    async def go():
        async with serving(url) as s:
            run, approval = await s.waiting_run("a", requester="ann@a")
            headers = {role: await s.key("a", role) for role in ("member", "approver", "admin")}
            results = []
            for method, path, kwargs, who, status, code in _cases(run.id, approval.id, "k"):
                before = await _snapshot(s.service)
                extra = kwargs.pop("headers", {})
                answer = await s.client.request(
                    method, path, headers=headers[who] | extra, **kwargs
                )
                after = await _snapshot(s.service)
                results.append((method, path, status, code, answer, before == after))
            return results

    for method, path, status, code, answer, unchanged in asyncio.run(go()):
        where = (method, path[:60], answer.text[:300])
        assert answer.status_code == status, where
        error = answer.json()["error"]
        assert set(error) == {"status", "code", "message", "hint"}, where
        assert code is None or error["code"] == code, where
        assert error["message"], where
        assert "Traceback" not in answer.text, where
        assert unchanged, where
    assert not caplog.records
