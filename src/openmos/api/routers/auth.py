"""``/api/v1/auth``: first-start owner setup and login (throttled; hashing off the event loop)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from openmos.api.auth import AuthError, TooManyAttempts
from openmos.api.deps import Ctx
from openmos.api.models import Login, OwnerSetup

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


@router.post("/setup", status_code=201)
async def setup(body: OwnerSetup, ctx: Ctx) -> dict[str, str]:
    """Create the owner (admin) account. Only possible once: there is no default password, and the account
    is stored in the agent's state directory, so a restart does not reopen this."""
    try:
        await ctx.auth.setup_owner_async(body.user, body.password)
    except TooManyAttempts:
        raise
    except AuthError as exc:
        raise HTTPException(409, str(exc)) from None
    return {"user": body.user, "role": "admin"}


@router.post("/login")
async def login(body: Login, ctx: Ctx, request: Request) -> dict[str, str]:
    """A bearer token for ``Authorization: Bearer <token>``. Repeated failures per account and per client
    address are answered 429 with a growing ``Retry-After``."""
    client = request.client.host if request.client else "?"
    return {"token": await ctx.auth.login_async(body.user, body.password, client), "type": "Bearer"}
