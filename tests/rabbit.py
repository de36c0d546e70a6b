"""A private RabbitMQ node for the fault tests: started, SIGKILLed and restarted by pid.

The shared node (TEST_AMQP_URL, 127.0.0.1:5672) is never touched: a PrivateRabbit has its
own AMQP and distribution ports, node name (wp<port>@localhost), data, logs, config, pid
file and Erlang cookie (its own HOME), all under one directory of the test's. No
rabbitmqctl: the node is ready when an AMQP connection as guest opens.

How it runs: `<home>/sbin/rabbitmq-server` (never the Debian wrapper /usr/sbin/rabbitmq-server,
which su's to the rabbitmq user as root and refuses other users), with
RABBITMQ_ALLOW_INPUT set so that the script execs erl in place instead of running it as a
child of a signal-forwarding shell, and `-noinput` given back to erl: the pid of the
Popen is beam.smp itself, in a session of its own. kill() SIGKILLs that process group;
epmd (`epmd -daemon`, its own session) is never killed, whoever started it.

Startup: RabbitMQ 3.10 puts every plugin's ebin on the code path and scans the loaded
applications at boot, so the node runs from a home of symlinks holding only the broker
and the applications it depends on (no plugin is enabled anyway); see `slim_home`.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import amqp  # type: ignore[import-untyped]
import pytest

from tests.helpers import wait_until

__all__ = ["PrivateRabbit", "private_rabbit", "rabbitmq_home"]

START_TIMEOUT_S = 60.0
"""Deadline for a node to answer AMQP: it takes 3-7 s here (2 shared cores)."""

STOP_TIMEOUT_S = 30.0
"""Deadline for a graceful stop (SIGTERM) before the node is SIGKILLed."""


def rabbitmq_home() -> Path | None:
    """The RabbitMQ installation: the directory holding sbin/rabbitmq-env and plugins/.

    TEST_RABBITMQ_HOME, else where rabbitmq-server on PATH really is, else Debian's
    /usr/lib/rabbitmq/bin (/usr/sbin/rabbitmq-server there is a wrapper, not the script).
    """
    candidates = []
    if env_home := os.environ.get("TEST_RABBITMQ_HOME"):
        candidates.append(Path(env_home) / "sbin" / "rabbitmq-server")
    if on_path := shutil.which("rabbitmq-server"):
        candidates.append(Path(on_path))
    candidates.append(Path("/usr/lib/rabbitmq/bin/rabbitmq-server"))
    for script in candidates:
        sbin = script.resolve().parent
        if (sbin / "rabbitmq-env").is_file() and (sbin.parent / "plugins").is_dir():
            return sbin.parent
    return None


def slim_home(home: Path, directory: Path) -> Path:
    """A RabbitMQ home of symlinks in `directory`: `home`'s scripts, and of its plugins/
    only `rabbit` and the applications it needs (from the .app files).

    rabbitmq-server puts every directory of <home>/plugins on the code path (ERL_LIBS), and
    Erlang looks for each module it loads in every one of them; with the 60-odd plugins of
    a full install, a boot takes 1-2 s longer here. Returns `home` itself when its plugins
    are packed as .ez archives or `rabbit` is not found.
    """
    apps: dict[str, Path] = {}
    for entry in (home / "plugins").iterdir():
        if entry.suffix == ".ez":
            return home
        app_files = sorted((entry / "ebin").glob("*.app")) if entry.is_dir() else []
        if app_files:
            apps[app_files[0].stem] = entry
    if "rabbit" not in apps:
        return home
    needed: set[str] = set()
    todo = ["rabbit"]
    while todo:
        name = todo.pop()
        if name in needed or name not in apps:  # not a plugin: one of Erlang/OTP's
            continue
        needed.add(name)
        spec = (apps[name] / "ebin" / f"{name}.app").read_text(errors="replace")
        if match := re.search(r"\{\s*applications\s*,\s*\[([^\]]*)\]", spec):
            todo.extend(re.findall(r"[a-z][A-Za-z0-9_]*", match.group(1)))
    slim = directory / "rabbitmq-home"
    if not slim.exists():
        (slim / "plugins").mkdir(parents=True)
        (slim / "sbin").mkdir()
        for name in needed:
            (slim / "plugins" / apps[name].name).symlink_to(apps[name])
        for script in (home / "sbin").iterdir():
            (slim / "sbin" / script.name).symlink_to(script.resolve())
        if (home / "escript").is_dir():  # rabbitmqctl's, for a human debugging a node
            (slim / "escript").symlink_to((home / "escript").resolve())
    return slim


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(*taken: int) -> int:
    """A port nothing listens on 127.0.0.1, below the ephemeral range: no outgoing
    connection of this machine can take it while the node is down between a kill and
    its restart (which reuses it)."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(10000, low) if low > 11000 else 0
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise AssertionError("no free port for a private RabbitMQ node")


class PrivateRabbit:
    """A RabbitMQ node of this test's own on free ports (restartable, killable), by pid.

    `config` lines are appended to its rabbitmq.conf (e.g. "consumer_timeout = 5000").
    Its data (mnesia/, quorum queues' logs included) stays in `directory` across kill(),
    stop() and restart(); `log_path` is the node's log, `console.log` what it printed.
    """

    def __init__(self, directory: Path, *config: str, home: Path | None = None) -> None:
        found = home or rabbitmq_home()
        if found is None:
            raise RuntimeError("no RabbitMQ installation (rabbitmq-server) found")
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.dist_port = free_port(self.port)
        self.nodename = f"wp{self.port}@localhost"
        self.config = config
        self.home = slim_home(found, self.dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds: list[float] = []
        """How long each start() took, to the first AMQP connection."""
        self.pids: list[int] = []
        """The pid (beam.smp) of each start()."""
        self._console: IO[bytes] | None = None
        self._write_files()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    @property
    def pid(self) -> int | None:
        """The pid of the node's beam.smp while it runs (the Popen's own: see the module)."""
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    @property
    def log_path(self) -> Path:
        return self.dir / "log" / f"{self.nodename}.log"

    def _write_files(self) -> None:
        (self.dir / "home").mkdir(exist_ok=True)
        (self.dir / "log").mkdir(exist_ok=True)
        (self.dir / "mnesia").mkdir(exist_ok=True)
        (self.dir / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.1 = 127.0.0.1:{self.port}",
                    # guest may connect from loopback only (the default), and 127.0.0.1 is.
                    "loopback_users.guest = true",
                    "log.console = false",
                    "log.file.level = info",
                    *self.config,
                ]
            )
            + "\n"
        )
        (self.dir / "advanced.config").write_text("[].\n")  # an empty file does not parse
        (self.dir / "enabled_plugins").write_text("")  # no plugin (no management)
        (self.dir / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's

    def env(self) -> dict[str, str]:
        """The node's environment; rabbitmqctl needs the same HOME (its cookie) to talk
        to it: `rabbitmqctl -n <nodename> status` with this env."""
        # Not the caller's RabbitMQ/Erlang settings (ERL_FLAGS, ERL_LIBS, ...) nor what
        # makes rabbitmq-server behave as under systemd or detached.
        dropped = ("HOME", "NOTIFY_SOCKET", "detached")
        inherited = {
            k: v
            for k, v in os.environ.items()
            if k == "ERL_EPMD_PORT"
            or (not k.startswith(("RABBITMQ_", "ERL_")) and k not in dropped)
        }
        d = self.dir
        return inherited | {
            # Erlang creates the node's cookie (~/.erlang.cookie) here on the first start.
            "HOME": str(d / "home"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_SCRIPTS_DIR": str(self.home / "sbin"),
            "RABBITMQ_PLUGINS_DIR": str(self.home / "plugins"),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
            # exec erl in place (the Popen pid is beam.smp), without an Erlang shell.
            "RABBITMQ_ALLOW_INPUT": "true",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                "-noinput -kernel inet_dist_use_interface {127,0,0,1}"
            ),
            # Only if no epmd runs yet: the one this node starts listens on loopback only.
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def start(self, timeout: float = START_TIMEOUT_S) -> PrivateRabbit:
        """Start the node (with the data it has) and wait until it answers AMQP."""
        if self.pid is not None:
            raise RuntimeError(f"{self.nodename} is already running (pid {self.pid})")
        self._console = (self.dir / "console.log").open("ab")
        began = time.monotonic()
        self.proc = subprocess.Popen(
            [str(self.home / "sbin" / "rabbitmq-server")],
            cwd=self.dir,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pids.append(self.proc.pid)
        try:
            wait_until(self._answers, timeout=timeout, interval=0.1, what=self.nodename)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.tail()}") from None
        self.start_seconds.append(time.monotonic() - began)
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"rabbitmq-server {self.nodename} exited {self.proc.returncode}")
        conn = amqp.Connection(f"127.0.0.1:{self.port}", connect_timeout=2)
        try:
            conn.connect()
        except (OSError, amqp.exceptions.AMQPError):
            conn.collect()
            return False
        conn.close()
        return True

    def quorum_queue_on_disk(self, queue: str, vhost: str = "/") -> bool:
        """Whether the quorum queue's Ra server is registered on disk, so that the queue
        comes back after a kill -9.

        RabbitMQ 3.10 (Ra 2.2) registers a new quorum queue's Ra server in names.dets, a
        DETS table saved after 500 ms without writes: a node killed within about a second
        of the declaration restarts the queue as a new, empty Ra server that never elects
        a leader (every basic.get or consume on it times out), its messages stranded in
        the old server's directory. Wait for this before killing a node on purpose.
        """
        names = self.dir / "mnesia" / self.nodename / "quorum" / self.nodename / "names.dets"
        ra_name = vhost.replace("/", "%2F") + "_" + queue
        try:
            return ra_name.encode() in names.read_bytes()
        except FileNotFoundError:
            return False

    def tail(self, lines: int = 40) -> str:
        """The end of the node's log and console output, for failure messages."""
        out = []
        for path in (self.dir / "console.log", self.log_path):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    def kill(self) -> None:
        """SIGKILL beam.smp and whatever of its process group is left: no shutdown, the
        node keeps only what it had fsynced (a confirmed message on a quorum queue)."""
        if self.proc is not None and self.proc.poll() is None:
            # Not reaped yet, so the group (led by this pid, in its own session) is ours.
            # beam's helpers (erl_child_setup, inet_gethost) run in sessions of their own
            # and exit when beam's end of their pipes closes.
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._close_console()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """A graceful stop (SIGTERM: RabbitMQ shuts down and exits), SIGKILL at `timeout`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_console()

    def restart(self, timeout: float = START_TIMEOUT_S) -> PrivateRabbit:
        """Start again on the same ports with the same data (stopping it first if it runs)."""
        self.stop()
        return self.start(timeout)

    def _close_console(self) -> None:
        if self._console is not None:
            self._console.close()
            self._console = None


@pytest.fixture
def private_rabbit(tmp_path: Path) -> Iterator[Callable[..., PrivateRabbit]]:
    """Start private RabbitMQ nodes (extra rabbitmq.conf lines as arguments); each is
    SIGKILLed by its pid at the end (a graceful stop takes a second more, for data that
    is thrown away). Skipped without RabbitMQ, except in CI."""
    home = rabbitmq_home()
    if home is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs RabbitMQ (rabbitmq-server)")
        pytest.skip("no RabbitMQ (rabbitmq-server)")
    started: list[PrivateRabbit] = []

    def start(*config: str) -> PrivateRabbit:
        node = PrivateRabbit(tmp_path / f"rabbit-{len(started)}", *config, home=home)
        started.append(node)  # before start(): a node that never answers is killed too
        return node.start()

    yield start
    for node in started:
        node.kill()
