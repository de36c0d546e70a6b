"""worker/logs.py: one configuration for structlog and the stdlib (Celery, httpx), the
secret scrubber on both, and the batch context every line of a run carries."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog

from worker import logs
from worker.logs import MASK, batch_context, configure_logging, register_secret

BATCH_KEYS = {"job_id", "batch", "attempt"}


@pytest.fixture
def log_stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """configure_logging(json=True) into a buffer; structlog, the root logger and the
    secrets are restored afterwards."""
    monkeypatch.setattr(logs, "_SECRETS", set())
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in logs.QUIET_LOGGERS}
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    yield stream
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lvl in quiet.items():
        logging.getLogger(name).setLevel(lvl)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_a_stdlib_record_holding_a_registered_secret_is_masked(
    log_stream: io.StringIO, api_key: str
) -> None:
    """A Celery-style stdlib line with the key in its args or traceback prints the mask."""
    register_secret(api_key)
    logger = logging.getLogger("celery.worker.strategy")
    logger.warning("Received task with header X-Api-Key: %s", api_key)
    try:
        raise RuntimeError(f"rejected key {api_key}")
    except RuntimeError:
        logger.exception("task failed")
    text = log_stream.getvalue()
    assert api_key not in text
    warning, error = lines(log_stream)
    assert warning["event"] == f"Received task with header X-Api-Key: {MASK}"
    assert warning["logger"] == "celery.worker.strategy"
    assert warning["level"] == "warning"
    assert MASK in error["exception"]


def test_stdlib_and_structlog_lines_render_alike_as_json(log_stream: io.StringIO) -> None:
    """Both kinds of line are JSON objects with event, level and timestamp."""
    structlog.get_logger("wickson_purge.test").info("ours", n=1)
    logging.getLogger("kombu").info("theirs")
    ours, theirs = lines(log_stream)
    for line in (ours, theirs):
        assert {"event", "level", "timestamp"} <= set(line)
    assert ours["n"] == 1
    assert theirs["logger"] == "kombu"


@pytest.mark.parametrize("name", ["httpx", "celery.worker.strategy", "celery.app.trace"])
def test_per_request_and_per_message_lines_stay_quiet_at_info(
    log_stream: io.StringIO, name: str
) -> None:
    """httpx's and Celery's line per request or message is not logged at INFO (batch.run
    says it per run, with job and batch); their warnings are."""
    logging.getLogger(name).info("HTTP Request: DELETE /v1/media/batch 200")
    logging.getLogger(name).warning("a warning still shows")
    assert [line["event"] for line in lines(log_stream)] == ["a warning still shows"]


def test_every_line_of_a_run_carries_job_batch_attempt_and_operation_id(
    log_stream: io.StringIO, make_job, make_run, wickson, ids
) -> None:
    """Inside batch_context, the run's own lines and a library's (httpx) carry job_id,
    batch, attempt, and the API operation id once an answer gave one."""
    job_id = make_job(ids(10))
    api = wickson(existing=ids(10))
    library = logging.getLogger("httpx")

    def logged_answer(request: httpx.Request) -> httpx.Response:
        library.warning("slow answer")
        return api.answer(request)

    api.then(
        wickson.error(500, "PROCESSING_ERROR"),
        lambda request: api.success(ids(10)[:5], {}),  # 5 unaccounted: sent again
        logged_answer,
    )
    run = make_run(api)
    with batch_context(run):
        run.run()
    found = lines(log_stream)
    assert {line["event"] for line in found} >= {
        "batch.retry",
        "batch.answer_anomalies",
        "slow answer",
        "batch.run",
    }
    for line in found:
        assert set(line) >= BATCH_KEYS, line
        assert (line["job_id"], line["batch"]) == (job_id, 0)
    after_answer = [line for line in found if line["event"] in ("slow answer", "batch.run")]
    assert all(line["operation_id"].startswith("batch_delete_") for line in after_answer)
    assert found[-1]["attempt"] == 2  # the 500 and the incomplete answer


def test_outside_a_run_lines_carry_no_batch_context(log_stream: io.StringIO) -> None:
    """The context ends with the run: later lines get no stale job or batch."""
    structlog.get_logger().info("later")
    assert not BATCH_KEYS & set(lines(log_stream)[0])


def test_configuring_twice_keeps_one_handler(log_stream: io.StringIO) -> None:
    """configure_logging replaces its own root handler (Celery calls it again)."""
    configure_logging(json=True, stream=log_stream)
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "wickson-purge"]
    assert len(ours) == 1
    logging.getLogger("celery").warning("once")
    assert [line["event"] for line in lines(log_stream)] == ["once"]
