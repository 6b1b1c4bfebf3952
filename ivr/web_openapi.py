"""`GET /api/openapi.yaml`: the OpenAPI document of the hotline's own JSON API
(``ivr/openapi.yaml``, the same file as ``docs/api-openapi.yaml``).

It sits behind the same access rule as every other ``/api/`` read (a login, the token, or the
CLI on this host): it names no data, but it lists every endpoint and error id a scanner would
want, and whoever may use the API may read it. The repository's copy is open to all.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

DOCUMENT = "openapi.yaml"
"""The document, in the ``ivr`` package."""


def document_text() -> str:
    """The OpenAPI document as shipped."""
    return resources.files("ivr").joinpath(DOCUMENT).read_text(encoding="utf-8")


async def openapi(request: web.Request) -> web.Response:
    """`GET /api/openapi.yaml`."""
    # application/yaml: RFC 9512.
    return web.Response(text=document_text(), content_type="application/yaml", charset="utf-8")


def add_openapi_route(app: web.Application) -> None:
    """Serve the document."""
    app.router.add_get("/api/openapi.yaml", openapi)
