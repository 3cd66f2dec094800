"""The console's pages: sign in and out, runs, a run's timeline, the approvals inbox.

Server-rendered HTML (Jinja2) with htmx for the live timeline: the browser needs nothing but the
two vendored scripts. Each page asks ``access`` who is signed in and reads through a store scoped
to that identity's tenant, so another tenant's run is simply not found (404, the same page as a
run that does not exist). Forms that change something carry a per-session CSRF token and the
decision is made as the identity of the session cookie - never a name sent in the form.
"""

from __future__ import annotations

import html
import time
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from autonomic.core.approval import ApprovalStatus
from autonomic.core.run import RunStatus, validate_run_id
from autonomic.errors import (
    ApprovalConflict,
    ApprovalRefused,
    AutonomicError,
    InvalidInput,
    NotFound,
)
from autonomic.service.console import access, live
from autonomic.service.console.rendering import environment, render, static_file
from autonomic.service.console.scope import Scope
from autonomic.service.console.views import (
    WINDOW,
    approval_card,
    decision_for,
    detail,
    run_page,
    steps,
)
from autonomic.service.problems import Forbidden

PAGE_SIZE = 25
_DECISION_ROWS = 4
"""Journal entries read from an approval's step on to find the decision that asked for it."""
_MAX_FORM = 16 * 1024
_MAX_PAGE = 10_000


def console_router() -> APIRouter:
    """The console's routes; the app mounts them under ``/console``.

    Not in the OpenAPI document: these are pages for people; the API's own routes are the
    documented interface."""
    router = APIRouter(prefix="/console", include_in_schema=False)
    router.add_api_route("", _home, methods=["GET"], name="console.home")
    router.add_api_route("/", _home, methods=["GET"], name="console.home_slash")
    router.add_api_route("/static/{name}", _static, methods=["GET"], name="console.static")
    router.add_api_route("/signin", _signin_page, methods=["GET"], name="console.signin")
    router.add_api_route("/signin", _signin, methods=["POST"], name="console.signin_post")
    router.add_api_route("/signout", _signout, methods=["POST"], name="console.signout")
    router.add_api_route("/runs", _runs, methods=["GET"], name="console.runs")
    router.add_api_route("/runs/{run_id}", _run, methods=["GET"], name="console.run")
    router.add_api_route(
        "/runs/{run_id}/events", _run_events, methods=["GET"], name="console.run_events"
    )
    router.add_api_route(
        "/runs/{run_id}/timeline", _earlier, methods=["GET"], name="console.earlier"
    )
    router.add_api_route(
        "/runs/{run_id}/steps/{seq}", _step_detail, methods=["GET"], name="console.step"
    )
    router.add_api_route("/approvals", _approvals, methods=["GET"], name="console.approvals")
    router.add_api_route(
        "/approvals/{approval_id}", _decide, methods=["POST"], name="console.decide"
    )
    return router


async def _home(request: Request) -> Response:
    return _redirect(request, "console.runs")


async def _static(name: str) -> Response:
    return static_file(name)


async def _signin_page(request: Request, next: str = "") -> Response:
    if await access.identify(request) is not None:
        return RedirectResponse(_safe_next(request, next), status_code=303)
    return render(request, "signin.html", _signin_context(request, next, None))


async def _signin(request: Request) -> Response:
    form = await _form(request)
    key, target = form.get("key", "").strip(), form.get("next", "")
    if not key:
        return render(
            request,
            "signin.html",
            _signin_context(request, target, "Paste an API key to sign in."),
            status_code=400,
        )
    try:
        session = await access.sign_in(request, key)
    except AutonomicError as e:
        return render(
            request, "signin.html", _signin_context(request, target, e.message), status_code=401
        )
    response = RedirectResponse(_safe_next(request, target), status_code=303)
    access.set_session(request, response, session)
    return response


def _signin_context(request: Request, target: str, error: str | None) -> dict[str, Any]:
    """The sign-in page's values: it offers OIDC tokens when the service accepts them."""
    return {"next": target, "error": error, "oidc": access.service(request).oidc is not None}


async def _signout(request: Request) -> Response:
    # Signing out needs no token: at worst a forged form ends a session, which changes nothing.
    response = RedirectResponse(request.url_for("console.signin").path, status_code=303)
    access.clear_session(request, response)
    return response


async def _runs(
    request: Request, status: str = "", agent: str = "", before: str = "", page: int = 1
) -> Response:
    identity = await access.identify(request)
    if identity is None:
        return _to_signin(request)
    try:
        access.authorize_read(request, identity)
    except Forbidden as e:
        return _error(request, 403, "Not allowed", e.message, identity)
    chosen: RunStatus | None = None
    if status:
        try:
            chosen = RunStatus(status.upper())
        except ValueError:
            return _error(
                request,
                400,
                "Unknown status",
                f"{status!r} is not a run status; choose one of "
                + ", ".join(s.value for s in RunStatus),
                identity,
            )
    cursor = _cursor(before)
    page = min(max(page, 1), _MAX_PAGE) if cursor is not None else 1
    scope = access.scope(request, identity)
    runs, has_more = await scope.runs(
        status=chosen, agent=agent.strip()[:200] or None, before=cursor, limit=PAGE_SIZE
    )
    filters = {k: v for k, v in (("status", status), ("agent", agent)) if v}
    base = request.url_for("console.runs").path

    def page_url(n: int) -> str:
        if n <= 1:
            return base + ("?" + urlencode(filters) if filters else "")
        last = runs[-1]
        older = filters | {"before": f"{last.created_at!r}:{last.id}", "page": str(n)}
        return base + "?" + urlencode(older)

    return render(
        request,
        "runs.html",
        {
            "section": "runs",
            "runs": runs,
            "statuses": [s.value for s in RunStatus],
            "status": chosen.value if chosen else "",
            "agent": agent,
            "agents": await scope.agents(),
            "page": page,
            "has_more": has_more,
            "page_url": page_url,
        },
        identity=identity,
    )


async def _run(request: Request, run_id: str, all: str = "") -> Response:
    identity = await access.identify(request)
    if identity is None:
        return _to_signin(request)
    scope = access.scope(request, identity)
    try:
        validate_run_id(run_id)
        run = await scope.run(run_id)
    except (InvalidInput, NotFound):
        return _not_found(request, identity, f"There is no run {run_id} in your tenant.")
    window = None if all else WINDOW
    entries = await scope.journal(run_id, limit=window, newest=True)
    children = await scope.children(run)
    pending = [a for a in await scope.approvals(run_id=run_id) if not a.status.final]
    flash = None
    decided = request.query_params.get("decided")
    if decided in ("approved", "rejected"):
        flash = (
            f"You {'approved' if decided == 'approved' else 'denied'} the action. "
            "A worker continues the run; this page follows it live."
        )
    return render(
        request,
        "run.html",
        {
            "section": "runs",
            "page": run_page(run, entries, children, spending=await scope.cost(run), window=window),
            "pending": pending,
            "flash": flash,
            "flash_tone": "ok",
        },
        identity=identity,
    )


async def _fragment_scope(request: Request, run_id: str) -> Scope | Response:
    """The caller's tenant scope for a fragment of run ``run_id`` (what htmx and the live stream
    fetch: plain-text errors, no page around them), or the 401 / 404 to answer instead."""
    identity = await access.identify(request)
    if identity is None:
        return Response("sign in first", status_code=401, media_type="text/plain")
    try:
        validate_run_id(run_id)
    except InvalidInput:
        return _no_such_run()
    return access.scope(request, identity)


def _no_such_run() -> Response:
    return Response("no such run", status_code=404, media_type="text/plain")


async def _run_events(request: Request, run_id: str, after: int = 0) -> Response:
    scope = await _fragment_scope(request, run_id)
    if isinstance(scope, Response):
        return scope
    try:
        run = await scope.run(run_id)
    except NotFound:
        return _no_such_run()
    resume = request.headers.get("last-event-id", "")
    if resume.isdigit():
        after = int(resume)
    return StreamingResponse(
        live.stream(request, scope, run, after=max(after, 0)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _earlier(request: Request, run_id: str, before: int) -> Response:
    """The timeline rows before seq ``before``: what "Show the earlier steps" loads in place."""
    scope = await _fragment_scope(request, run_id)
    if isinstance(scope, Response):
        return scope
    try:
        entries = await scope.journal(run_id, before_seq=max(before, 1))
    except NotFound:
        return _no_such_run()
    step_url = request.url_for("console.run", run_id=run_id).path + "/steps"
    row = environment().get_template("_step.html").module.step  # type: ignore[attr-defined]
    rows = [str(row(s, step_url)) for s in steps(entries)]
    return HTMLResponse("\n".join(rows), headers={"Cache-Control": "no-store"})


async def _step_detail(request: Request, run_id: str, seq: int) -> Response:
    """One journal entry's payload, fetched when a person opens a step's details."""
    identity = await access.identify(request)
    if identity is None:
        return _to_signin(request)
    scope = access.scope(request, identity)
    try:
        validate_run_id(run_id)
        entries = await scope.journal(run_id, after_seq=max(seq - 1, 0), limit=1)
    except (InvalidInput, NotFound):
        return _not_found(request, identity, f"There is no run {run_id} in your tenant.")
    if not entries or entries[0].seq != seq:
        return _not_found(request, identity, f"Run {run_id} has no journal entry {seq}.")
    return HTMLResponse(
        f"<pre>{html.escape(detail(entries[0].payload))}</pre>",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


async def _approvals(request: Request) -> Response:
    identity = await access.identify(request)
    if identity is None:
        return _to_signin(request)
    try:
        access.authorize_read(request, identity)
    except Forbidden as e:
        return _error(request, 403, "Not allowed", e.message, identity)
    return await _inbox(request, identity)


async def _inbox(
    request: Request,
    identity: access.Identity,
    *,
    flash: str | None = None,
    flash_tone: str = "info",
    status_code: int = 200,
) -> Response:
    scope = access.scope(request, identity)
    now = time.time()
    cards = []
    for approval in await scope.pending_approvals():
        entries = await scope.journal(
            approval.run_id, after_seq=max(approval.step - 1, 0), limit=_DECISION_ROWS
        )
        may, why_not = access.may_decide(request, identity, approval)
        cards.append(
            approval_card(
                approval,
                decision_for(approval, entries),
                may_decide=may,
                why_not=why_not,
                now=now,
            )
        )
    return render(
        request,
        "approvals.html",
        {"section": "approvals", "cards": cards, "flash": flash, "flash_tone": flash_tone},
        identity=identity,
        status_code=status_code,
    )


async def _decide(request: Request, approval_id: str) -> Response:
    form = await _form(request)
    identity = await access.identify(request, csrf=form.get("csrf"))
    if identity is None:
        return _error(
            request,
            403,
            "Refused",
            "This form's session has ended or the form is stale: sign in, reload and retry.",
        )
    decision, reason = form.get("decision", ""), form.get("reason", "").strip()
    if decision not in ("approve", "deny"):
        return await _inbox(
            request, identity, flash="Choose Approve or Deny.", flash_tone="bad", status_code=400
        )
    if decision == "deny" and not reason:
        return await _inbox(
            request,
            identity,
            flash="A denial needs a reason: write why in the Reason field.",
            flash_tone="bad",
            status_code=400,
        )
    scope = access.scope(request, identity)
    try:
        approval = await scope.approval(approval_id)
    except (InvalidInput, NotFound):
        return _not_found(request, identity, f"There is no approval {approval_id} in your tenant.")
    try:
        access.authorize_decision(request, identity, approval)
    except NotFound:
        return _not_found(request, identity, f"There is no approval {approval_id} in your tenant.")
    except Forbidden:
        _may, why_not = access.may_decide(request, identity, approval)
        return _error(request, 403, "Not allowed", why_not or "You may not decide this.", identity)
    try:
        decided = await scope.decide(
            approval_id,
            approve=decision == "approve",
            reason=reason,
            binding=form.get("binding") or None,
        )
    except (ApprovalRefused, ApprovalConflict) as e:
        return await _inbox(request, identity, flash=str(e), flash_tone="bad", status_code=409)
    outcome = decided.status.value if decided.status.final else "voted"
    if decided.status is ApprovalStatus.PENDING:
        return await _inbox(
            request,
            identity,
            flash=f"Your vote on {decided.tool} is recorded; it needs {decided.quorum} approvers.",
            flash_tone="ok",
        )
    target = request.url_for("console.run", run_id=decided.run_id).path
    return RedirectResponse(f"{target}?{urlencode({'decided': outcome})}", status_code=303)


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (first value each); a body over 16 KiB is read as empty."""
    body = await request.body()
    if len(body) > _MAX_FORM:
        return {}
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items() if v}


def _cursor(text: str) -> tuple[float, str] | None:
    """``created_at:run_id`` of the last run of the previous page, or ``None`` (the first page)."""
    at, _, run_id = text.partition(":")
    try:
        return (float(at), validate_run_id(run_id)) if text else None
    except (ValueError, InvalidInput):
        return None


def _safe_next(request: Request, target: str) -> str:
    """Where to go after signing in: only a path inside the console (no open redirect)."""
    home = request.url_for("console.runs").path
    prefix = home.rsplit("/runs", 1)[0] + "/"
    if target.startswith(prefix) and "//" not in target and "\\" not in target:
        return target
    return home


def _redirect(request: Request, name: str) -> Response:
    return RedirectResponse(request.url_for(name).path, status_code=303)


def _to_signin(request: Request) -> Response:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = request.url_for("console.signin").path + "?" + urlencode({"next": here})
    return RedirectResponse(target, status_code=303)


def _not_found(request: Request, identity: access.Identity, message: str) -> Response:
    return _error(request, 404, "Not found", message, identity)


def _error(
    request: Request,
    status_code: int,
    heading: str,
    message: str,
    identity: access.Identity | None = None,
) -> HTMLResponse:
    context: dict[str, Any] = {
        "heading": heading,
        "message": message,
        "status_code": status_code,
    }
    return render(request, "error.html", context, identity=identity, status_code=status_code)
