"""The benchmark: our fleet against the idiomatic Celery baseline, scenario by scenario.

    python -m ops.bench.run --quick
    python -m ops.bench.run --rates 20,100,400 --workers 1,2,4 [--steady-s 25]
    python -m ops.bench.run --rates 100 --workers 2 --ours-rate x1.5 --rate-headers none

For each scenario (the stand-in's limit L, N worker processes) it runs ours, then the
baseline, each on fresh services, and prints a table row per run plus a ratio row; at the
end the whole table again, which is also written to OUT/<stamp>/table.txt beside
results.json (every number, and the per-second series) and one PNG per scenario.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ops.bench import report
from ops.bench.metrics import TRIM
from ops.bench.procs import ROOT, exit_on_signals
from ops.bench.scenario import SYSTEMS, RunResult, Scenario, default_concurrency, run, write_ids

DEFAULT_OUT = ROOT / "ops" / "bench" / "out"
QUICK = {"rates": [100.0], "workers": [2], "ids": 60_000}
"""--quick: one small scenario, ~6 s of ours at the limit, the baseline for at most 30 s."""


def _rates(text: str) -> list[float | None]:
    """ "20,100,none" -> [20.0, 100.0, None] (none: an unlimited stand-in)."""
    return [None if x.lower() == "none" else float(x) for x in text.split(",") if x]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring and README.md)."""
    p = argparse.ArgumentParser(prog="python -m ops.bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one small scenario: L=100, N=2")
    p.add_argument(
        "--rates", type=_rates, default=[20.0, 100.0, 400.0],
        help="limits L, req/s ('none': unlimited; ours then runs at 10000, the baseline unlimited)",
    )  # fmt: skip
    p.add_argument("--workers", type=_ints, default=[1, 2, 4], help="worker process counts N")
    p.add_argument("--concurrency", type=int, help="slots per worker (default: Little's law)")
    p.add_argument("--pool", choices=("threads", "prefork"), default="threads")
    p.add_argument("--latency-ms", type=float, default=30.0)
    p.add_argument("--jitter-ms", type=float, default=20.0)
    p.add_argument("--ids", type=int, help="ids per run (default: enough for --steady-s)")
    p.add_argument("--steady-s", type=float, default=25.0, help="target steady-state seconds")
    p.add_argument(
        "--ours-rate",
        default="L",
        help="our WICKSON_RATE_LIMIT: L (the server's), a number, xF (F times L), or auto",
    )
    p.add_argument(
        "--rate-headers",
        default="retry-after",
        choices=("retry-after", "none", "x-ratelimit", "ietf"),
        help="the stand-in's rate hints (none: a hidden limit)",
    )
    p.add_argument("--server-burst", type=float, help="the stand-in's bucket (default L/10)")
    p.add_argument(
        "--worker-env", action="append", default=[], metavar="KEY=VALUE",
        help="extra environment for our workers, e.g. WICKSON_RATE_BURST=2 (repeatable)",
    )  # fmt: skip
    p.add_argument("--systems", default="ours,baseline", help="which systems to run")
    p.add_argument("--baseline-max-s", type=float, default=90.0, help="cap on a baseline run")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where results and plots go")
    p.add_argument(
        "--profile-s", type=float, default=0.0,
        help="py-spy every worker of each run this long (RUN_DIR/profile.txt)",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.quick:
        args.rates, args.workers = QUICK["rates"], QUICK["workers"]
        args.ids = args.ids or QUICK["ids"]
        args.baseline_max_s = min(args.baseline_max_s, 30.0)
    return args


def ids_for(rate: float | None, steady_s: float) -> int:
    """Ids that keep a fleet at 100 x `rate` ids/s busy for `steady_s` of steady state
    (unlimited: as if 500 requests/s)."""
    return int(math.ceil(100 * (rate or 500) * steady_s / (1 - 2 * TRIM) / 1000) * 1000)


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    """Every (L, N) scenario of the command line."""
    env = tuple(tuple(kv.split("=", 1)) for kv in args.worker_env)
    return [
        Scenario(
            rate=rate,
            workers=n,
            concurrency=args.concurrency or default_concurrency(rate or 100, n),
            ids=args.ids or ids_for(rate, args.steady_s),
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
            ours_rate=args.ours_rate,
            rate_headers=args.rate_headers,
            server_burst=args.server_burst,
            pool=args.pool,
            worker_env=env,  # type: ignore[arg-type]
        )
        for rate in args.rates
        for n in args.workers
    ]


def deadline_s(sc: Scenario, system: str, ours: RunResult | None, cap_s: float) -> float:
    """How long a run may take: ours gets 3x the ideal time plus start-up; the baseline
    1.5x ours plus 15 s (at least 30 s, at most `cap_s`), then it is cut (truncated)."""
    ideal = sc.ids / (100.0 * (sc.rate or 1_000))
    if system == "ours":
        return max(60.0, 3 * ideal + 30)
    reference = ours.e2e_s if ours is not None and not ours.error else ideal
    return min(cap_s, max(30.0, 1.5 * reference + 15))


def run_scenario(
    sc: Scenario, systems: list[str], ids_file: Path, out: Path, args: argparse.Namespace
) -> list[RunResult]:
    """Both systems in one scenario; prints each row as it comes and draws the plot."""
    results: list[RunResult] = []
    ours: RunResult | None = None
    for name in systems:
        started = time.monotonic()
        result = run(SYSTEMS[name], sc, ids_file, out / sc.name / name,
                     deadline_s=deadline_s(sc, name, ours, args.baseline_max_s),
                     profile_s=args.profile_s)  # fmt: skip
        ours = result if name == "ours" else ours
        results.append(result)
        print(report.result_row(result), f"  [{time.monotonic() - started:.0f} s]", flush=True)
    if len(results) == 2:
        print(report.ratio_row(results[0], results[1]), flush=True)
    if any(not r.error for r in results):
        report.plot([r for r in results if not r.error], out / f"{sc.name}.png")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run every scenario; print and save the table, results and plots."""
    args = parse_args(argv)
    exit_on_signals()
    systems = [s for s in args.systems.split(",") if s]
    out = args.out / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").write_text(json.dumps(code_state() | {"argv": sys.argv}, indent=1))
    all_results: list[RunResult] = []
    print(report.table([]), flush=True)
    with tempfile.TemporaryDirectory(prefix="wickson-bench-") as tmp:
        for sc in scenarios(args):
            ids_file = Path(tmp) / f"ids-{sc.ids}.txt"
            if not ids_file.exists():
                write_ids(ids_file, sc.ids)
            all_results += run_scenario(sc, systems, ids_file, out, args)
            _save(out, all_results)
    text = report.table(all_results)
    print(f"\n{text}\n\nresults, logs and plots: {out}")
    return 1 if any(r.error for r in all_results) else 0


def code_state() -> dict[str, object]:
    """The commit measured, and the files of the measured code that differ from it (the
    tree may be edited while a benchmark runs: this says what was there at the start)."""

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True,
                              check=False)  # fmt: skip
        return done.stdout.rstrip()

    dirty = git("status", "--porcelain", "--", "worker", "producers", "ops/fake_api")
    return {
        "head": git("rev-parse", "HEAD").strip(),
        "dirty": dirty.splitlines(),
        "diff_sha1": hashlib.sha1(
            git("diff", "HEAD", "--", "worker", "producers", "ops/fake_api").encode(),
            usedforsecurity=False,
        ).hexdigest(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_avg": os.getloadavg(),
    }


def _save(out: Path, results: list[RunResult]) -> None:
    """results.json (every number) and table.txt, rewritten after each scenario."""
    (out / "results.json").write_text(json.dumps([r.to_json() for r in results], indent=1))
    (out / "table.txt").write_text(report.table(results) + "\n")


if __name__ == "__main__":
    sys.exit(main())
