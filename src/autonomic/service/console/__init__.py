"""The web console: server-rendered pages over the service's API layer (docs/console.md).

``console_router()`` is mounted by ``autonomic.service.app.create_app`` under ``/console``.
"""

from autonomic.service.console.pages import console_router

__all__ = ["console_router"]
