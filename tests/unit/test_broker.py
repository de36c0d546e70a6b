"""The broker setting and what each broker gets from Celery (worker/broker.py).

Both brokers' real behaviour (deliveries, restarts, kills) is in tests/integration and
tests/faults, run once per broker; these check the configuration itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import fakeredis
import pytest

from tests.unit.test_settings import refusal
from worker.broker import BrokerReading, read_redis_broker
from worker.celery import CONTROL_QUEUE, DEAD_QUEUE, QUEUE, celery_config
from worker.keys import Keys
from worker.metrics import FleetCollector
from worker.ratelimit import FleetLimiter
from worker.settings import load_settings
from worker.store import JobStore
from worker.tasks import wait_for_store

AMQP = "amqp://guest:guest@127.0.0.1:5672//"


def limiter(client: fakeredis.FakeRedis) -> Callable[[str], FleetLimiter]:
    return lambda alias: FleetLimiter(client, Keys().limiter(alias), rate=25.0)


def test_the_broker_is_redis_url_unless_wickson_broker_url_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing changes for today's users: no WICKSON_BROKER_URL, the broker is REDIS_URL;
    an empty value (compose's `${WICKSON_BROKER_URL:-}`) counts as unset."""
    monkeypatch.setenv("REDIS_URL", "redis://store:6379/1")
    settings = load_settings()
    assert (settings.broker, settings.broker_is_amqp) == ("redis://store:6379/1", False)
    monkeypatch.setenv("WICKSON_BROKER_URL", "")
    assert load_settings().broker == "redis://store:6379/1"
    monkeypatch.setenv("WICKSON_BROKER_URL", AMQP)
    settings = load_settings()
    assert (settings.broker, settings.broker_is_amqp) == (AMQP, True)
    assert settings.redis_url == "redis://store:6379/1"  # the store stays Redis


def test_a_bad_broker_url_is_refused_naming_the_variable_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scheme Celery should not get here (sqs, kafka, a typo) is refused at start-up."""
    message = refusal(monkeypatch, WICKSON_BROKER_URL="amqq://admin:s3cretpw@rabbit:5672//")
    assert "WICKSON_BROKER_URL" in message
    assert "s3cretpw" not in message
    assert "rabbit:5672" in message


def test_a_consumer_timeout_shorter_than_twice_a_drain_hold_is_refused_on_rabbitmq(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RabbitMQ closes the channel of a delivery held past consumer_timeout: a drain holds
    one for a slice plus a wait and a request at most (40 + 5 + 15 here), and twice that
    must fit (the visibility timeout's rule, for the other broker)."""
    monkeypatch.setenv("WICKSON_BROKER_URL", AMQP)
    message = refusal(
        monkeypatch,
        WICKSON_SLICE_S="40",
        WICKSON_BROKER_CONSUMER_TIMEOUT_S="119",
    )
    assert "WICKSON_BROKER_CONSUMER_TIMEOUT_S=119" in message
    monkeypatch.setenv("WICKSON_BROKER_CONSUMER_TIMEOUT_S", "120")
    assert load_settings().broker_consumer_timeout_s == 120
    # The Redis broker has no consumer timeout: the same values pass there.
    monkeypatch.delenv("WICKSON_BROKER_URL")
    monkeypatch.setenv("WICKSON_BROKER_CONSUMER_TIMEOUT_S", "60")
    assert load_settings().broker == load_settings().redis_url


def test_rabbitmq_gets_quorum_queues_confirms_topic_exchanges_and_a_dead_letter_queue() -> None:
    """Quorum queues with our delivery limit, dead-lettering to DEAD_QUEUE; publisher
    confirms; topic exchanges (native delayed delivery needs them); no Redis options."""
    config = celery_config(load_settings(broker_url=AMQP, broker_delivery_limit=7))
    assert config["broker_url"] == AMQP
    assert [q.name for q in config["task_queues"]] == [CONTROL_QUEUE, QUEUE]
    for queue in config["task_queues"]:
        assert queue.durable
        assert queue.exchange.type == "topic"
        assert queue.routing_key == queue.name
        assert queue.queue_arguments == {
            "x-queue-type": "quorum",
            "x-delivery-limit": 7,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": DEAD_QUEUE,
        }
    assert config["broker_transport_options"] == {"confirm_publish": True}
    assert config["task_default_queue_type"] == "quorum"
    assert config["task_default_exchange_type"] == "topic"
    assert config["worker_detect_quorum_queues"] is True  # so Celery sets no global QoS
    assert "visibility_timeout" not in config


def test_redis_keeps_its_transport_options_and_plain_queues() -> None:
    """The Redis broker: control queue first (BRPOP order), visibility timeout, no quorum."""
    config = celery_config(load_settings(redis_url="redis://127.0.0.1:6379/0"))
    assert config["broker_url"] == "redis://127.0.0.1:6379/0"
    assert config["broker_transport_options"]["queue_order_strategy"] == "priority"
    assert all(not q.queue_arguments for q in config["task_queues"])
    assert "task_default_queue_type" not in config


def test_the_collector_reads_queues_from_the_broker_and_says_when_it_is_down(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    """Queue gauges come from the broker reader given; a broker that does not answer is
    `broker_up 0`, and the store's gauges are still exposed."""
    from tests.unit.test_metrics import exposition

    store = JobStore(fake_redis)
    broker = fakeredis.FakeRedis()
    broker.lpush(QUEUE, "m1")
    up = FleetCollector(store, limiter(fake_redis), lambda: read_redis_broker(broker, [QUEUE]))
    found = exposition(up)
    assert found["wickson_purge_queue_messages"] == {(("queue", QUEUE),): 1}
    assert found["wickson_purge_broker_up"] == {(): 1}

    def unreachable() -> BrokerReading:
        raise ConnectionRefusedError("broker down")

    down = exposition(FleetCollector(store, limiter(fake_redis), unreachable))
    assert down["wickson_purge_broker_up"] == {(): 0}
    assert "wickson_purge_queue_messages" not in down
    assert down["wickson_purge_store_up"] == {(): 1}


def test_rabbitmq_reports_no_unacked_gauge_rather_than_a_wrong_zero(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    """RabbitMQ tells unacked counts only through its management API: no sample at all."""
    from tests.unit.test_metrics import exposition

    store = JobStore(fake_redis)
    reading = BrokerReading({QUEUE: 0, DEAD_QUEUE: 2}, None)
    found = exposition(FleetCollector(store, limiter(fake_redis), lambda: reading))
    assert "wickson_purge_queue_unacked_messages" not in found
    assert found["wickson_purge_queue_messages"][(("queue", DEAD_QUEUE),)] == 2


def test_a_task_that_found_redis_away_waits_for_it_before_requeueing() -> None:
    """Requeued at once, a message would burn RabbitMQ's delivery limit in milliseconds:
    the wait returns as soon as Redis answers, or when its time is up."""
    server = fakeredis.FakeServer()
    server.connected = False
    client = fakeredis.FakeRedis(server=server)
    started = time.monotonic()
    assert wait_for_store(client, 0.3) is False
    assert time.monotonic() - started >= 0.3
    threading.Timer(0.2, lambda: setattr(server, "connected", True)).start()
    started = time.monotonic()
    assert wait_for_store(client, 10) is True
    assert 0.2 <= time.monotonic() - started < 5


def test_wait_for_store_returns_at_once_when_redis_answers() -> None:
    started = time.monotonic()
    assert wait_for_store(fakeredis.FakeRedis(), 10)
    assert time.monotonic() - started < 0.1
