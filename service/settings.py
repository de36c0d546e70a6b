"""The service's settings: the fleet's (worker/settings.py) plus bearer tokens.

    WICKSON_SERVICE_TOKENS='{"shop": {"sha256": "<hex of the token>",
                                      "scopes": ["read", "submit"], "key_aliases": ["default"]}}'

Only hashes are configured; `python -m service.auth TOKEN` prints one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from worker.errors import ConfigError
from worker.settings import ALIAS_PATTERN, Settings, read_settings

Scope = Literal["read", "submit", "control"]
TOKEN_NAME_PATTERN = r"^[A-Za-z0-9_.@-]{1,64}$"  # noqa: S105 (a pattern of names, no secret)
ANY_ALIAS = "*"
"""In `key_aliases`: every key alias (an operator's token)."""


class TokenSpec(BaseModel):
    """One bearer token: the hex SHA-256 of its value, what it may do, whose jobs it sees."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[Scope] = Field(min_length=1)
    key_aliases: list[str] = Field(min_length=1)

    @field_validator("key_aliases")
    @classmethod
    def _aliases_are_names(cls, aliases: list[str]) -> list[str]:
        for alias in aliases:
            if alias != ANY_ALIAS and not re.fullmatch(ALIAS_PATTERN, alias):
                raise ValueError(f"key alias {alias!r} must be '*' or 1-64 letters, digits, '_.-'")
        return aliases


_TOKENS = TypeAdapter(dict[str, TokenSpec])


class ServiceSettings(Settings):
    """Settings of `wickson-purge serve`."""

    service_tokens: dict[str, TokenSpec] = Field(default_factory=dict)
    """Token name -> its hash, scopes and key aliases (JSON)."""

    service_tokens_file: Path | None = None
    """A JSON file of the same shape (a mounted secret); wins over WICKSON_SERVICE_TOKENS."""

    service_max_json_bytes: int = Field(64 * 1024 * 1024, ge=1_024)
    """A JSON body is parsed whole: bigger jobs come as text/plain or text/csv (streamed)."""

    console_session_s: int = Field(8 * 3_600, ge=60)
    """A console sign-in lasts a working day."""

    def tokens(self) -> dict[str, TokenSpec]:
        """Every configured token by name; ConfigError naming the variable if unusable."""
        tokens = self.service_tokens
        if self.service_tokens_file is not None:
            where = f"WICKSON_SERVICE_TOKENS_FILE={str(self.service_tokens_file)!r}"
            try:
                tokens = _TOKENS.validate_python(json.loads(self.service_tokens_file.read_text()))
            except OSError as exc:
                raise ConfigError(f"{where}: {exc.strerror}") from None
            except (ValueError, ValidationError) as exc:
                raise ConfigError(f"{where}: not a token table: {exc}") from None
        for name in tokens:
            if not re.fullmatch(TOKEN_NAME_PATTERN, name):
                raise ConfigError(f"token name {name!r}: use 1-64 letters, digits, '_.@-'")
        return tokens


def load_service_settings(**overrides: object) -> ServiceSettings:
    """Read the service's settings from the environment; ConfigError if they are wrong."""
    return read_settings(ServiceSettings, **overrides)
