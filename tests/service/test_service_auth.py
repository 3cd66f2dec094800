"""Authentication: API keys (expired, revoked, rotated), console sessions and their CSRF token."""

import asyncio

import pytest
from served import serving

from autonomic.service.auth import (
    CSRF_HEADER,
    SESSION_COOKIE,
    csrf_token,
    read_session,
    session_cookie,
    sign_in,
)
from autonomic.service.problems import Unauthenticated


def test_expired_revoked_and_rotated_keys_are_refused(sqlite_url):
    async def go():
        async with serving(sqlite_url) as s:
            desk = s.service.keys
            expiring, old = await desk.create(
                tenant="a", role="member", name="temp", by="t", expires_in=60
            )
            headers = {"Authorization": f"Bearer {old}"}
            assert (await s.client.get("/runs", headers=headers)).status_code == 200
            desk.clock = lambda: expiring.created_at + 61
            expired = await s.client.get("/runs", headers=headers)
            desk.clock = __import__("time").time
            _, secret = await desk.create(
                tenant="a", role="member", name="p", by="t", expires_in=None
            )
            key_id = secret.split("_")[1] + "_" + secret.split("_")[2]
            _, rotated = await desk.rotate(key_id, by="t")
            stale = await s.client.get("/runs", headers={"Authorization": f"Bearer {secret}"})
            fresh = await s.client.get("/runs", headers={"Authorization": f"Bearer {rotated}"})
            await desk.revoke(key_id, by="t")
            revoked = await s.client.get("/runs", headers={"Authorization": f"Bearer {rotated}"})
            tampered = await s.client.get(
                "/runs", headers={"Authorization": f"Bearer {rotated[:-2]}xx"}
            )
            basic = await s.client.get("/runs", headers={"Authorization": "Basic eDp5"})
            return expired, stale, fresh, revoked, tampered, basic

    expired, stale, fresh, revoked, tampered, basic = asyncio.run(go())
    for answer in (expired, stale, revoked, tampered, basic):
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json()["error"]["hint"]
    assert fresh.status_code == 200


def test_a_session_cookie_signs_in_and_needs_the_csrf_token_to_change_anything(sqlite_url):
    async def go():
        async with serving(sqlite_url) as s:
            await s.key("a", "approver", "bob")
            secret = s.keys["a", "approver", "bob"]
            with pytest.raises(Unauthenticated):
                await sign_in(s.service, "ak_nope")
            identity, cookie = await sign_in(s.service, secret)
            assert identity.principal == "bob@a"
            assert identity.via == "session"
            jar = {SESSION_COOKIE: cookie}
            s.client.cookies.update(jar)
            read = await s.client.get("/runs")
            run, _ = await s.waiting_run("a", requester="ann@a")
            no_token = await s.client.post(f"/runs/{run.id}/cancel", json={"reason": "x"})
            token = csrf_token(cookie, s.service.settings.session_secret)
            with_token = await s.client.post(
                f"/runs/{run.id}/cancel", json={"reason": "x"}, headers={CSRF_HEADER: token}
            )
            s.client.cookies.set(SESSION_COOKIE, cookie[:-3] + "abc")
            forged = await s.client.get("/runs")
            # rotating the key ends its sessions
            s.client.cookies.set(SESSION_COOKIE, cookie)
            await s.service.keys.rotate(identity.key_id, by="t")
            ended = await s.client.get("/runs")
            return read, no_token, with_token, forged, ended

    read, no_token, with_token, forged, ended = asyncio.run(go())
    assert read.status_code == 200
    assert no_token.status_code == 403
    assert no_token.json()["error"]["code"] == "csrf"
    assert with_token.status_code == 200
    assert forged.status_code == 401
    assert ended.status_code == 401


def test_a_session_cookie_expires():
    from autonomic.ports.keys import ApiKey, Role

    key = ApiKey("key_0123456789abcdef", "n", "t", Role.MEMBER, "ab" * 32, 0.0, None, "x")
    value = session_cookie(key, b"k" * 32, now=100.0, ttl=10.0)
    assert read_session(value, b"k" * 32, now=105.0) == (key.id, key.hash[:16])
    assert read_session(value, b"k" * 32, now=111.0) is None
    assert read_session(value, b"other" * 8, now=105.0) is None
    assert read_session("garbage", b"k" * 32, now=105.0) is None


def test_key_rows_are_read_once_per_cache_window_and_a_revocation_elsewhere_ends_it(sqlite_url):
    """A burst of requests with one key reads its row once; a key revoked by another process (the
    CLI's own desk on the database) is refused once the cache window has passed, and a change made
    through the service's desk is seen at once."""
    from autonomic.adapters.store.keys import SqlKeyStore
    from autonomic.service.keys import KeyDesk

    async def go():
        async with serving(sqlite_url, key_cache_ttl=5.0) as s:
            desk = s.service.keys
            now = [1000.0]
            desk.ticker = lambda: now[0]
            reads = []
            real_get = desk.keys.get

            async def counting_get(key_id):
                reads.append(key_id)
                return await real_get(key_id)

            desk.keys.get = counting_get
            key, secret = await desk.create(
                tenant="a", role="member", name="p", by="t", expires_in=None
            )
            headers = {"Authorization": f"Bearer {secret}"}
            for _ in range(5):
                assert (await s.client.get("/runs", headers=headers)).status_code == 200
            assert reads == [key.id]
            wrong = await s.client.get("/runs", headers={"Authorization": f"Bearer {secret}x"})
            assert wrong.status_code == 401  # the secret is still checked on every request
            cli_desk = KeyDesk(SqlKeyStore(s.service.store))  # another process's desk
            await cli_desk.revoke(key.id, by="root@default")
            within = await s.client.get("/runs", headers=headers)
            now[0] += 5.1
            after = await s.client.get("/runs", headers=headers)
            other, other_secret = await desk.create(
                tenant="a", role="member", name="q", by="t", expires_in=None
            )
            other_headers = {"Authorization": f"Bearer {other_secret}"}
            assert (await s.client.get("/runs", headers=other_headers)).status_code == 200
            await desk.revoke(other.id, by="t")  # through the service's own desk: at once
            at_once = await s.client.get("/runs", headers=other_headers)
            return within, after, at_once

    within, after, at_once = asyncio.run(go())
    assert within.status_code == 200  # inside the window (documented)
    assert after.status_code == 401
    assert at_once.status_code == 401
