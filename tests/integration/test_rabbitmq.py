# mypy: disable-error-code="no-untyped-call"
"""What our RabbitMQ queue arguments do on a real RabbitMQ (TEST_AMQP_URL): a message
delivered too often is dead-lettered, never dropped; the depth gauge reads it there.

The pipeline itself runs on RabbitMQ in every test of this tier (see conftest.py)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from kombu.connection import Connection
from kombu.entity import Queue
from kombu.messaging import Producer

from tests.helpers import wait_until
from tests.services import AMQP_URL
from worker.broker import amqp_config, amqp_queue_depths, declare_dead_letter_queue
from worker.settings import load_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def rabbit() -> Iterator[Connection]:
    """A connection to the test RabbitMQ (skipped without one, except in CI)."""
    conn = Connection(AMQP_URL, connect_timeout=3)
    try:
        conn.ensure_connection(max_retries=1)
    except Exception as exc:
        conn.release()
        if os.environ.get("CI"):
            pytest.fail(f"CI needs RabbitMQ at {AMQP_URL}: {exc}")
        pytest.skip(f"no RabbitMQ at {AMQP_URL}")
    yield conn
    conn.release()


def test_a_message_delivered_past_the_limit_is_dead_lettered_not_dropped(
    rabbit: Connection,
) -> None:
    """Our queue arguments, delivery limit 2: a message given back again and again (a
    worker killed each time it holds it) is delivered 3 times, then it is in the
    dead-letter queue, intact."""
    name = f"wp-test-{uuid.uuid4().hex[:8]}"
    dead = f"{name}.dead"
    config = amqp_config(load_settings(broker_delivery_limit=2), [name], dead)
    [queue] = config["task_queues"]
    channel = rabbit.channel()
    try:
        declare_dead_letter_queue(rabbit, dead)
        bound = queue(channel)
        bound.declare()
        Producer(channel).publish(
            {"args": ["ticket"]}, exchange=queue.exchange, routing_key=name, declare=[]
        )
        deliveries = 0

        def dead_lettered() -> dict[str, int] | None:
            nonlocal deliveries
            message = bound.get(no_ack=False)
            if message is not None:  # what a worker killed while holding it gives back
                deliveries += 1
                message.requeue()
            depths = amqp_queue_depths(rabbit, [name, dead])
            return depths if depths[dead] else None

        depths = wait_until(dead_lettered, timeout=15, interval=0.05, what="the dead letter")
        assert deliveries == 3  # RabbitMQ counts returns: the limit's 2, then one too many
        assert depths == {name: 0, dead: 1}
        letter = Queue(dead)(channel).get(no_ack=True)
        assert letter is not None
        assert letter.payload == {"args": ["ticket"]}
    finally:
        for q in (name, dead):
            channel.queue_delete(q)
        channel.close()
