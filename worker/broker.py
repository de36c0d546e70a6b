"""What differs between the two brokers we support, Redis and RabbitMQ, in one place.

The broker only wakes workers (drain messages, beat's tasks): the work, its leases and
its outcomes are in the store's Redis, whichever broker carries the messages. What a
broker must still get right, and how each one does it:

- **Durability.** Redis: kombu keeps a delivered message in its ``unacked`` hash and
  restores it after the visibility timeout. RabbitMQ: quorum queues (replicated, on
  disk), publisher confirms, and the delivery returns to the queue when a consumer's
  connection dies.
- **Poison.** A message redelivered again and again (its worker killed each time):
  RabbitMQ dead-letters it to `DEAD_QUEUE` once it came back unacked more than
  ``WICKSON_BROKER_DELIVERY_LIMIT`` times; the store's crash count ends the batch itself
  (both brokers).
- **Gauges.** Messages waiting per queue, from the broker in use; messages delivered
  and not yet acked only where the broker can tell (Redis: kombu's hash; RabbitMQ
  shows it only through its management API, which we do not require).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import redis
from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from worker.settings import Settings

UNACKED_KEY = "unacked"
"""kombu's Redis transport: the hash of messages delivered and not yet acked."""
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)
"""kombu's Redis transport keeps a queue as one list per priority step: `name` for the
default step 0, `name + SEP + step` for the others."""


def redis_config(settings: Settings, queues: Iterable[str]) -> dict[str, Any]:
    """Celery settings of a Redis broker."""
    transport = {
        "visibility_timeout": settings.visibility_timeout_s,
        # kombu sweeps for abandoned messages every interval x throttle seconds (10 x 10
        # by default): one cheap ZRANGEBYSCORE per interval keeps recovery near the
        # visibility timeout itself.
        "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 6)),
        "unacked_restore_throttle": 1,
        # BRPOP the queues in the order given: beat's control tasks before drains.
        "queue_order_strategy": "priority",
    }
    return {
        "broker_transport_options": transport,
        "visibility_timeout": settings.visibility_timeout_s,
        # Exchange and routing key named like the queue, as Celery creates them on Redis.
        "task_queues": [
            Queue(name, Exchange(name), routing_key=name)  # type: ignore[no-untyped-call]
            for name in queues
        ],
    }


def amqp_config(settings: Settings, queues: Iterable[str], dead_queue: str) -> dict[str, Any]:
    """Celery settings of a RabbitMQ broker: quorum queues that dead-letter to `dead_queue`."""
    # A message given back more than `broker_delivery_limit` times (a worker killed again
    # and again while holding it) goes to `dead_queue` through the default exchange, not
    # to nowhere (RabbitMQ 3.x has no limit by default; 4.x drops at 20 without a DLX).
    arguments = {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.broker_delivery_limit,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead_queue,
    }
    return {
        # Publisher confirms: a publish returns once the broker has the message.
        "broker_transport_options": {"confirm_publish": True},
        # Celery's native delayed delivery (countdowns on quorum queues) binds the queues
        # to its topic exchanges: only a topic exchange can forward to them.
        "task_default_exchange_type": "topic",
        "task_default_queue_type": "quorum",
        "broker_native_delayed_delivery_queue_type": "quorum",
        # Quorum queues refuse a global QoS: Celery then sets a per-consumer prefetch.
        "worker_detect_quorum_queues": True,
        "task_queues": [
            Queue(  # type: ignore[no-untyped-call]
                name,
                Exchange(name, type="topic"),  # type: ignore[no-untyped-call]
                routing_key=name,
                queue_arguments=arguments,
                durable=True,
            )
            for name in queues
        ],
    }


def declare_dead_letter_queue(connection: Connection, name: str) -> None:
    """Declare RabbitMQ's queue of messages delivered too often (nobody consumes it:
    an operator reads it, the alert `WicksonPurgeDeadLetters` says it is not empty)."""
    queue = Queue(name, queue_arguments={"x-queue-type": "quorum"}, durable=True)  # type: ignore[no-untyped-call]
    queue(connection.default_channel).declare()  # type: ignore[no-untyped-call]


class BrokerReading(NamedTuple):
    """What a scrape reads from the broker."""

    waiting: dict[str, int]
    """Messages waiting per queue."""
    unacked: int | None
    """Messages delivered and not acked, fleet-wide; None: this broker does not say."""


def read_broker(settings: Settings, queues: Iterable[str]) -> BrokerReading:
    """Queue depths from the broker in use (a few round trips)."""
    names = sorted(set(queues))
    if settings.broker_is_amqp:
        with Connection(settings.broker, connect_timeout=3) as conn:  # type: ignore[no-untyped-call]
            return BrokerReading(amqp_queue_depths(conn, names), None)
    client = redis.Redis.from_url(settings.broker, socket_timeout=3, socket_connect_timeout=3)
    try:
        return read_redis_broker(client, names)
    finally:
        client.close()


def read_redis_broker(client: redis.Redis, queues: Iterable[str]) -> BrokerReading:
    """Queue depths and unacked messages of a Redis broker."""
    return BrokerReading(redis_queue_depths(client, queues), int(client.hlen(UNACKED_KEY)))


def redis_queue_depths(client: redis.Redis, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting per queue (every priority list of it), in one round trip."""
    names = sorted(set(queues))
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.llen(name)
            for step in PRIORITY_STEPS:
                pipe.llen(f"{name}{PRIORITY_SEPARATOR}{step}")
        lengths = pipe.execute()
    per = 1 + len(PRIORITY_STEPS)
    return {name: sum(lengths[i * per : (i + 1) * per]) for i, name in enumerate(names)}


def amqp_queue_depths(connection: Connection, queues: Iterable[str]) -> dict[str, int]:
    """Messages ready per queue (a passive declare each; a queue not declared yet: 0)."""
    depths: dict[str, int] = {}
    for name in queues:
        # A passive declare of a missing queue closes its channel: one channel each.
        channel = connection.channel()  # type: ignore[no-untyped-call]
        try:
            _, count, _ = channel.queue_declare(queue=name, passive=True)
            depths[name] = int(count)
        except connection.channel_errors:
            depths[name] = 0
        finally:
            channel.close()
    return depths
