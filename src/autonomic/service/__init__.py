"""The service: autonomic's HTTP API (``autonomic serve``), its identities, roles and tenant scope.

The interface other doors (the web console) build on:

* ``app.create_app(settings: ServiceSettings, *, routers=()) -> FastAPI``; extra routers (the
  console's pages) are mounted on the same app and share its lifespan and error shape.
* ``runtime.Service`` (``service_of(request)`` or ``Depends(current_service)``): the store, engine,
  approval desk (``desk``), key desk (``keys``), ``scope(identity)`` and
  ``authorize(identity, action, resource)``.
* ``auth.authenticate`` (``Depends``) -> ``identity.Identity`` (key_id, name, tenant, role,
  via; ``principal`` = ``name@tenant``) from ``Authorization: Bearer`` (API key or OIDC token)
  or the session cookie; ``auth.sign_in``, ``set_session``, ``clear_session``, ``csrf_token``,
  ``check_csrf`` for the console's sign-in and forms.
* ``authz.Action`` and ``authz.Resource``: what ``authorize`` is asked about; another tenant's
  object is ``NotFound`` (404), a role without the right ``problems.Forbidden`` (403).
* ``scope.TenantScope``: ``run``, ``runs`` (paged), ``journal``, ``approval``, ``approvals``,
  every read limited to the caller's tenant.
* ``problems``: the one error shape ``{"error": {status, code, message, hint}}``.
"""
