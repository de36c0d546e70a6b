"""The services a benchmark run starts: Redis, the API stand-in, Celery workers.

Each is a subprocess on a free loopback port with its output in a log file; `stop()`
ends it by pid (and the children it forked, e.g. a prefork pool), nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TypeVar

import httpx
import redis

ROOT = Path(__file__).resolve().parents[2]
"""The repository root: workers run from here so `-A worker` and `-A ops.bench...` import."""

LOOPBACK = "127.0.0.1"
API_KEY = "test-key"
"""The stand-in's default key with delete capability (a test double's, never a real one)."""

T = TypeVar("T")


def exit_on_signals() -> None:
    """Turn SIGTERM and SIGINT into SystemExit, so the `finally` blocks stop every service.
    (A background job of a non-interactive shell starts with SIGINT ignored.)"""

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, leave)


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], T], *, timeout_s: float, what: str, every_s: float = 0.1) -> T:
    """Poll `condition` until it returns something truthy; RuntimeError at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


class Proc:
    """A subprocess this benchmark started, its stdout and stderr in `log_path`."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.popen = subprocess.Popen(
            list(argv), cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.pid = self.popen.pid
        self._signalled = False
        self._children: list[int] = []

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        """RuntimeError with the end of its log if the process has exited."""
        if not self.alive():
            tail = self.log_path.read_text(errors="replace")[-2000:]
            status = self.popen.returncode
            raise RuntimeError(f"{self.name} (pid {self.pid}) exited {status}:\n{tail}")

    def children(self) -> list[int]:
        """Pids of this process's direct children (a prefork pool's processes)."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        with contextlib.suppress(OSError):
            return [int(p) for p in path.read_text().split()]
        return []

    def cpu_s(self) -> float:
        """CPU seconds (user + system) used so far by the process and its live children."""
        return sum(_cpu_s(pid) for pid in [self.pid, *self.children()])

    def send(self, sig: int) -> None:
        """Send `sig` once (a second TERM would turn Celery's warm shutdown cold)."""
        if self.alive() and not self._signalled:
            self._signalled = True
            self._children = self.children()
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
        """Send `sig`, wait, then SIGKILL it and any children it left behind (by pid)."""
        children = self.children()
        if self.alive():
            self.send(sig)
        children = sorted(set(children) | set(self._children))
        if self.alive():
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        for pid in children:
            if _still_ours(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._log.close()


def _still_ours(pid: int) -> bool:
    """Whether `pid` still looks like one of our Python/Celery children, so that a pid
    recycled in the meantime is never signalled."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"celery" in cmdline or b"python" in cmdline


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (all processes, all cores):
    with our processes' share, it shows what else was running during a measurement."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """utime + stime of `pid` from /proc, in seconds (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


# -- Redis -------------------------------------------------------------------------------


def start_redis(log_dir: Path) -> tuple[Proc, str]:
    """A private, non-persistent redis-server on a free port; returns (proc, url)."""
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", LOOPBACK, "--save", "",
            "--appendonly", "no", "--maxmemory-policy", "noeviction",
            "--dir", str(log_dir)]  # fmt: skip
    proc = Proc("redis-server", argv, log_dir / "redis.log")
    url = f"redis://{LOOPBACK}:{port}/0"
    client = redis.Redis.from_url(url)

    def pong() -> bool:
        proc.check_alive()
        with contextlib.suppress(redis.ConnectionError):
            return bool(client.ping())
        return False

    wait_for(pong, timeout_s=10, what="redis-server to answer PING")
    client.close()
    return proc, url


# -- the API stand-in --------------------------------------------------------------------


def start_fake_api(log_dir: Path, **config: object) -> tuple[Proc, str]:
    """`python -m ops.fake_api` with these config fields (None: "none"); returns (proc, url)."""
    port = free_port()
    argv = [sys.executable, "-m", "ops.fake_api", "--host", LOOPBACK, "--port", str(port)]
    for name, value in config.items():
        argv += [f"--{name.replace('_', '-')}", "none" if value is None else str(value)]
    proc = Proc("fake-api", argv, log_dir / "fake-api.log", env=_clean_env())
    url = f"http://{LOOPBACK}:{port}"

    def serving() -> bool:
        proc.check_alive()
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{url}/_admin/config", timeout=1).status_code == 200
        return False

    wait_for(serving, timeout_s=20, what="the API stand-in to serve")
    return proc, url


# -- Celery workers ----------------------------------------------------------------------


def start_workers(
    app: str,
    *,
    count: int,
    concurrency: int,
    pool: str,
    env: dict[str, str],
    log_dir: Path,
    redis_url: str,
) -> list[Proc]:
    """`count` `celery -A app worker` processes; returns once each is consuming."""
    procs = []
    for n in range(count):
        argv = [sys.executable, "-m", "celery", "-A", app, "worker", f"--pool={pool}",
                f"--concurrency={concurrency}", "--loglevel=WARNING", f"--hostname=w{n}@bench",
                "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip
        procs.append(Proc(f"worker {n}", argv, log_dir / f"worker-{n}.log", env=env))
    client = redis.Redis.from_url(redis_url)

    def consuming() -> bool:
        for proc in procs:
            proc.check_alive()
        return consumers(client, env) >= count

    try:
        wait_for(consuming, timeout_s=90, what=f"{count} workers to consume", every_s=0.25)
    except RuntimeError:
        stop_all(procs)
        raise
    finally:
        client.close()
    return procs


def consumers(client: redis.Redis, env: dict[str, str]) -> int:
    """Workers consuming: connections blocked in BRPOP on a Redis broker; on RabbitMQ
    (ours only), workers whose keeper has announced itself in the store."""
    if env.get("WICKSON_BROKER_URL", "").startswith("amqp"):
        from worker.store import JobStore

        return JobStore(client).fleet_counts()["workers"]
    return sum(1 for c in client.client_list() if c.get("cmd") == "brpop")


def worker_env(redis_url: str, **extra: str) -> dict[str, str]:
    """Environment of a worker: ours with no stray WICKSON_* settings, plus `extra`."""
    env = _clean_env()
    env.update(REDIS_URL=redis_url, PYTHONPATH=str(ROOT), **extra)
    return env


def _clean_env() -> dict[str, str]:
    """This process's environment less any WICKSON_* setting (each run sets its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("WICKSON_")}


def stop_all(procs: Sequence[Proc], sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
    """Stop every process (signals first, then waits), newest first."""
    for proc in reversed(procs):
        proc.send(sig)
    for proc in reversed(procs):
        proc.stop(sig, timeout_s)
