"""The pure rules of webhooks: which callback URLs are allowed, signing and verifying."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from worker.errors import InputError
from worker.webhooks import check_callback_url, destination_problem, sign, verify


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/purge",
        "https://example.com:8443/a?b=c",
        "https://203.0.113.7/x".replace("203.0.113.7", "8.8.8.8"),
    ],
)
def test_public_https_callbacks_are_accepted(url: str) -> None:
    """https to a public name or address is a valid callback."""
    assert check_callback_url(url, allow_insecure=False) == url


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://example.com/x", "https"),
        ("ftp://example.com/x", "https"),
        ("https://localhost/x", "local"),
        ("https://api.localhost/x", "local"),
        ("https://localhost./x", "local"),
        ("https://127.0.0.1/x", "loopback"),
        ("https://[::1]/x", "loopback"),
        ("https://10.1.2.3/x", "private"),
        ("https://192.168.0.10/x", "private"),
        ("https://169.254.169.254/latest/meta-data", "private"),
        ("https://0.0.0.0/x", "reserved"),
        ("https:///nohost", "host"),
        ("https://example.com:99999/x", "URL"),
        ("https://exa mple.com/x", "printable"),
        ("https://example.com/" + "a" * 3_000, "2,048"),
    ],
)
def test_callbacks_into_private_networks_or_without_tls_are_refused(url: str, says: str) -> None:
    """http, loopback, private, link-local (cloud metadata) and malformed URLs: InputError."""
    with pytest.raises(InputError, match=says):
        check_callback_url(url, allow_insecure=False)


def test_allow_insecure_lets_local_http_through() -> None:
    """WICKSON_WEBHOOK_ALLOW_INSECURE allows http and loopback (tests, trusted networks)."""
    assert check_callback_url("http://127.0.0.1:9/x", allow_insecure=True)
    assert destination_problem("http://127.0.0.1:9/x", allow_insecure=True) is None


def test_a_name_resolving_to_a_private_address_is_refused_at_delivery() -> None:
    """A name that passes at submit but resolves into loopback or a private network (this
    machine's own name) is refused when delivering."""
    name = socket.gethostname()
    try:
        address = ipaddress.ip_address(socket.getaddrinfo(name, 443)[0][4][0])
    except OSError:
        pytest.skip(f"this machine's name {name!r} does not resolve")
    if address.is_global:
        pytest.skip(f"this machine's name resolves to a public address {address}")
    assert check_callback_url(f"https://{name}/x", allow_insecure=False)
    problem = destination_problem(f"https://{name}/x", allow_insecure=False)
    assert problem is not None
    assert "not a public address" in problem


def test_a_signature_verifies_only_for_its_secret_body_and_time() -> None:
    """v1 = HMAC-SHA256(secret, "t.body"): another secret, body or an old t fails."""
    header = sign("s3cret", 1_700_000_000, b'{"a":1}')
    assert header.startswith("t=1700000000,v1=")
    assert verify("s3cret", header, b'{"a":1}', now=1_700_000_010)
    assert not verify("other", header, b'{"a":1}', now=1_700_000_010)
    assert not verify("s3cret", header, b'{"a":2}', now=1_700_000_010)
    assert not verify("s3cret", header, b'{"a":1}', now=1_700_001_000)
    assert not verify("s3cret", "garbage", b'{"a":1}', now=1_700_000_010)
