"""OIDC bearer tokens verified against a JWKS served on 127.0.0.1 by a real HTTP server, with a
key pair made here: a good token is an identity; a wrong audience, issuer, key or algorithm, an
expired token or a bad claim is a 401."""

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from served import serving

from autonomic.service.settings import OidcConfig

ISSUER, AUDIENCE = "https://idp.test", "autonomic"


def _pair(kid):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    return private, public | {"kid": kid, "use": "sig", "alg": "RS256"}


@pytest.fixture
def jwks():
    """A JWKS endpoint on 127.0.0.1 with one key; yields (url, private key)."""
    private, public = _pair("k1")
    body = json.dumps({"keys": [public]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", private
    server.shutdown()
    server.server_close()


def _token(private, kid="k1", alg="RS256", **claims):
    base = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": "olga", "tenant": "acme", "role": "approver",
        "exp": int(time.time()) + 300,
    }  # fmt: skip
    return jwt.encode(base | claims, private, algorithm=alg, headers={"kid": kid})


def test_oidc_tokens_are_verified_against_the_jwks(jwks, sqlite_url):
    url, private = jwks
    other, _ = _pair("k1")
    config = OidcConfig(jwks_url=url, issuer=ISSUER, audience=AUDIENCE)
    tokens = {
        "good": _token(private),
        "audience": _token(private, aud="someone-else"),
        "issuer": _token(private, iss="https://evil.test"),
        "expired": _token(private, exp=int(time.time()) - 10),
        "other key": _token(other),
        "unknown kid": _token(private, kid="k9"),
        "role": _token(private, role="root"),
        "tenant": _token(private, tenant="../x"),
        "none": jwt.encode({"iss": ISSUER}, None, algorithm="none", headers={"kid": "k1"}),
        "hs256 (a shared secret)": jwt.api_jws.PyJWS().encode(
            json.dumps(
                {
                    "iss": ISSUER,
                    "aud": AUDIENCE,
                    "sub": "x",
                    "tenant": "acme",
                    "role": "admin",
                    "exp": int(time.time()) + 300,
                }
            ).encode(),
            b"x" * 32,
            algorithm="HS256",
            headers={"kid": "k1"},
        ),
    }

    async def go():
        async with serving(sqlite_url, oidc=config) as s:
            _run, approval = await s.waiting_run("acme", requester="ann@acme")
            answers = {}
            for name, token in tokens.items():
                answers[name] = await s.client.post(
                    f"/approvals/{approval.id}/approve",
                    json={"reason": "ok"},
                    headers={"Authorization": f"Bearer {token}"},
                )
            return answers

    answers = asyncio.run(go())
    good = answers.pop("good")
    assert good.status_code == 200, good.text
    assert good.json()["decided_by"] == ["olga@acme"]
    for name, answer in answers.items():
        assert answer.status_code == 401, (name, answer.text)
        assert answer.json()["error"]["code"] == "unauthenticated"


def test_an_oidc_user_signs_in_to_the_console_with_a_bearer_token(jwks, sqlite_url):
    """The console's sign-in takes a token from the provider as it takes a key: verified against
    the JWKS once, then a session cookie that names the token's identity and ends with it."""
    import re

    from autonomic.service.console import console_router

    url, private = jwks
    other, _ = _pair("k1")
    config = OidcConfig(jwks_url=url, issuer=ISSUER, audience=AUDIENCE)
    expires = int(time.time()) + 300

    async def go():
        async with serving(sqlite_url, routers=[console_router()], oidc=config) as s:
            _run, approval = await s.waiting_run("acme", requester="ann@acme")
            transport = s.client._transport
            import httpx

            def browser():
                return httpx.AsyncClient(transport=transport, base_url="http://testserver")

            async with browser() as b:
                page = await b.get("/console/signin")
                assert "API key or OIDC token" in page.text
                for bad in (_token(other), _token(private, exp=int(time.time()) - 5)):
                    refused = await b.post("/console/signin", data={"key": bad})
                    assert refused.status_code == 401
                    assert "OIDC token was refused" in refused.text
                    assert "autonomic_session" not in refused.headers.get("set-cookie", "")
                token = _token(private, exp=expires)
                signed = await b.post("/console/signin", data={"key": f"Bearer {token}"})
                assert signed.status_code == 303, signed.text
                assert token not in signed.headers["set-cookie"]  # the token is not kept
                inbox = await b.get("/console/approvals")
                assert inbox.status_code == 200
                assert approval.id in inbox.text
                assert "olga" in inbox.text
                csrf = re.search(r'name="csrf" value="([0-9A-Za-z_-]+)"', inbox.text).group(1)
                decided = await b.post(
                    f"/console/approvals/{approval.id}",
                    data={"csrf": csrf, "decision": "approve", "binding": approval.binding},
                )
                assert decided.status_code == 303, decided.text
                stored = await s.service.store.get_approval(approval.id)
                assert stored.decided_by == ("olga@acme",)
                # the session ends when the token does, whatever session_ttl says
                s.service.clock = lambda: expires + 1.0
                ended = await b.get("/console/approvals")
                assert ended.status_code in (303, 307), ended.text
                assert "/console/signin" in ended.headers["location"]

    asyncio.run(go())


def test_without_oidc_the_console_refuses_a_token_and_says_why(sqlite_url):
    import jwt as pyjwt

    from autonomic.service.console import console_router

    async def go():
        async with serving(sqlite_url, routers=[console_router()]) as s:
            page = await s.client.get("/console/signin")
            assert "OIDC token" not in page.text
            token = pyjwt.encode({"sub": "x"}, "k" * 32, algorithm="HS256")
            refused = await s.client.post("/console/signin", data={"key": token})
            assert refused.status_code == 401
            assert "does not accept OIDC tokens" in refused.text

    asyncio.run(go())
