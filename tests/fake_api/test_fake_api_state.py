"""FakeApi's behaviour, in process, on a fake clock: the contract, the ledger, the faults."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ops.fake_api import FakeApi
from ops.fake_api.catalogue import foreign_id, owned_id

WALL_NOW = datetime(2025, 3, 9, 12, 34, 56, tzinfo=UTC)


def vec(*indexes: int) -> list[str]:
    """Owned ids by number."""
    return [owned_id(i) for i in indexes]


# --- the documented 200 -------------------------------------------------------------


def test_deleting_owned_ids_answers_the_documented_200(api, send):
    """A batch of owned ids is deleted and answered with every documented field."""
    answer = send(api, vec(0, 1, 2), reason="outdated_content")
    body = answer.body
    assert answer.status == 200
    assert body["success"] is True
    assert body["message"] == "Batch deletion completed: 3 deleted, 0 failed"
    assert body["data"]["deleted"] == {
        "count": 3,
        "media_ids": vec(0, 1, 2),
        "hd_vectors": 1 + 2 + 3,
        "ld_vectors": 3,
    }
    assert body["data"]["failed"] == {"count": 0, "media_ids": [], "reasons": {}}
    metadata = body["metadata"]
    assert metadata["reason"] == "outdated_content"
    assert metadata["timestamp"] == "2025-03-09T12:34:56Z"
    assert metadata["operation_id"].startswith("batch_delete_")
    assert isinstance(metadata["processing_time_ms"], int)


def test_reason_is_null_when_not_sent(api, send):
    """metadata.reason echoes the request's reason, null when there was none."""
    assert send(api, vec(0)).body["metadata"]["reason"] is None


def test_operation_ids_are_unique_per_request(api, send):
    """Every request gets its own operation_id, even across reset()."""
    first = send(api, vec(0)).body["metadata"]["operation_id"]
    api.reset()
    second = send(api, vec(0)).body["metadata"]["operation_id"]
    assert first != second


# --- per-id failures ----------------------------------------------------------------


def test_unknown_ids_fail_with_not_found(api, send):
    """Ids outside the catalogue, or not spelled canonically, fail per id as not found."""
    unknown = ["vec-abc", "vec-1", "vec-0001000", "nope", ""]
    answer = send(api, [*vec(5), *unknown])
    assert answer.status == 200
    assert answer.deleted == vec(5)
    assert answer.failed == dict.fromkeys(unknown, "Media not found")
    assert answer.body["data"]["failed"]["count"] == len(unknown)


def test_foreign_ids_fail_with_access_denied(api, send):
    """An id owned by another user fails per id and is never deleted."""
    answer = send(api, [foreign_id(3)])
    assert answer.failed == {foreign_id(3): "Access denied: media belongs to another user"}
    assert api.ledger().deleted == 0


def test_repeated_delete_fails_with_not_found(api, send):
    """Deleting an already deleted id is a per-id failure, not an error."""
    send(api, vec(7))
    answer = send(api, vec(7, 8))
    assert answer.deleted == vec(8)
    assert answer.failed == {owned_id(7): "Media not found"}


def test_duplicates_in_one_request_are_deleted_and_listed_once(api, send):
    """A duplicated id is deleted once and listed once."""
    answer = send(api, vec(4, 4, 5, 4))
    assert answer.deleted == vec(4, 5)
    assert answer.failed == {}
    assert answer.body["data"]["deleted"]["hd_vectors"] == (1 + 4 % 3) + (1 + 5 % 3)
    assert api.ledger().deleted == 2


# --- the contract's errors ----------------------------------------------------------


@pytest.mark.parametrize(
    "body", [b"{}", b'{"reason": "x"}', b"[]", b'"media_ids"', b"not json", b"", b"\xff"]
)
def test_missing_media_ids_is_400(api, send, body):
    """A body that is not a JSON object, or lacks media_ids, is 400 MISSING_MEDIA_IDS."""
    answer = send(api, body=body)
    assert (answer.status, answer.code) == (400, "MISSING_MEDIA_IDS")


@pytest.mark.parametrize("ids", [[], None, "vec-0000001", {"a": 1}, [1], [owned_id(1), None]])
def test_invalid_media_ids_is_400(api, send, ids):
    """media_ids that is not a non-empty array of strings is 400 INVALID_MEDIA_IDS."""
    answer = send(api, ids)
    assert (answer.status, answer.code) == (400, "INVALID_MEDIA_IDS")
    assert api.ledger().deleted == 0


def test_more_ids_than_max_batch_is_400_batch_too_large(api, send):
    """101 ids is BATCH_TOO_LARGE and deletes nothing; exactly 100 is fine."""
    too_many = send(api, vec(*range(101)))
    assert (too_many.status, too_many.code) == (400, "BATCH_TOO_LARGE")
    assert api.ledger().deleted == 0
    assert send(api, vec(*range(100))).status == 200


def test_a_server_may_have_a_lower_batch_limit(make_api, send):
    """max_batch lowers the limit."""
    api = make_api(max_batch=10)
    assert send(api, vec(*range(11))).code == "BATCH_TOO_LARGE"


@pytest.mark.parametrize("key", [None, "", "wrong-key"])
def test_missing_or_unknown_key_is_401(api, send, key):
    """No key or an unknown key is 401 INVALID_API_KEY and deletes nothing."""
    answer = send(api, vec(1), key=key)
    assert (answer.status, answer.code) == (401, "INVALID_API_KEY")
    assert not api.is_deleted(owned_id(1))


def test_readonly_key_is_403(api, send):
    """A valid key without the delete capability is 403 INSUFFICIENT_PERMISSIONS."""
    answer = send(api, vec(1), key="readonly-key")
    assert (answer.status, answer.code) == (403, "INSUFFICIENT_PERMISSIONS")
    assert not api.is_deleted(owned_id(1))


def test_errors_use_the_documented_envelope(api, send):
    """Errors carry success false, a message, and error.code with details.request_id."""
    body = send(api, vec(1), key=None).body
    assert body["success"] is False
    assert isinstance(body["message"], str)
    assert body["message"]
    assert body["error"]["details"]["request_id"].startswith("req_")


def test_auth_is_checked_before_the_body(api, send):
    """A bad key with a bad body is a 401, not a 400."""
    assert send(api, body=b"{}", key=None).status == 401


def test_invalid_id_pattern_rejects_the_whole_batch(make_api, send):
    """One id matching invalid_id_pattern makes the request a 400 that deletes nothing."""
    api = make_api(invalid_id_pattern=r"[^a-z0-9-]")
    answer = send(api, [*vec(1, 2), "vec 3"])
    assert (answer.status, answer.code) == (400, "INVALID_MEDIA_IDS")
    assert answer.body["error"]["details"]["invalid_ids"] == ["vec 3"]
    assert api.ledger().deleted == 0
    assert send(api, vec(1, 2)).status == 200


def test_revoked_key_is_401_until_restored(api, send):
    """revoke_key() turns the main key's answers into 401 until restore_key()."""
    api.revoke_key()
    assert send(api, vec(1)).code == "INVALID_API_KEY"
    assert send(api, vec(1), key="readonly-key").status == 403
    api.restore_key()
    assert send(api, vec(1)).status == 200


# --- the ledger ---------------------------------------------------------------------


def test_ledger_totals_count_what_was_really_done(api, send):
    """The ledger sums deletions, vectors, requests and statuses, whatever was answered."""
    send(api, vec(0, 1, 2))  # hd 1 + 2 + 3
    send(api, [*vec(3, 0), foreign_id(0)])  # deletes 3 (hd 1)
    send(api, vec(*range(10, 160)), key=None)  # 401, but its size is still seen
    send(api, body=b"{}")
    ledger = api.ledger()
    assert ledger.deleted == 4
    assert (ledger.hd_vectors, ledger.ld_vectors) == (7, 4)
    assert ledger.requests == 4
    assert ledger.status_counts == {200: 2, 401: 1, 400: 1}
    assert ledger.max_batch_seen == 150
    assert ledger.is_deleted(owned_id(3))
    assert not ledger.is_deleted(foreign_id(0))
    assert ledger.sorted_ids() == vec(0, 1, 2, 3) == api.deleted_ids()


def test_ledger_lists_deleted_ids_only_when_asked(api, send):
    """The JSON summary has no deleted_ids unless include_ids is set."""
    send(api, vec(2, 1))
    assert "deleted_ids" not in json.loads(api.ledger().model_dump_json(exclude_none=True))
    assert api.ledger(include_ids=True).deleted_ids == vec(1, 2)


def test_max_requests_in_any_1s_window(api, send, clock):
    """The busiest window (t - 1 s, t] is found from the request times."""
    for step, count in [(0.0, 3), (0.5, 2), (0.5, 2), (0.4, 1), (5.0, 1)]:
        clock.advance(step)
        for _ in range(count):
            send(api, vec(1))
    # (0.4, 1.4] holds 2 + 2 + 1; (0, 1] holds 2 + 2, as requests exactly 1 s apart
    # never share a window.
    assert api.ledger().max_requests_in_any_1s_window == 5


def test_timeline_records_every_request(api, send, clock):
    """timeline() has (seconds since start, status, ids in body) per request."""
    send(api, vec(1, 2))
    clock.advance(1.5)
    send(api, vec(3), key=None)
    assert api.timeline() == [(0.0, 200, 2), (1.5, 401, 1)]


def test_reset_forgets_everything_but_the_config(make_api, send):
    """reset() empties the ledger, the script and the revocation, and keeps the config."""
    api = make_api(max_batch=5)
    send(api, vec(1))
    api.script(["500_before"])
    api.revoke_key()
    api.reset()
    assert api.ledger().requests == 0
    assert api.pending_script() == []
    answer = send(api, vec(1))
    assert answer.status == 200
    assert answer.deleted == vec(1)
    assert api.config.max_batch == 5


# --- the rate limit -----------------------------------------------------------------


def test_empty_bucket_answers_429_with_retry_after(make_api, send):
    """Past the burst a request is 429 RATE_LIMIT_EXCEEDED with Retry-After in seconds."""
    api = make_api(rate=2, burst=1)
    assert send(api, vec(1)).status == 200
    answer = send(api, vec(2))
    assert (answer.status, answer.code) == (429, "RATE_LIMIT_EXCEEDED")
    assert answer.headers["Retry-After"] == "1"  # 0.5 s to the next token, rounded up
    assert not api.is_deleted(owned_id(2))


def test_retry_after_is_the_ceiling_of_the_wait(make_api, send, clock):
    """Retry-After is ceil(seconds until a token), here 4 s at 0.25 req/s."""
    api = make_api(rate=0.25, burst=1)
    send(api, vec(1))
    assert send(api, vec(2)).headers["Retry-After"] == "4"
    clock.advance(2.5)
    assert send(api, vec(2)).headers["Retry-After"] == "2"


def test_a_429_costs_no_token(make_api, send, clock):
    """Refused requests do not drain the bucket: the token arrives on time."""
    api = make_api(rate=1, burst=1)
    send(api, vec(1))
    clock.advance(0.5)
    assert send(api, vec(2)).status == 429
    clock.advance(0.5)
    assert send(api, vec(2)).status == 200


def test_bucket_refills_at_the_rate(make_api, send, clock):
    """A full bucket lets `burst` through, then one per 1/rate seconds."""
    api = make_api(rate=10, burst=5)
    assert [send(api, vec(i)).status for i in range(6)] == [200] * 5 + [429]
    clock.advance(0.1)
    assert [send(api, vec(i)).status for i in range(6, 8)] == [200, 429]


def test_default_burst_is_a_tenth_of_a_second_of_rate(make_api, send):
    """Without burst, rate=50 lets 5 requests through at once."""
    api = make_api(rate=50)
    assert [send(api, vec(i)).status for i in range(6)] == [200] * 5 + [429]


def test_auth_is_checked_before_the_rate_limit(make_api, send):
    """A bad key gets 401 even when the bucket is empty, and takes no token."""
    api = make_api(rate=1, burst=1)
    assert send(api, vec(1), key="bad").status == 401
    assert send(api, vec(1)).status == 200
    assert send(api, vec(2), key="bad").status == 401


def test_rate_limit_is_checked_before_the_body(make_api, send):
    """With the bucket empty a malformed body gets 429, not 400."""
    api = make_api(rate=1, burst=1)
    send(api, vec(1))
    assert send(api, body=b"{}").status == 429


def test_set_rate_changes_the_limit_mid_run(api, send, clock):
    """set_rate() limits an unlimited server, and None lifts the limit again."""
    assert all(send(api, vec(i)).status == 200 for i in range(20))
    api.set_rate(1)
    assert [send(api, vec(i)).status for i in range(20, 22)] == [200, 429]
    api.set_rate(None)
    assert send(api, vec(22)).status == 200


def test_retry_after_as_http_date(make_api, send):
    """retry_after_format=http-date sends the instant to retry at, rounded up."""
    api = make_api(rate=0.5, burst=1, retry_after_format="http-date")
    send(api, vec(1))
    when = parsedate_to_datetime(send(api, vec(2)).headers["Retry-After"])
    assert when == WALL_NOW + timedelta(seconds=2)


def test_rate_headers_none_sends_no_hint(make_api, send):
    """rate_headers=none: a 429 with no Retry-After nor quota headers."""
    api = make_api(rate=1, burst=1, rate_headers="none")
    send(api, vec(1))
    answer = send(api, vec(2))
    assert answer.status == 429
    assert answer.headers == {}


def test_x_ratelimit_headers_on_every_response(make_api, send, clock):
    """rate_headers=x-ratelimit: limit, remaining, seconds to full on every answer."""
    api = make_api(rate=10, burst=2, rate_headers="x-ratelimit")
    first = send(api, vec(1)).headers
    assert first == {
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "1",
        "X-RateLimit-Reset": "1",
    }
    send(api, vec(2))
    refused = send(api, vec(3)).headers
    assert refused["Retry-After"] == "1"
    assert refused["X-RateLimit-Remaining"] == "0"
    clock.advance(1)
    assert send(api, vec(4), key=None).headers["X-RateLimit-Remaining"] == "2"


def test_ietf_headers_on_every_response(make_api, send):
    """rate_headers=ietf: RateLimit-Policy and RateLimit in the draft's syntax."""
    api = make_api(rate=20, burst=3, rate_headers="ietf")
    headers = send(api, vec(1)).headers
    assert headers == {
        "RateLimit-Policy": '"default";q=20;w=1',
        "RateLimit": '"default";r=2;t=1',
    }
    send(api, vec(2))
    send(api, vec(3))
    refused = send(api, vec(4)).headers
    assert refused["RateLimit"] == '"default";r=0;t=1'
    assert refused["Retry-After"] == "1"


# --- scripted and random faults -----------------------------------------------------


def test_scripted_faults_apply_to_the_next_requests_in_order(api, send):
    """script() faults are taken one per request, in order, then the server behaves."""
    api.script(["500_before", "ok", "500_after"])
    statuses = [send(api, vec(i)).status for i in range(4)]
    assert statuses == [500, 200, 500, 200]
    assert api.pending_script() == []


def test_500_before_deletes_nothing(api, send):
    """500_before answers PROCESSING_ERROR and deletes nothing."""
    api.script(["500_before"])
    answer = send(api, vec(1))
    assert (answer.status, answer.code) == (500, "PROCESSING_ERROR")
    assert not api.is_deleted(owned_id(1))


def test_500_after_really_deletes(api, send):
    """500_after answers PROCESSING_ERROR but the ids are gone."""
    api.script(["500_after"])
    answer = send(api, vec(1, 2))
    assert (answer.status, answer.code) == (500, "PROCESSING_ERROR")
    assert api.deleted_ids() == vec(1, 2)
    assert send(api, vec(1)).failed == {owned_id(1): "Media not found"}


def test_scripted_auth_and_rate_faults(api, send):
    """Scripted 401, 403 and 429 answer as their real counterparts and delete nothing."""
    api.script(["401", "403", "429"])
    answers = [send(api, vec(1)) for _ in range(3)]
    assert [(a.status, a.code) for a in answers] == [
        (401, "INVALID_API_KEY"),
        (403, "INSUFFICIENT_PERMISSIONS"),
        (429, "RATE_LIMIT_EXCEEDED"),
    ]
    assert answers[2].headers["Retry-After"] == "1"
    assert api.ledger().deleted == 0


def test_a_scripted_429_costs_no_token(make_api, send):
    """A scripted 429 leaves the bucket alone, like a real one."""
    api = make_api(rate=1, burst=1)
    api.script(["429"])
    assert [send(api, vec(i)).status for i in range(3)] == [429, 200, 429]


def test_a_scripted_fault_waits_for_a_request_reaching_its_stage(api, send):
    """A request refused earlier (401, 400) does not use up a scripted 500_after."""
    api.script(["500_after"])
    assert send(api, vec(1), key=None).status == 401
    assert send(api, body=b"{}").status == 400
    assert api.pending_script() == ["500_after"]
    assert send(api, vec(1)).status == 500


def test_script_rejects_unknown_fault_names(api):
    """An unknown fault name is a ValueError and queues nothing."""
    with pytest.raises(ValueError, match="unknown faults"):
        api.script(["500_before", "explode"])
    assert api.pending_script() == []


def test_slow_after_deletes_then_answers_late(make_api, send):
    """slow_after deletes, then asks for slow_ms of delay before the 200."""
    api = make_api(slow_ms=5000, latency_ms=20)
    api.script(["slow_after"])
    answer = send(api, vec(1))
    assert answer.status == 200
    assert answer.reply.delay_s == pytest.approx(5.02)
    assert api.is_deleted(owned_id(1))


def test_garbage_is_a_200_that_is_not_json(api, send):
    """garbage deletes, then answers 200 with an unparseable body."""
    api.script(["garbage"])
    answer = send(api, vec(1))
    assert answer.status == 200
    assert answer.body is None
    assert answer.reply.body.startswith(b'{"success":true')
    assert api.is_deleted(owned_id(1))


def test_reset_drops_the_connection_after_deleting(api, send):
    """reset deletes, then asks for the connection to be dropped unanswered."""
    api.script(["reset"])
    answer = send(api, vec(1))
    assert answer.reply.drop
    assert api.is_deleted(owned_id(1))
    assert api.ledger().status_counts == {0: 1}


def test_lie_missing_leaves_a_deleted_id_out_of_both_lists(api, send):
    """lie_missing: one requested id is in neither list, yet it is deleted."""
    api.script(["lie_missing"])
    answer = send(api, vec(1, 2, 3))
    listed = set(answer.deleted) | set(answer.failed)
    (hidden,) = set(vec(1, 2, 3)) - listed
    assert api.is_deleted(hidden)
    assert answer.body["data"]["deleted"]["count"] == 2


def test_lie_both_lists_a_deleted_id_as_failed_too(api, send):
    """lie_both: one deleted id is in both lists."""
    api.script(["lie_both"])
    answer = send(api, vec(1, 2, 3))
    assert answer.deleted == vec(1, 2, 3)
    (both,) = answer.failed
    assert both in answer.deleted
    assert api.is_deleted(both)


def test_lie_unrequested_claims_an_id_that_was_not_requested(api, send):
    """lie_unrequested: deleted.media_ids has an id not requested, and not deleted."""
    api.script(["lie_unrequested"])
    answer = send(api, vec(1, 2))
    (extra,) = set(answer.deleted) - set(vec(1, 2))
    assert not api.is_deleted(extra)
    assert api.ledger().deleted == 2


def test_lie_counts_disagree_with_the_lists(api, send):
    """lie_counts: both counts differ from the lengths of their lists."""
    api.script(["lie_counts"])
    data = send(api, [*vec(1, 2), "unknown"]).body["data"]
    assert data["deleted"]["count"] != len(data["deleted"]["media_ids"])
    assert data["failed"]["count"] != len(data["failed"]["media_ids"])
    assert api.ledger().deleted == 2


def test_random_faults_follow_their_probabilities(make_api, send):
    """A fault with probability 1 strikes every request."""
    api = make_api(p_500_after=1.0)
    assert {send(api, vec(i)).status for i in range(10)} == {500}
    assert api.ledger().deleted == 10


def test_seeded_random_faults_are_reproducible(make_api, send):
    """Two servers with the same seed fail the same requests."""

    def statuses(api: FakeApi) -> list[int]:
        return [send(api, vec(i)).status for i in range(40)]

    first = statuses(make_api(p_500_before=0.3, seed=11))
    second = statuses(make_api(p_500_before=0.3, seed=11))
    assert first == second
    assert set(first) == {200, 500}


def test_scripted_ok_suppresses_random_faults(make_api, send):
    """A scripted "ok" request escapes even a certain random fault."""
    api = make_api(p_500_before=1.0)
    api.script(["ok"])
    assert [send(api, vec(i)).status for i in range(2)] == [200, 500]


def test_latency_jitter_stays_within_bounds(make_api, send):
    """Delay is latency_ms +- jitter, never negative."""
    api = make_api(latency_ms=10, latency_jitter_ms=20)
    delays = [send(api, vec(i)).reply.delay_s for i in range(50)]
    assert all(0.0 <= delay <= 0.030 for delay in delays)
    assert 0.0 in delays


def test_update_config_is_validated(api):
    """A bad partial config change raises and leaves the config as it was."""
    with pytest.raises(ValidationError):
        api.update_config({"rate": -1})
    with pytest.raises(ValidationError):
        api.update_config({"rat": 5})
    assert api.config.rate is None


# --- accounting invariants ----------------------------------------------------------

_ids = st.one_of(
    st.integers(0, 30).map(owned_id),
    st.integers(0, 12).map(foreign_id),
    st.sampled_from(["vec-x", "unknown", owned_id(5000)]),
)


# make_api is a factory: each example builds its own FakeApi, so sharing it is sound.
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(_ids, min_size=1, max_size=12), min_size=1, max_size=8))
def test_honest_answers_partition_the_request_and_match_the_ledger(make_api, send, batches):
    """Each 200 lists every unique requested id exactly once; the ledger adds them up."""
    api = make_api()
    deleted: list[str] = []
    hd_vectors = 0
    for ids in batches:
        answer = send(api, ids)
        data = answer.body["data"]
        assert sorted(answer.deleted + list(answer.failed)) == sorted(set(ids))
        assert data["deleted"]["count"] == len(answer.deleted)
        deleted += answer.deleted
        hd_vectors += data["deleted"]["hd_vectors"]
    ledger = api.ledger()
    assert sorted(deleted) == ledger.sorted_ids()
    assert ledger.hd_vectors == hd_vectors
    assert ledger.ld_vectors == ledger.deleted
