"""Where a worker's time goes: py-spy on a running worker, summarised as text.

`record` samples a pid with ``py-spy record --gil --format raw`` (collapsed stacks of
the thread holding the GIL: the process's Python CPU time); `summarise` ranks functions
by inclusive and by self samples.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

_LINENO = re.compile(r":\d+\)$")


def record(pid: int, seconds: float, out: Path, *, gil: bool = True) -> subprocess.Popen[bytes]:
    """Start py-spy on `pid` for `seconds` in the background; raw stacks go to `out`."""
    spy = shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    argv = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
            "--format", "raw", "--output", str(out), "--nonblocking"]  # fmt: skip
    if gil:
        argv.append("--gil")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _frame(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'func (path/to/file.py)'."""
    return _LINENO.sub(")", frame.strip())


def summarise(paths: list[Path], top: int = 25) -> str:
    """The `top` functions by inclusive and by self samples, over every raw file."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = [_frame(f) for f in stack.split(";") if f]
            total += n
            leaf[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    if total == 0:
        return "no samples (py-spy needs ptrace permission on the worker)"
    lines = [f"{total} samples holding the GIL", "", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in leaf.most_common(top)]
    return "\n".join(lines)
