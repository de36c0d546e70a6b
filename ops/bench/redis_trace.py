"""Counting Redis round trips: INFO commandstats deltas, and a MONITOR trace by kind.

commandstats counts every command, including those a Lua script runs inside Redis, so
it gives exact script calls (EVALSHA) but cannot tell the broker's commands from the
scripts' own. A MONITOR trace can: it marks commands run by scripts ``[N lua]``. In it,
each EVALSHA is named after the script whose SHA1 it carries, a MULTI ... EXEC block is
one round trip, and every other client command one (a non-transactional pipeline would
be counted once per command: none is used on the per-batch path).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import redis

_LINE = re.compile(r"^(\d+\.\d+) \[(\d+) ([^\]]+)\] (.*)$")
_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')


def commandstats(client: redis.Redis) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def script_names() -> dict[str, str]:
    """SHA1 -> script name for every Lua script the worker registers."""
    from worker.scripts import SCRIPTS

    return {_sha1(source): name for name, source in SCRIPTS.items()}


def _sha1(script: str) -> str:
    """The SHA1 Redis knows a script by (EVALSHA's first argument)."""
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


def classify(lines: Iterable[str], names: dict[str, str], prefix: str = "wp:") -> Counter[str]:
    """Round trips in a MONITOR trace by kind: ``script:<name>``, ``store:<cmd>`` (our keys,
    outside scripts: producer and status reads), ``broker:<cmd>`` (everything else)."""
    kinds: Counter[str] = Counter()
    in_multi: dict[str, list[str]] = {}
    for line in lines:
        match = _LINE.match(line.strip())
        if not match or match.group(3) == "lua":
            continue
        client, args = match.group(3), _ARG.findall(match.group(4))
        if not args:
            continue
        command = args[0].lower()
        if command == "multi":
            in_multi[client] = []
        elif command == "exec" and client in in_multi:
            kinds["broker:multi[" + "+".join(in_multi.pop(client)) + "]"] += 1
        elif client in in_multi:
            in_multi[client].append(command)
        else:
            kinds[_kind(command, args, names, prefix)] += 1
    return kinds


def _kind(command: str, args: list[str], names: dict[str, str], prefix: str) -> str:
    if command in ("evalsha", "eval"):
        return "script:" + names.get(args[1] if len(args) > 1 else "", "unknown")
    key = args[1] if len(args) > 1 else ""
    return ("store:" if key.startswith(prefix) else "broker:") + command


def read_trace(path: Path) -> list[str]:
    """The lines of a `redis-cli monitor` capture."""
    return path.read_text(errors="replace").splitlines()
