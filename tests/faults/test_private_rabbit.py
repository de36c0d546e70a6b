# mypy: disable-error-code="no-untyped-call"
"""The private RabbitMQ node fixture (tests/rabbit.py): a node of the test's own that a
kill -9 stops for real, whose restart on the same port keeps what it had confirmed (a
persistent message on a durable quorum queue), and that is gone once the test ends."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kombu.connection import Connection
from kombu.entity import Queue
from kombu.message import Message
from kombu.messaging import Producer

from tests.helpers import wait_until
from tests.rabbit import *  # noqa: F403 (the private_rabbit fixture)
from tests.rabbit import PrivateRabbit

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUEUE = Queue(
    "wp-private-rabbit-test",
    routing_key="wp-private-rabbit-test",
    durable=True,
    queue_arguments={"x-queue-type": "quorum"},
)


def stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (state, ppid, ...); None: no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not)."""
    fields = stat(pid)
    return fields is not None and fields[0] != "Z"


def runs_node(pid: int, nodename: str) -> bool:
    """Whether `pid` is a live process of the node `nodename` (a reused pid is not)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return alive(pid) and f"RABBITMQ_NODENAME={nodename}".encode() in environ


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        fields = stat(int(entry.name))
        if fields is not None and fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def refuses(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def gone_after_teardown() -> Iterator[list[PrivateRabbit]]:
    """Nodes that must be gone once `private_rabbit` has torn down. A test requests this
    fixture before `private_rabbit`: pytest sets it up first, so tears it down last."""
    nodes: list[PrivateRabbit] = []
    yield nodes
    for node in nodes:
        for pid in node.pids:
            assert not runs_node(pid, node.nodename), f"{node.nodename} still runs (pid {pid})"
        assert refuses(node.port), f"something still answers on {node.nodename}'s port"


def test_a_confirmed_message_on_a_quorum_queue_survives_kill_9_and_restart(
    gone_after_teardown: list[PrivateRabbit],
    private_rabbit: Callable[..., PrivateRabbit],
) -> None:
    node = private_rabbit()
    gone_after_teardown.append(node)
    first = node.pid
    assert first is not None
    # The pid held is the node's beam.smp itself (rabbitmq-server exec'd erl in place).
    assert Path(f"/proc/{first}/exe").resolve().name == "beam.smp"
    assert (node.dir / "rabbitmq.pid").read_text().strip() == str(first)
    assert runs_node(first, node.nodename)

    with Connection(node.url, transport_options={"confirm_publish": True}) as conn:
        channel = conn.channel()
        QUEUE(channel).declare()
        # RabbitMQ 3.10 loses a quorum queue declared less than a second before a kill -9.
        wait_until(
            lambda: node.quorum_queue_on_disk(QUEUE.name), timeout=10, what="the queue on disk"
        )
        # With publisher confirms, publish returns once the broker confirmed the message:
        # for a quorum queue, once it is fsynced in the queue's log.
        Producer(channel).publish(
            {"ticket": "t-1"},
            routing_key=QUEUE.routing_key,
            delivery_mode="persistent",
            serializer="json",
            retry=False,
        )

    helpers = children(first)  # erl_child_setup: a session of its own, outside beam's group
    began = time.monotonic()
    node.kill()
    print(f"kill -9 took {time.monotonic() - began:.2f} s")
    assert not runs_node(first, node.nodename)
    assert refuses(node.port)
    wait_until(
        lambda: not any(alive(pid) for pid in helpers),
        timeout=10,
        what="beam.smp's helper processes to exit",
    )

    node.restart()
    second = node.pid
    assert second is not None
    assert second != first
    print(
        f"{node.nodename} started in {node.start_seconds[0]:.2f} s, "
        f"restarted after kill -9 in {node.start_seconds[1]:.2f} s"
    )

    with Connection(node.url) as conn:
        channel = conn.channel()
        # Until the queue's Ra server is leader again, its depth reads 0.
        wait_until(
            lambda: channel.queue_declare(QUEUE.name, passive=True).message_count == 1,
            timeout=30,
            what="the queue's depth to read 1 again",
        )
        bound = QUEUE(channel)
        message: Message | None = bound.get(no_ack=False)
        assert message is not None
        assert message.decode() == {"ticket": "t-1"}
        assert message.properties["delivery_mode"] == 2
        message.ack()
        assert bound.get(no_ack=False) is None
