"""worker/api.py: classifying answers, Retry-After, and the client over MockTransport."""

from __future__ import annotations

import json
import traceback
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.api import (
    DeleteResponse,
    classify_error,
    classify_success,
    is_not_found,
    parse_retry_after,
)
from worker.errors import (
    ApiError,
    ApiUnreachable,
    AuthFailed,
    BadRequest,
    JobStopping,
    OutcomeUnknown,
    RateLimited,
    Retryable,
    ServerError,
)


def answer(
    deleted: list[str],
    failed: dict[str, str] | None = None,
    *,
    failed_ids: list[str] | None = None,
    deleted_count: int | None = None,
    failed_count: int | None = None,
    hd: int = 0,
    ld: int = 0,
    op: str | None = "batch_delete_1",
) -> DeleteResponse:
    """A parsed 200 body."""
    failed = failed or {}
    failed_ids = list(failed) if failed_ids is None else failed_ids
    return DeleteResponse.model_validate(
        {
            "success": True,
            "data": {
                "deleted": {
                    "count": len(deleted) if deleted_count is None else deleted_count,
                    "media_ids": deleted,
                    "hd_vectors": hd,
                    "ld_vectors": ld,
                },
                "failed": {
                    "count": len(failed_ids) if failed_count is None else failed_count,
                    "media_ids": failed_ids,
                    "reasons": failed,
                },
            },
            "metadata": {"operation_id": op},
        }
    )


def error_body(code: str, message: str = "nope") -> bytes:
    return json.dumps({"success": False, "message": message, "error": {"code": code}}).encode()


# -- classify_success --------------------------------------------------------------------


def test_classify_success_all_deleted() -> None:
    """A 200 listing every requested id as deleted: all deleted, vectors and op id kept."""
    out = classify_success(["a", "b", "c"], answer(["a", "b", "c"], hd=3, ld=6, op="op-9"))
    assert out.deleted == ["a", "b", "c"]
    assert out.failed == {}
    assert out.unaccounted == []
    assert out.anomalies == []
    assert (out.hd_vectors, out.ld_vectors, out.operation_id) == (3, 6, "op-9")


def test_classify_success_partial_failure_keeps_each_reason() -> None:
    """Ids the API failed come out failed with the API's own reason for each."""
    out = classify_success(
        ["a", "b", "c"], answer(["a"], {"b": "Media not found", "c": "locked by legal hold"})
    )
    assert out.deleted == ["a"]
    assert out.failed == {"b": "Media not found", "c": "locked by legal hold"}
    assert out.unaccounted == []
    assert out.anomalies == []


def test_classify_success_failed_id_without_a_reason_gets_a_placeholder_reason() -> None:
    """A failed id with no entry in `reasons` is failed '(no reason given)', not dropped."""
    out = classify_success(["a", "b"], answer(["a"], {}, failed_ids=["b"]))
    assert out.failed == {"b": "failed (no reason given)"}


def test_classify_success_id_missing_from_both_lists_is_unaccounted() -> None:
    """A requested id the answer does not mention is unaccounted (retried, never assumed)."""
    out = classify_success(["a", "b", "c"], answer(["a"], {"b": "x"}))
    assert out.unaccounted == ["c"]
    assert "c" not in out.deleted
    assert "c" not in out.failed
    assert any("missing" in a for a in out.anomalies)


def test_classify_success_id_in_both_lists_is_unaccounted() -> None:
    """An id listed both deleted and failed is unaccounted, and the contradiction reported."""
    out = classify_success(["a", "b"], answer(["a", "b"], {"b": "error"}, deleted_count=2))
    assert out.deleted == ["a"]
    assert out.unaccounted == ["b"]
    assert out.failed == {}
    assert any("both" in a for a in out.anomalies)


def test_classify_success_ignores_ids_never_requested() -> None:
    """Ids in the answer that were not asked for are ignored and reported as an anomaly."""
    out = classify_success(["a"], answer(["a", "zzz"], {"yyy": "not found"}))
    assert out.deleted == ["a"]
    assert out.failed == {}
    assert out.unaccounted == []
    assert any("never requested" in a for a in out.anomalies)


def test_classify_success_reports_counts_that_disagree_with_the_lists() -> None:
    """A count that is not the length of its id list is an anomaly (the ids still rule)."""
    deleted_off = classify_success(["a", "b"], answer(["a", "b"], deleted_count=5))
    failed_off = classify_success(["a", "b"], answer(["a"], {"b": "x"}, failed_count=0))
    assert deleted_off.deleted == ["a", "b"]
    assert any("counts" in a for a in deleted_off.anomalies)
    assert any("counts" in a for a in failed_off.anomalies)


def test_classify_success_duplicate_requested_ids_come_out_once() -> None:
    """An id requested twice has one outcome, not two."""
    out = classify_success(["a", "a", "b", "b"], answer(["a"], {"b": "x"}))
    assert out.deleted == ["a"]
    assert out.failed == {"b": "x"}
    assert out.unaccounted == []


outcome_of = st.sampled_from(["deleted", "failed", "missing", "both"])


@given(
    st.dictionaries(st.text("abcdef", min_size=1, max_size=3), outcome_of, min_size=1),
    st.lists(st.text("xyz", min_size=1, max_size=2), max_size=3),
)
def test_classify_success_gives_every_requested_id_exactly_one_outcome(
    fate: dict[str, str], stray: list[str]
) -> None:
    """Each requested id gets exactly one outcome, deleted only if the answer says only that."""
    requested = list(fate)
    deleted = [i for i, f in fate.items() if f in ("deleted", "both")] + stray
    failed = {i: "r" for i, f in fate.items() if f in ("failed", "both")}
    out = classify_success(requested, answer(deleted, failed))
    groups = [set(out.deleted), set(out.failed), set(out.unaccounted)]
    assert sum(len(g) for g in groups) == len(requested)
    assert set().union(*groups) == set(requested)
    assert set(out.deleted) == {i for i, f in fate.items() if f == "deleted"}
    assert set(out.failed) == {i for i, f in fate.items() if f == "failed"}


# -- classify_error ----------------------------------------------------------------------


@pytest.mark.parametrize("code", ["MISSING_MEDIA_IDS", "INVALID_MEDIA_IDS", "BATCH_TOO_LARGE"])
def test_classify_error_400_is_a_bad_request_with_the_api_code(code: str) -> None:
    """Every documented 400 code is a BadRequest carrying that code (not retryable)."""
    exc = classify_error(400, {}, error_body(code, "what was wrong"))
    assert type(exc) is BadRequest
    assert exc.code == code
    assert exc.status == 400
    assert not isinstance(exc, Retryable)
    assert code in str(exc)
    assert "what was wrong" in str(exc)


@pytest.mark.parametrize(
    ("status", "code"), [(401, "INVALID_API_KEY"), (403, "INSUFFICIENT_PERMISSIONS")]
)
def test_classify_error_401_and_403_stop_the_job(status: int, code: str) -> None:
    """401 and 403 are AuthFailed (a JobStopping error) with the API's code."""
    exc = classify_error(status, {}, error_body(code))
    assert isinstance(exc, AuthFailed)
    assert isinstance(exc, JobStopping)
    assert (exc.status, exc.code) == (status, code)


def test_classify_error_429_with_retry_after_seconds() -> None:
    """A 429's Retry-After in seconds becomes `retry_after_s`."""
    exc = classify_error(429, {"retry-after": "7"}, error_body("RATE_LIMIT_EXCEEDED"))
    assert isinstance(exc, RateLimited)
    assert exc.retry_after_s == 7.0
    assert exc.status == 429
    assert isinstance(exc, Retryable)


def test_classify_error_429_with_retry_after_http_date() -> None:
    """A 429's Retry-After as an HTTP-date becomes the seconds until then."""
    import time

    when = formatdate(time.time() + 120, usegmt=True)
    exc = classify_error(429, {"retry-after": when}, error_body("RATE_LIMIT_EXCEEDED"))
    assert isinstance(exc, RateLimited)
    assert exc.retry_after_s is not None
    assert 100 <= exc.retry_after_s <= 121


@pytest.mark.parametrize("headers", [{}, {"retry-after": "soon"}, {"retry-after": ""}])
def test_classify_error_429_without_a_usable_retry_after(headers: dict[str, str]) -> None:
    """A 429 with no Retry-After, or one that means nothing, has `retry_after_s` None."""
    exc = classify_error(429, headers, error_body("RATE_LIMIT_EXCEEDED"))
    assert isinstance(exc, RateLimited)
    assert exc.retry_after_s is None


def test_classify_error_retry_after_header_name_is_case_insensitive() -> None:
    """Retry-After is found whatever its case, through httpx's headers."""
    exc = classify_error(429, httpx.Headers({"Retry-After": "3"}), b"")
    assert isinstance(exc, RateLimited)
    assert exc.retry_after_s == 3.0


@pytest.mark.parametrize("status", [500, 502, 503])
def test_classify_error_5xx_is_a_server_error_that_may_have_deleted(status: int) -> None:
    """5xx is a retryable ServerError with `maybe_deleted` set."""
    exc = classify_error(status, {}, error_body("PROCESSING_ERROR"))
    assert isinstance(exc, ServerError)
    assert isinstance(exc, Retryable)
    assert exc.maybe_deleted is True
    assert exc.status == status


@pytest.mark.parametrize(
    "content", [b"", b"<html>Bad gateway</html>", b"null", b"[]", b'{"error": null}', b"\xff"]
)
def test_classify_error_unparseable_bodies_fall_back_to_the_status(content: bytes) -> None:
    """An error body that is not the contract's envelope is classified by status alone."""
    bad = classify_error(400, {}, content)
    server = classify_error(500, {}, content)
    auth = classify_error(401, {}, content)
    assert type(bad) is BadRequest
    assert bad.code == "HTTP_400"
    assert "unparseable error body" in str(bad)
    assert isinstance(server, ServerError)
    assert isinstance(auth, AuthFailed)


@pytest.mark.parametrize("status", [204, 302])
def test_classify_error_unexpected_status_is_an_unknown_outcome(status: int) -> None:
    """A non-200, non-error status says nothing of what happened: OutcomeUnknown."""
    exc = classify_error(status, {}, b"")
    assert isinstance(exc, OutcomeUnknown)
    assert exc.maybe_deleted is True


def test_an_error_message_is_bounded(make_client, wickson) -> None:
    """A huge error message is cut to a few hundred characters."""
    client = make_client(lambda _r: wickson.error(500, "PROCESSING_ERROR", "x" * 10_000))
    with pytest.raises(ServerError) as info:
        client.delete_batch(["vec-1"])
    assert len(str(info.value)) <= 300


@pytest.mark.parametrize("cut_at", [290, 295, 299])
def test_a_key_echoed_across_the_cut_is_masked_before_cutting(
    make_client, wickson, api_key: str, cut_at: int
) -> None:
    """The key is masked first, then the message cut: not even its first characters stay
    (issue 12, case 5)."""
    prefix = "500 PROCESSING_ERROR: "
    message = "x" * (cut_at - len(prefix)) + f"key {api_key} refused"
    client = make_client(lambda _r: wickson.error(500, "PROCESSING_ERROR", message))
    with pytest.raises(ServerError) as info:
        client.delete_batch(["vec-1"])
    text = str(info.value)
    assert api_key[:4] not in text.removeprefix(prefix).replace("x", "")


# -- parse_retry_after / is_not_found ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"), [("120", 120.0), (" 3.5 ", 3.5), ("0", 0.0), ("-5", 0.0)]
)
def test_parse_retry_after_delta_seconds(value: str, seconds: float) -> None:
    """Delta-seconds are read as seconds; a negative one means now."""
    assert parse_retry_after(value) == seconds


def test_parse_retry_after_http_date_counts_from_now() -> None:
    """An HTTP-date gives the seconds from `now` to it; a date in the past gives 0."""
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0


@pytest.mark.parametrize(
    "value", [None, "", "   ", "soon", "nan", "inf", "-inf", "1e999", "Mon, 99 Foo 2025"]
)
def test_parse_retry_after_meaningless_values_are_none(value: str | None) -> None:
    """Missing, blank, garbage and non-finite values give None (fall back to backoff)."""
    assert parse_retry_after(value) is None


@pytest.mark.parametrize(
    "reason",
    ["Media not found", "NOT_FOUND", "notfound", "media does not exist", "No such media",
     "already deleted"],
)  # fmt: skip
def test_is_not_found_recognises_not_found_reasons(reason: str) -> None:
    """Reasons that say the id does not exist (any more) are 'not found', any case."""
    assert is_not_found(reason)


@pytest.mark.parametrize("reason", ["", "permission denied", "locked", "internal error"])
def test_is_not_found_rejects_other_reasons(reason: str) -> None:
    """Other failure reasons are not 'not found'."""
    assert not is_not_found(reason)


# -- WicksonClient over MockTransport ----------------------------------------------------


def test_delete_batch_sends_the_key_header_and_the_contract_body(
    make_client, wickson, api_key: str
) -> None:
    """One DELETE to /v1/media/batch with X-Api-Key, JSON content type, ids and reason."""
    api = wickson(existing=["a", "b"])
    out = make_client(api).delete_batch(["a", "b"], "outdated_content")
    (request,) = api.requests
    assert request.method == "DELETE"
    assert request.url.path == "/v1/media/batch"
    assert request.headers["x-api-key"] == api_key
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"media_ids": ["a", "b"], "reason": "outdated_content"}
    assert out.deleted == ["a", "b"]


def test_delete_batch_without_a_reason_omits_the_field(make_client, wickson) -> None:
    """No reason: the body has only media_ids."""
    api = wickson(existing=["a"])
    make_client(api).delete_batch(["a"])
    assert api.bodies() == [{"media_ids": ["a"]}]


def test_delete_batch_partial_answer_is_classified(make_client, wickson) -> None:
    """A 200 with failures comes back as a BatchOutcome with per-id reasons."""
    api = wickson(existing=["a"])
    out = make_client(api).delete_batch(["a", "b"])
    assert out.deleted == ["a"]
    assert out.failed == {"b": "Media not found"}
    assert (out.hd_vectors, out.ld_vectors) == (2, 1)


@pytest.mark.parametrize(
    "content", [b"not json", b"{}", b'{"data": {}}', b'{"data": {"deleted": 3}}']
)
def test_delete_batch_200_with_garbage_body_is_an_unknown_outcome(
    make_client, wickson, content: bytes
) -> None:
    """A 200 whose body cannot be read may have deleted: OutcomeUnknown, maybe_deleted."""
    api = wickson()
    api.then(httpx.Response(200, content=content))
    with pytest.raises(OutcomeUnknown) as info:
        make_client(api).delete_batch(["a"])
    assert info.value.maybe_deleted is True
    assert info.value.status == 200


def test_delete_batch_read_timeout_is_an_unknown_outcome(make_client, wickson) -> None:
    """A timeout after sending may have deleted: OutcomeUnknown with maybe_deleted."""
    api = wickson()
    api.then(httpx.ReadTimeout("timed out"))
    with pytest.raises(OutcomeUnknown) as info:
        make_client(api).delete_batch(["a"])
    assert info.value.maybe_deleted is True


def test_delete_batch_dropped_connection_is_an_unknown_outcome(make_client, wickson) -> None:
    """A connection lost mid-answer may have deleted: OutcomeUnknown."""
    api = wickson()
    api.then(httpx.RemoteProtocolError("peer closed connection"))
    with pytest.raises(OutcomeUnknown):
        make_client(api).delete_batch(["a"])


@pytest.mark.parametrize(
    "error", [httpx.ConnectError("refused"), httpx.ConnectTimeout("connect timed out")]
)
def test_delete_batch_connect_failure_is_unreachable_and_deleted_nothing(
    make_client, wickson, error: Exception
) -> None:
    """No connection means nothing was sent: ApiUnreachable, maybe_deleted False."""
    api = wickson()
    api.then(error)
    with pytest.raises(ApiUnreachable) as info:
        make_client(api).delete_batch(["a"])
    assert info.value.maybe_deleted is False
    assert isinstance(info.value, Retryable)


def test_delete_batch_error_status_raises_the_classified_error(make_client, wickson) -> None:
    """A 429 through the transport raises RateLimited with the header's wait."""
    api = wickson()
    api.then(wickson.error(429, "RATE_LIMIT_EXCEEDED", headers={"Retry-After": "4"}))
    with pytest.raises(RateLimited) as info:
        make_client(api).delete_batch(["a"])
    assert info.value.retry_after_s == 4.0


def test_delete_batch_refuses_more_than_100_ids_without_sending(make_client, wickson) -> None:
    """Over 100 ids is refused locally (ValueError): the request is never sent."""
    api = wickson()
    with pytest.raises(ValueError, match="100"):
        make_client(api).delete_batch([f"v{i}" for i in range(101)])
    assert api.requests == []


def test_client_repr_does_not_show_the_key(make_client, wickson, api_key: str) -> None:
    """repr(client) names the API URL, never the key."""
    client = make_client(wickson())
    assert api_key not in repr(client)
    assert "api.wickson.test" in repr(client)


def _raised(make_client, wickson, answer: Any) -> ApiError:
    api = wickson()
    api.then(answer)
    with pytest.raises(ApiError) as info:
        make_client(api).delete_batch(["a"], "reason")
    return info.value


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(401, json={"error": {"code": "INVALID_API_KEY"}, "message": "bad key"}),
        httpx.Response(403, json={"error": {"code": "INSUFFICIENT_PERMISSIONS"}}),
        httpx.Response(429, headers={"Retry-After": "1"}),
        httpx.Response(400, json={"error": {"code": "BATCH_TOO_LARGE"}}),
        httpx.Response(500, content=b"<html>oops</html>"),
        httpx.Response(200, content=b"garbage"),
        httpx.ReadTimeout("timed out"),
        httpx.ConnectError("refused"),
        httpx.RemoteProtocolError("closed"),
    ],
    ids=["401", "403", "429", "400", "500", "200-garbage", "timeout", "connect", "protocol"],
)
def test_no_raised_error_carries_the_key(make_client, wickson, api_key: str, answer: Any) -> None:
    """Whatever the failure, the key is in neither str(), repr() nor the traceback text."""
    exc = _raised(make_client, wickson, answer)
    assert api_key not in str(exc)
    assert api_key not in repr(exc)
    assert api_key not in "".join(traceback.format_exception(exc))


def test_an_error_message_echoing_the_key_does_not_leak_it(
    make_client, wickson, api_key: str
) -> None:
    """Even an API that echoes the key in its error message does not get it into ours."""

    def echo(request: httpx.Request) -> httpx.Response:
        key = request.headers["x-api-key"]
        return wickson.error(401, "INVALID_API_KEY", f"API key {key} is not valid")

    exc = _raised(make_client, wickson, echo)
    assert api_key not in str(exc)
    assert api_key not in repr(exc)
