"""The service's settings: token tables from the environment or a file, refused clearly."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from service.auth import TokenTable, token_hash
from service.settings import load_service_settings
from worker.errors import ConfigError

HASH = hashlib.sha256(b"t0ken").hexdigest()


def table(**spec: object) -> dict[str, object]:
    return {"app": {"sha256": HASH, "scopes": ["read"], "key_aliases": ["default"], **spec}}


def test_a_token_table_from_the_environment_authenticates_by_hash() -> None:
    """The configured hash finds the token's principal; another token finds nothing."""
    settings = load_service_settings(service_tokens=table(scopes=["read", "control"]))
    tokens = TokenTable(settings.tokens())
    principal = tokens.authenticate("t0ken")
    assert principal is not None
    assert (principal.name, principal.can("control"), principal.can("submit")) == (
        "app", True, False,
    )  # fmt: skip
    assert tokens.authenticate("t0ken ") is None
    assert token_hash("t0ken") == HASH


def test_a_token_file_wins_over_the_variable(tmp_path: Path) -> None:
    """WICKSON_SERVICE_TOKENS_FILE is read instead of WICKSON_SERVICE_TOKENS."""
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"from-file": table()["app"]}))
    settings = load_service_settings(service_tokens=table(), service_tokens_file=path)
    assert list(settings.tokens()) == ["from-file"]


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"sha256": "abc"}, "sha256"),
        ({"scopes": ["admin"]}, "scopes"),
        ({"scopes": []}, "scopes"),
        ({"key_aliases": ["no spaces"]}, "key alias"),
        ({"key_aliases": []}, "key_aliases"),
        ({"extra": 1}, "extra"),
    ],
)
def test_a_bad_token_table_is_refused_naming_the_field(spec: dict[str, object], says: str) -> None:
    """A malformed entry stops the service at start-up with pydantic's reason."""
    with pytest.raises(ConfigError, match=says):
        load_service_settings(service_tokens=table(**spec))


def test_an_unreadable_or_malformed_token_file_is_refused(tmp_path: Path) -> None:
    """A missing file or one that is not a token table: ConfigError naming the variable."""
    with pytest.raises(ConfigError, match="WICKSON_SERVICE_TOKENS_FILE"):
        load_service_settings(service_tokens_file=tmp_path / "absent.json").tokens()
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not a token table"):
        load_service_settings(service_tokens_file=bad).tokens()


def test_a_token_name_must_be_loggable() -> None:
    """Token names go into log lines: letters, digits and _.@- only."""
    settings = load_service_settings(service_tokens={"bad name\n": table()["app"]})
    with pytest.raises(ConfigError, match="token name"):
        settings.tokens()
