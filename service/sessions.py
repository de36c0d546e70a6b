"""Console sessions: a random id in an HttpOnly, SameSite=Strict cookie, the token's name
and a CSRF token in Redis (expiring). The token itself is never stored or sent back."""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response

from service.auth import Principal
from service.context import ServiceContext

COOKIE = "wp_session"
LOGIN_CSRF_COOKIE = "wp_login_csrf"
COOKIE_PATH = "/console"


@dataclass(frozen=True)
class Session:
    """A signed-in console user: the token's principal and the session's CSRF token."""

    id: str
    principal: Principal
    csrf: str

    def csrf_ok(self, presented: str | None) -> bool:
        """Whether a form carried this session's CSRF token."""
        return presented is not None and hmac.compare_digest(presented, self.csrf)


def start(ctx: ServiceContext, principal: Principal, response: Response, secure: bool) -> None:
    """Open a session for `principal` and set its cookie on `response`."""
    session_id = secrets.token_urlsafe(32)
    record = {"token": principal.name, "csrf": secrets.token_urlsafe(32)}
    ctx.store.redis.set(
        ctx.store.keys.console_session(session_id),
        json.dumps(record),
        ex=ctx.settings.console_session_s,
    )
    set_cookie(response, COOKIE, session_id, ctx.settings.console_session_s, secure)


def current(ctx: ServiceContext, request: Request) -> Session | None:
    """The request's session, if its cookie names a live one whose token still exists."""
    session_id = request.cookies.get(COOKIE)
    if not session_id or len(session_id) > 100:
        return None
    raw = ctx.store.redis.get(ctx.store.keys.console_session(session_id))
    if raw is None:
        return None
    record = json.loads(raw)
    principal = ctx.tokens.by_name(record["token"])
    if principal is None:  # the token was removed from the configuration
        return None
    return Session(session_id, principal, record["csrf"])


def end(ctx: ServiceContext, session: Session, response: Response) -> None:
    """Sign out: forget the session and clear its cookie."""
    ctx.store.redis.delete(ctx.store.keys.console_session(session.id))
    response.delete_cookie(COOKIE, path=COOKIE_PATH)


def set_cookie(response: Response, name: str, value: str, max_age: int, secure: bool) -> None:
    """A console cookie: HttpOnly, SameSite=Strict, Secure over https, path /console."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure,
    )
