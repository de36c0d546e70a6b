"""The benchmark's output: a fixed-width table with ratio rows, and one PNG per scenario."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ops.bench.scenario import RunResult

COLUMNS = (
    ("system", "<9"),
    ("L", ">5"),
    ("N", ">2"),
    ("C", ">3"),
    ("ids/s", ">8"),
    ("util", ">6"),
    ("429/1k", ">7"),
    ("max1s/bound", ">12"),
    ("ovh p50", ">8"),
    ("ovh p99", ">8"),
    ("e2e s", ">7"),
    ("prod s", ">7"),
    ("enq ids/s", ">10"),
    ("RSS MB", ">7"),
    ("lua/b", ">5"),
    ("cpu w/api/rds/all", ">20"),
)


def _fmt(value: float | None, spec: str) -> str:
    """`value` formatted, or "-" for None / NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _row(cells: Sequence[str]) -> str:
    return "  ".join(format(cell, align) for cell, (_, align) in zip(cells, COLUMNS, strict=True))


def bound(result: RunResult) -> str:
    """L + our burst: the most requests any 1-second window may hold."""
    sc = result.scenario
    return "-" if sc.rate is None else f"{sc.rate + sc.our_burst():g}"


def result_row(r: RunResult) -> str:
    """One table row for one run."""
    sc = r.scenario
    if r.error:
        return _row([r.system, _fmt(sc.rate, "g"), str(sc.workers), str(sc.concurrency)]
                    + ["-"] * (len(COLUMNS) - 5) + [f"ERROR: {r.error[:60]}"])  # fmt: skip
    cpu = r.cpu_cores
    return _row(
        [
            r.system,
            _fmt(sc.rate, "g"),
            str(sc.workers),
            str(sc.concurrency),
            _fmt(r.ids_per_s, ",.0f"),
            _fmt(r.utilisation, ".3f"),
            _fmt(r.per_1k_429, ".1f"),
            f"{r.max_1s}/{bound(r)}",
            _fmt(r.overhead_p50_ms, ".2f"),
            _fmt(r.overhead_p99_ms, ".2f"),
            (">" if r.truncated else "") + _fmt(r.e2e_s, ".1f"),
            _fmt(r.producer_s, ".2f"),
            _fmt(r.enqueue_ids_per_s, ",.0f"),
            _fmt(r.producer_rss_mb, ".1f"),
            _fmt(r.scripts_per_batch, ".2f") if r.system.startswith("ours") else "-",
            "/".join(f"{cpu.get(k, 0):.2f}" for k in ("workers", "api", "redis", "machine")),
        ]
    )


def _ratio(ours: float, base: float) -> str:
    """ "xR" for ours / base; "inf" or "-" when base is 0, "-" for NaN (no limit)."""
    if math.isnan(ours) or math.isnan(base):
        return "-"
    if base == 0:
        return "-" if ours == 0 else "inf"
    return f"x{ours / base:.2f}"


def ratio_row(ours: RunResult, base: RunResult) -> str:
    """ours / baseline for ids/s and 429s per 1,000 requests."""
    sc = ours.scenario
    if ours.error or base.error:
        return _row(["ratio", _fmt(sc.rate, "g"), str(sc.workers), ""] + [""] * (len(COLUMNS) - 4))
    cells = ["ours/base", _fmt(sc.rate, "g"), str(sc.workers), "",
             _ratio(ours.ids_per_s, base.ids_per_s), _ratio(ours.utilisation, base.utilisation),
             _ratio(ours.per_1k_429, base.per_1k_429)]  # fmt: skip
    return _row(cells + [""] * (len(COLUMNS) - len(cells)))


def table(results: Sequence[RunResult]) -> str:
    """The whole table: a row per run, a ratio row after each (ours, baseline) pair."""
    lines = [_row([name for name, _ in COLUMNS]), "-" * len(_row([""] * len(COLUMNS)))]
    by_scenario: dict[str, dict[str, RunResult]] = {}
    for r in results:
        by_scenario.setdefault(r.scenario.name, {})[r.system] = r
    for runs in by_scenario.values():
        lines += [result_row(r) for r in runs.values()]
        if "ours" in runs and "baseline" in runs:
            lines.append(ratio_row(runs["ours"], runs["baseline"]))
    return "\n".join(lines)


def plot(results: Sequence[RunResult], path: Path) -> Path:
    """Requests/s and 429s/s over time for every system of one scenario, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    sc = results[0].scenario
    for r in results:
        style = "-" if r.system == "ours" else "--"
        top.plot(r.requests_per_s, style, label=f"{r.system} requests/s")
        bottom.plot(r.rate_limited_per_s, style, label=f"{r.system} 429s/s")
    if sc.rate:
        top.axhline(sc.rate, color="grey", linestyle=":", label=f"limit L = {sc.rate:g}/s")
    top.set_ylabel("requests / s")
    bottom.set_ylabel("429s / s")
    bottom.set_xlabel("seconds since the run's first request")
    top.set_title(f"{sc.name}: {sc.workers} worker processes x {sc.concurrency} slots")
    for axis in (top, bottom):
        axis.grid(alpha=0.3)
        axis.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
