"""worker/settings.py: defaults, environment variables, and refusals that name the variable."""

from __future__ import annotations

import re
import traceback

import pytest

from worker.errors import ConfigError
from worker.settings import REAL_API_URL, get_settings, load_settings

SECRET = "wk-live-SETTINGS-do-not-print-9f8e"


def refusal(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    """Set `env`, load settings, and return the ConfigError's message (it must be raised)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    return str(info.value)


def test_defaults_without_any_environment() -> None:
    """With no variable set: the real API, local Redis, 10 req/s, 8 attempts, no key."""
    s = load_settings()
    assert s.api_url == REAL_API_URL == "https://api.wickson.ai"
    assert s.api_key is None
    assert s.redis_url == "redis://localhost:6379/0"
    assert (s.rate_limit, s.rate_burst) == (10.0, 1)
    assert (s.request_timeout_s, s.shutdown_grace_s) == (15.0, 25.0)
    assert (s.max_attempts, s.backoff_base_s, s.backoff_cap_s) == (8, 0.5, 30.0)
    assert (s.max_wait_in_task_s, s.visibility_timeout_s, s.lease_s) == (5.0, 3_600, 20.0)
    assert (s.max_deliveries, s.slice_s, s.keeper_interval_s) == (5, 10.0, 2.0)
    assert s.job_retention_s == 7 * 24 * 3_600
    assert s.max_job_ids == 50_000_000
    assert s.key_prefix == "wp"


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """WICKSON_* variables and REDIS_URL set the matching fields."""
    env = {
        "WICKSON_API_URL": "http://127.0.0.1:8080",
        "WICKSON_API_KEY": SECRET,
        "REDIS_URL": "redis://cache:6380/3",
        "WICKSON_RATE_LIMIT": "2.5",
        "WICKSON_RATE_BURST": "4",
        "WICKSON_REQUEST_TIMEOUT_S": "9",
        "WICKSON_SHUTDOWN_GRACE_S": "20",
        "WICKSON_MAX_ATTEMPTS": "3",
        "WICKSON_BACKOFF_BASE_S": "0.25",
        "WICKSON_BACKOFF_CAP_S": "10",
        "WICKSON_MAX_WAIT_IN_TASK_S": "2",
        "WICKSON_VISIBILITY_TIMEOUT_S": "1200",
        "WICKSON_LEASE_S": "120",
        "WICKSON_MAX_DELIVERIES": "7",
        "WICKSON_SLICE_S": "16",
        "WICKSON_JOB_RETENTION_S": "3600",
        "WICKSON_MAX_JOB_IDS": "1000",
        "WICKSON_KEY_PREFIX": "purge-test",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert s.api_url == "http://127.0.0.1:8080"
    assert s.api_key is not None
    assert s.api_key.get_secret_value() == SECRET
    assert s.redis_url == "redis://cache:6380/3"
    assert (s.rate_limit, s.rate_burst) == (2.5, 4)
    assert (s.request_timeout_s, s.shutdown_grace_s) == (9.0, 20.0)
    assert (s.max_attempts, s.backoff_base_s, s.backoff_cap_s) == (3, 0.25, 10.0)
    assert (s.max_wait_in_task_s, s.visibility_timeout_s, s.lease_s) == (2.0, 1_200, 120.0)
    assert (s.max_deliveries, s.slice_s) == (7, 16.0)
    assert (s.job_retention_s, s.max_job_ids, s.key_prefix) == (3_600, 1_000, "purge-test")


def test_wickson_redis_url_is_accepted_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """WICKSON_REDIS_URL works as an alternative name for REDIS_URL."""
    monkeypatch.setenv("WICKSON_REDIS_URL", "rediss://secure:6379/0")
    assert load_settings().redis_url == "rediss://secure:6379/0"


def test_get_settings_reads_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process-wide settings are read on first use and then kept."""
    monkeypatch.setenv("WICKSON_RATE_LIMIT", "3")
    first = get_settings()
    monkeypatch.setenv("WICKSON_RATE_LIMIT", "4")
    assert get_settings() is first
    assert first.rate_limit == 3.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WICKSON_RATE_LIMIT", "-1"),
        ("WICKSON_RATE_LIMIT", "0"),
        ("WICKSON_RATE_LIMIT", "fast"),
        ("WICKSON_RATE_BURST", "0"),
        ("WICKSON_API_URL", "ftp://x"),
        ("WICKSON_API_URL", "api.wickson.ai"),
        ("WICKSON_MAX_ATTEMPTS", "0"),
        ("WICKSON_KEY_PREFIX", "has space"),
        ("WICKSON_REQUEST_TIMEOUT_S", "-3"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable_and_the_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """A bad value raises ConfigError whose message names the variable and quotes the value."""
    message = refusal(monkeypatch, **{name: value})
    assert re.search(rf"(^|\s){name}\b", message), message
    assert repr(value) in message


def test_a_bad_redis_url_is_refused_naming_a_redis_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """REDIS_URL=http://x is refused (only redis://, rediss://, unix://)."""
    message = refusal(monkeypatch, REDIS_URL="http://x")
    assert "REDIS_URL" in message
    assert "'http://x'" in message


def test_a_bad_redis_url_names_the_variable_the_user_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """REDIS_URL=http://x is reported as REDIS_URL, not as a variable nobody set."""
    message = refusal(monkeypatch, REDIS_URL="http://x")
    assert re.search(r"(^|\s)REDIS_URL:", message), message
    assert "WICKSON_REDIS_URL" not in message


@pytest.mark.parametrize(
    "other",
    [
        {"WICKSON_RATE_LIMIT": "abc"},
        {"WICKSON_API_URL": "nope"},
        {"WICKSON_REQUEST_TIMEOUT_S": "30"},  # a cross-field rule: its input is every value
        {"WICKSON_VISIBILITY_TIMEOUT_S": "50"},
        {"WICKSON_RATE_LIMIT": "abc", "REDIS_URL": "http://x", "WICKSON_MAX_ATTEMPTS": "-1"},
    ],
    ids=["number", "url", "timeout-vs-grace", "visibility", "many"],
)
def test_the_api_key_never_appears_in_a_refusal(
    monkeypatch: pytest.MonkeyPatch, other: dict[str, str]
) -> None:
    """When another field is refused, the key is in neither the message nor the traceback."""
    monkeypatch.setenv("WICKSON_API_KEY", SECRET)
    for name, value in other.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)
    assert SECRET not in "".join(traceback.format_exception(info.value))


def test_visibility_timeout_shorter_than_twice_a_drain_hold_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The visibility timeout must be at least twice a drain message's hold (slice + the
    longest wait for a send slot + one request: 280 + 5 + 15 here)."""
    message = refusal(monkeypatch, WICKSON_SLICE_S="280", WICKSON_VISIBILITY_TIMEOUT_S="599")
    assert "WICKSON_VISIBILITY_TIMEOUT_S" in message
    monkeypatch.setenv("WICKSON_VISIBILITY_TIMEOUT_S", "600")
    assert load_settings().visibility_timeout_s == 600


def test_a_lease_shorter_than_a_request_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request must end before its lease lapses: lease < timeout + 5 s is refused."""
    message = refusal(monkeypatch, WICKSON_LEASE_S="19", WICKSON_REQUEST_TIMEOUT_S="15")
    assert "WICKSON_LEASE_S" in message
    assert "WICKSON_REQUEST_TIMEOUT_S" in message


def test_a_redis_url_password_never_appears_in_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A REDIS_URL that fails validation is echoed with its user and password masked."""
    message = refusal(monkeypatch, REDIS_URL="redis//:s3cretpw@127.0.0.1:6379/0")
    assert "s3cretpw" not in message
    assert "127.0.0.1:6379" in message


@pytest.mark.parametrize(("timeout", "grace"), [("25", "25"), ("30", "25")])
def test_request_timeout_not_shorter_than_the_shutdown_grace_is_refused(
    monkeypatch: pytest.MonkeyPatch, timeout: str, grace: str
) -> None:
    """A request must fit in the shutdown grace: timeout >= grace is refused, naming both."""
    message = refusal(
        monkeypatch, WICKSON_REQUEST_TIMEOUT_S=timeout, WICKSON_SHUTDOWN_GRACE_S=grace
    )
    assert "WICKSON_REQUEST_TIMEOUT_S" in message
    assert "WICKSON_SHUTDOWN_GRACE_S" in message


def test_request_timeout_just_under_the_grace_is_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A timeout shorter than the grace is fine."""
    monkeypatch.setenv("WICKSON_REQUEST_TIMEOUT_S", "24.9")
    monkeypatch.setenv("WICKSON_SHUTDOWN_GRACE_S", "25")
    monkeypatch.setenv("WICKSON_LEASE_S", "30")
    assert load_settings().request_timeout_s == 24.9


@pytest.mark.parametrize("value", [None, "", "   "])
def test_require_api_key_refuses_a_missing_or_blank_key(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    """A worker without a key refuses to start, naming WICKSON_API_KEY."""
    if value is not None:
        monkeypatch.setenv("WICKSON_API_KEY", value)
    with pytest.raises(ConfigError, match="WICKSON_API_KEY"):
        load_settings().require_api_key()


def test_require_api_key_returns_the_key_and_the_settings_never_show_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The key is returned as a secret: repr and str of the settings mask it."""
    monkeypatch.setenv("WICKSON_API_KEY", SECRET)
    s = load_settings()
    assert s.require_api_key().get_secret_value() == SECRET
    assert SECRET not in repr(s)
    assert SECRET not in str(s)


def test_more_keys_are_read_by_alias_from_wickson_api_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """WICKSON_API_KEYS (a JSON object alias -> key) adds keys; the default key stays."""
    monkeypatch.setenv("WICKSON_API_KEY", SECRET)
    monkeypatch.setenv("WICKSON_API_KEYS", '{"tenant-b": "wk-live-TENANT-B-4c3d"}')
    s = load_settings()
    assert s.require_api_key().get_secret_value() == SECRET
    assert s.require_api_key("tenant-b").get_secret_value() == "wk-live-TENANT-B-4c3d"
    with pytest.raises(ConfigError, match="tenant-c"):
        s.require_api_key("tenant-c")
    assert "wk-live-TENANT-B-4c3d" not in repr(s)


def test_the_key_file_wins_over_the_key_variable(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """WICKSON_API_KEY_FILE (a mounted secret) is read, stripped, and preferred."""
    key_file = tmp_path / "key"
    key_file.write_text(SECRET + "\n")
    monkeypatch.setenv("WICKSON_API_KEY", "wk-live-ignored")
    monkeypatch.setenv("WICKSON_API_KEY_FILE", str(key_file))
    assert load_settings().require_api_key().get_secret_value() == SECRET


def test_an_unreadable_key_file_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """A key file that cannot be read raises ConfigError naming WICKSON_API_KEY_FILE."""
    monkeypatch.setenv("WICKSON_API_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="WICKSON_API_KEY_FILE"):
        load_settings().require_api_key()


@pytest.mark.parametrize(
    "value",
    ["not json", '{"bad alias": "%s"}'],
    ids=["not-json", "bad-alias"],
)
def test_a_malformed_wickson_api_keys_is_refused_without_the_keys(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """WICKSON_API_KEYS that is not an object of named keys is refused, keys not shown."""
    message = refusal(monkeypatch, WICKSON_API_KEYS=value.replace("%s", SECRET))
    assert "api_keys" in message.lower()
    assert SECRET not in message


@pytest.mark.parametrize(
    "value", ['{"tenant": ["%s"]}', '{"tenant": {"key": "%s"}}'], ids=["list", "object"]
)
def test_a_mis_shaped_key_entry_never_shows_the_key(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """A WICKSON_API_KEYS entry of the wrong shape is refused without printing its value."""
    message = refusal(monkeypatch, WICKSON_API_KEYS=value.replace("%s", SECRET))
    assert "WICKSON_API_KEYS" in message
    assert SECRET not in message
