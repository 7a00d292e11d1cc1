"""Errors mapped to HTTP once, at the edge. Replies say what is wrong and never echo the input back."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from openmos.api.auth import AuthError, TooManyAttempts
from openmos.control import InvalidCommand, UnsupportedControl
from openmos.miner.config import ConfigError

log = logging.getLogger("openmos.api.rest")

MAX_MESSAGE = 200
MAX_PROBLEMS = 20
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,39}$")


def _short(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _loc_part(part: object) -> object:
    """A location element: an index, or a field name; a key that is not name-like is not repeated."""
    if isinstance(part, int):
        return part
    return part if isinstance(part, str) and _NAME.match(part) else "<key>"


def validation_problems(exc: RequestValidationError | ValidationError) -> list[dict[str, Any]]:
    """Where and what, without the offending value (pydantic would include it as ``input``)."""
    return [{"loc": [_loc_part(p) for p in err.get("loc", ())][:8],
             "msg": _short(str(err.get("msg", ""))), "type": err.get("type", "")}
            for err in exc.errors()[:MAX_PROBLEMS]]


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_problems(exc)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": _short(str(exc.detail))}, status_code=exc.status_code,
                            headers=dict(exc.headers or {}))

    @app.exception_handler(ValidationError)
    async def _invalid_model(_: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_problems(exc)}, status_code=422)

    @app.exception_handler(TooManyAttempts)
    async def _throttled(_: Request, exc: TooManyAttempts) -> JSONResponse:
        wait = max(1, round(exc.retry_after_s))
        return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": str(wait)})

    @app.exception_handler(AuthError)
    async def _auth(_: Request, exc: AuthError) -> JSONResponse:
        return JSONResponse({"detail": _short(str(exc))}, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(ConfigError)
    async def _config(_: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse({"detail": _short(str(exc), 1000)}, status_code=422)

    @app.exception_handler(InvalidCommand)
    async def _invalid_command(_: Request, exc: InvalidCommand) -> JSONResponse:
        return JSONResponse({"detail": _short(str(exc))}, status_code=422)

    @app.exception_handler(UnsupportedControl)
    async def _unsupported(_: Request, exc: UnsupportedControl) -> JSONResponse:
        return JSONResponse({"detail": f"not supported by this hardware: {_short(str(exc))}"}, status_code=409)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("REST API: internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error (logged on the device)"}, status_code=500)
