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
