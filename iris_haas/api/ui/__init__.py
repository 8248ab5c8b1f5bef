"""The dashboard: static files under /ui/ (plain ES modules and CSS, nothing loaded from elsewhere),
reading the same /v1 API with the token the user pastes; ``/`` redirects to it.

Every answer under /ui/ carries a Content-Security-Policy that allows only this origin's files (no
inline script, no other origin): what the API says is rendered as text, and a tenant's
description holding markup stays text even if it were not."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from pydantic import BaseModel
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from iris_haas.api.deps import PrincipalDep

STATIC = Path(__file__).parent / "static"
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


class _Static(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


class WhoAmI(BaseModel):
    admin: bool
    tenant: str | None


router = APIRouter(include_in_schema=False)


@router.api_route("/", methods=["GET", "HEAD"])
def root():
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/whoami", response_model=WhoAmI)
def whoami(who: PrincipalDep):
    """Which views the dashboard shows: the admin's (inventory, hosts) or a tenant's; a token the API
    refuses is a 401 here too."""
    return WhoAmI(admin=who.admin, tenant=who.tenant_name)


def mount(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/ui", _Static(directory=STATIC, html=True), name="ui")
