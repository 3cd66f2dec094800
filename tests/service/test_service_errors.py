"""An exception nobody expected is a 500 in the one error shape with a reference, logged as one
line: no traceback and none of the exception's words reach the client."""

import asyncio
import logging

from fastapi import APIRouter
from served import serving

router = APIRouter()


@router.get("/boom")
async def boom() -> None:
    raise RuntimeError("password=hunter2 in a careless message")


def test_an_unexpected_exception_is_a_500_without_a_traceback(sqlite_url, caplog):
    caplog.set_level(logging.DEBUG)

    async def go():
        async with serving(sqlite_url, routers=[router]) as s:
            return await s.client.get("/boom")

    answer = asyncio.run(go())
    assert answer.status_code == 500
    error = answer.json()["error"]
    assert error["code"] == "internal"
    assert "reference" in error["message"]
    assert "hunter2" not in answer.text
    assert "Traceback" not in answer.text
    reference = error["message"].split("reference ")[1].rstrip(")")
    logged = [r for r in caplog.records if reference in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is None
    assert "hunter2" not in caplog.text
