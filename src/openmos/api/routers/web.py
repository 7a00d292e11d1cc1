"""The device web page: one HTML file and its script and stylesheet (no third-party origins: see the CSP)."""

from __future__ import annotations

from importlib import resources
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

router = APIRouter(include_in_schema=False)
_WEB = resources.files("openmos.api").joinpath("web")


@router.get("/", response_class=HTMLResponse)
async def index() -> HTMLResponse:
    return HTMLResponse(_WEB.joinpath("index.html").read_text())


@router.get("/static/{name}")
async def static(name: Literal["app.js", "style.css"]) -> Response:
    media = "text/javascript" if name.endswith(".js") else "text/css"
    return Response(_WEB.joinpath(name).read_text(), media_type=media)
