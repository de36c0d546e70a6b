"""Bearer tokens: who is calling, what they may do (scopes), whose jobs they see (aliases).

Only SHA-256 hashes of tokens are configured. A token sees the jobs of its key aliases
only: another tenant's job answers 404, as an unknown one does. Every refusal is logged
with the token's name, never its value. `python -m service.auth TOKEN` prints the hash.
"""

from __future__ import annotations

import hashlib
import hmac
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.settings import ANY_ALIAS, Scope, TokenSpec

log = structlog.get_logger("wickson_purge.service")

bearer = HTTPBearer(auto_error=False, description="A service token (WICKSON_SERVICE_TOKENS)")


@dataclass(frozen=True)
class Principal:
    """An authenticated token: its name, scopes and key aliases."""

    name: str
    scopes: frozenset[str]
    key_aliases: frozenset[str]

    def can(self, scope: Scope) -> bool:
        return scope in self.scopes

    def sees(self, key_alias: str) -> bool:
        """Whether jobs of `key_alias` are this token's to see and act on."""
        return ANY_ALIAS in self.key_aliases or key_alias in self.key_aliases

    @property
    def default_alias(self) -> str:
        """The alias a submit without `key_alias` uses: 'default' if allowed, else the first."""
        if self.sees("default"):
            return "default"
        return sorted(self.key_aliases)[0]


def token_hash(token: str) -> str:
    """The hex SHA-256 of a token, as WICKSON_SERVICE_TOKENS holds it."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenTable:
    """The configured tokens, looked up by value (hashed) or by name (a console session)."""

    def __init__(self, tokens: Mapping[str, TokenSpec]) -> None:
        self._tokens = {
            name: Principal(name, frozenset(spec.scopes), frozenset(spec.key_aliases))
            for name, spec in tokens.items()
        }
        self._hashes = [(spec.sha256, name) for name, spec in tokens.items()]

    def authenticate(self, token: str) -> Principal | None:
        """The token's principal, or None; compares against every hash in constant time."""
        digest = token_hash(token)
        found = None
        for expected, name in self._hashes:
            if hmac.compare_digest(digest, expected):
                found = self._tokens[name]
        return found

    def by_name(self, name: str) -> Principal | None:
        return self._tokens.get(name)


def refuse(
    status: int, detail: str, request: Request, principal: Principal | None
) -> HTTPException:
    """An HTTP refusal, logged with the token's name (never its value)."""
    log.warning(
        "service.refused",
        status=status,
        token=principal.name if principal else None,
        method=request.method,
        path=request.url.path,
        why=detail,
    )
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return HTTPException(status, detail, headers=headers)


def require(scope: Scope) -> Callable[..., Principal]:
    """A dependency: the calling token, which must hold `scope` (401 without a token)."""

    def dependency(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> Principal:
        table: TokenTable = request.app.state.ctx.tokens
        principal = table.authenticate(credentials.credentials) if credentials else None
        if principal is None:
            why = "unknown token" if credentials else "no bearer token"
            raise refuse(401, f"{why}: send Authorization: Bearer <token>", request, None)
        if not principal.can(scope):
            raise refuse(403, f"this token lacks the {scope!r} scope", request, principal)
        return principal

    return dependency


def main(argv: list[str]) -> int:
    """Print the hash of each token given (what WICKSON_SERVICE_TOKENS holds)."""
    for token in argv:
        print(token_hash(token))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
