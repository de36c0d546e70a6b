"""The `wickson-purge` command line.

Exit codes: 0 success; 1 a service did not answer; 2 bad usage or input (unknown job,
bad file, bad setting); `wait`: 3 the job completed with failures, 4 it failed or was
cancelled.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import BinaryIO, get_args

from producers import control, report, sweeps
from producers.ingest import printable
from producers.progress import ProgressPrinter, fleet_pause, summary
from producers.retry import retry_failed
from producers.submit import IngestReport, Job, dry_run, store_for, submit, wait_for
from worker.errors import ConfigError, InputError, StoreUnavailable
from worker.settings import get_settings
from worker.store import PRIORITIES, JobState, JobStatus, JobStore

EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, EXIT_FAILURES, EXIT_JOB_FAILED = 0, 1, 2, 3, 4


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command not in ("worker", "fake-api"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return int(args.run(args, rest))
    except (InputError, ConfigError) as exc:
        print(f"wickson-purge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreUnavailable as exc:
        print(f"wickson-purge: {exc} (is Redis running at REDIS_URL?)", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wickson-purge", description="Delete media from the Wickson API at scale, safely."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("submit", help="enqueue a job: ids one per line from FILE or stdin")
    p.add_argument("file", nargs="?", default="-", help="file of ids, one per line ('-': stdin)")
    p.add_argument("--reason", required=True, help="why (logged by the API; at most 1000 chars)")
    p.add_argument("--idempotency-key", help="submitting twice with the same key makes one job")
    p.add_argument(
        "--key-alias", default="default", help="which of the workers' API keys (WICKSON_API_KEYS)"
    )
    p.add_argument("--json", action="store_true", help="print a JSON object with job_id")
    p.add_argument("--wait", action="store_true", help="wait for the job; exit code as `wait`")
    p.add_argument(
        "--priority", choices=PRIORITIES, default="normal", help="queue of the job (default normal)"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and count the ids, estimate the duration; create and send nothing",
    )
    p.add_argument(
        "--confirm-over",
        type=int,
        default=100_000,
        metavar="N",
        help="at a terminal, ask before submitting more than N ids (default 100,000)",
    )
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(run=_submit)

    p = sub.add_parser("status", help="a job's state and counters")
    p.add_argument("job")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--watch", action="store_true", help="show live progress until the job ends, then status"
    )
    p.set_defaults(run=_status)

    p = sub.add_parser("wait", help="block until a job ends (exit 0 ok, 3 failures, 4 failed)")
    p.add_argument("job")
    p.add_argument("--timeout", type=float, default=None, help="seconds (default: forever)")
    p.add_argument("--json", action="store_true", help="print the final status as JSON")
    p.set_defaults(run=_wait)

    p = sub.add_parser("failures", help="every failed id with its reason, streamed")
    p.add_argument("job")
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    p.set_defaults(run=_failures)

    p = sub.add_parser("rethrottle", help="change the fleet's rate, or one job's, now")
    p.add_argument("--rate", required=True, help="requests/s, 'auto' (fleet), 'none' (a job)")
    p.add_argument("--job", help="throttle this job only, under the fleet's rate")
    p.add_argument("--key-alias", default="default", help="the fleet of this API key")
    p.set_defaults(run=_rethrottle)

    for name, text in (
        ("pause", "pause a job: it keeps its place and sends nothing"),
        ("resume", "resume a paused job, or re-attempt what a stopped one did not attempt"),
        ("cancel", "cancel a job: no new requests; the rest ends not_attempted"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("job")
        p.set_defaults(run=_control)

    p = sub.add_parser("recover", help="requeue batches whose message was lost (the watchdog)")
    p.add_argument("job", nargs="*", help="jobs to look at (default: every active job)")
    p.add_argument(
        "--stale-after", type=float, default=None, help="seconds (default WICKSON_STALE_AFTER_S)"
    )
    p.set_defaults(run=_recover)

    p = sub.add_parser("jobs", help="a table of recent jobs: state, progress, ids/s, age")
    p.add_argument(
        "--state", action="append", choices=get_args(JobState), help="only jobs in this state"
    )
    p.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_jobs)

    p = sub.add_parser(
        "retry-failed", help="a new job of the ids a finished job failed for retryable reasons"
    )
    p.add_argument("job")
    p.add_argument("--priority", choices=PRIORITIES, help="default: the original job's")
    p.add_argument("--json", action="store_true", help="print a JSON object with job_id")
    p.set_defaults(run=_retry_failed)

    p = sub.add_parser("report", help="a completion report: every id's outcome, streamed")
    p.add_argument("job")
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every id (the default)")
    which.add_argument("--failed", action="store_true", help="only the failed ids")
    p.set_defaults(run=_report)

    p = sub.add_parser("sweeps", help="retention sweeps: last run, next run, last result")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_sweeps)

    p = sub.add_parser(
        "worker", help="run a Celery worker (extra args go to celery)", add_help=False
    )
    p.set_defaults(run=_worker)

    p = sub.add_parser("serve", help="the HTTP API and web console (needs the 'service' extra)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(run=_serve)

    p = sub.add_parser("fake-api", help="run the local API stand-in (see --help)", add_help=False)
    p.set_defaults(run=_fake_api)

    p = sub.add_parser("demo", help="the whole pipeline in one process, no services needed")
    p.add_argument("--ids", type=int, default=20_000, help="ids in the demo job")
    p.add_argument("--rate", type=float, default=200.0, help="the API's limit, requests/s")
    p.add_argument("--workers", type=int, default=8, help="worker threads")
    p.add_argument("--redis-url", help="use this Redis instead of an in-memory one")
    p.set_defaults(run=_demo)
    return parser


def _submit(args: argparse.Namespace, _rest: list[str]) -> int:
    settings = get_settings()
    with _open_input(args.file) as source:
        if args.dry_run:
            return _dry_run(args, source)
        job = submit(
            source,
            reason=args.reason,
            idempotency_key=args.idempotency_key,
            settings=settings,
            key_alias=args.key_alias,
            priority=args.priority,
            confirm=_confirmation(args),
        )
    _report_input(job)
    if args.json:
        print(json.dumps({"job_id": job.id}))
    else:
        print(job.id)
    if not args.wait:
        return EXIT_OK
    with _progress(job.store) as show:
        final = job.wait(on_progress=show)
    return _exit_code(final)


@contextmanager
def _open_input(name: str) -> Iterator[BinaryIO]:
    if name == "-":
        yield sys.stdin.buffer
        return
    try:
        handle = open(name, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise InputError(f"cannot read {name!r}: {exc.strerror}") from None
    with handle:
        yield handle


def _report_input(job: Job) -> None:
    report = job.report
    if report is None:
        print(f"job {job.id} already exists for this idempotency key", file=sys.stderr)
        return
    for line in report.invalid_lines:
        print(
            f"line {line.number}: {printable(line.text)!r}: {line.problem};"
            " recorded as failed (invalid_id), never sent",
            file=sys.stderr,
        )
    if report.invalid > len(report.invalid_lines):
        print(f"... {report.invalid - len(report.invalid_lines):,} more invalid", file=sys.stderr)
    print(
        f"submitted {report.submitted:,} ids: {report.valid:,} to delete,"
        f" {report.invalid:,} invalid, {report.duplicates:,} duplicates dropped",
        file=sys.stderr,
    )


def _status(args: argparse.Namespace, _rest: list[str]) -> int:
    store = store_for(get_settings())
    if args.watch:
        with _progress(store) as show:
            status = wait_for(store, args.job, on_progress=show)
    else:
        status = store.status(args.job)
    print(status_json(status) if args.json else summary(status))
    return EXIT_OK


def status_json(status: JobStatus) -> str:
    """The `status --json` object."""
    data = status.model_dump(mode="json")
    data["done"] = status.done
    return json.dumps(data, indent=2)


def _wait(args: argparse.Namespace, _rest: list[str]) -> int:
    store = store_for(get_settings())
    try:
        with _progress(store) as show:
            final = wait_for(store, args.job, timeout=args.timeout, on_progress=show)
    except TimeoutError as exc:
        print(f"wickson-purge: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(status_json(final) if args.json else summary(final))
    return _exit_code(final)


def _progress(store: JobStore) -> ProgressPrinter:
    """The live display of a watched job, on stderr (a bar on a terminal, lines elsewhere)."""
    return ProgressPrinter(throttle=fleet_pause(store))


def _exit_code(status: JobStatus) -> int:
    if status.state != "completed":
        return EXIT_JOB_FAILED
    return EXIT_FAILURES if status.failed else EXIT_OK


def _failures(args: argparse.Namespace, _rest: list[str]) -> int:
    store = store_for(get_settings())
    store.status(args.job)  # an unknown job writes nothing, not even a header
    rows = store.iter_failures(args.job)
    out = sys.stdout
    if args.format == "jsonl":
        for media_id, reason in rows:
            out.write(json.dumps({"media_id": media_id, "reason": reason}) + "\n")
    else:
        writer = csv.writer(out)
        writer.writerow(["media_id", "reason"])
        writer.writerows(rows)
    return EXIT_OK


def _control(args: argparse.Namespace, _rest: list[str]) -> int:
    store = store_for(get_settings())
    if args.command == "pause":
        done = control.pause(store, args.job)
    elif args.command == "cancel":
        done = control.cancel(store, args.job, stale_s=get_settings().stale_after_s)
    else:
        queued = control.resume(store, args.job)
        done = queued is not None
    state = store.status(args.job).state
    if not done:
        print(
            f"wickson-purge: job {args.job} is {state}: cannot {args.command} it", file=sys.stderr
        )
        return EXIT_USAGE
    print(f"job {args.job}: {state}")
    return EXIT_OK


def _rethrottle(args: argparse.Namespace, _rest: list[str]) -> int:
    settings = get_settings()
    rate = None if args.rate == "none" else args.rate
    print(
        control.rethrottle(
            store_for(settings),
            rate,
            job_id=args.job,
            key_alias=args.key_alias,
            default_rate=settings.rate_limit,
        )
    )
    return EXIT_OK


def _recover(args: argparse.Namespace, _rest: list[str]) -> int:
    settings = get_settings()
    store = store_for(settings)
    for job_id in args.job:
        store.status(job_id)  # unknown ids are an error, not a silent no-op
    stale = settings.stale_after_s if args.stale_after is None else args.stale_after
    found = control.recover_lost(store, stale_s=stale, job_ids=args.job or None)
    for job_id, n in found.items():
        print(f"job {job_id}: " + ("start task sent again" if n < 0 else f"{n} batches requeued"))
    if not found:
        print("nothing lost")
    return EXIT_OK


def _dry_run(args: argparse.Namespace, source: BinaryIO) -> int:
    plan = dry_run(
        source,
        reason=args.reason,
        settings=get_settings(),
        key_alias=args.key_alias,
        priority=args.priority,
    )
    print(json.dumps(report.dry_run_data(plan)) if args.json else report.dry_run_text(plan))
    return EXIT_OK


def _confirmation(args: argparse.Namespace) -> Callable[[IngestReport], bool] | None:
    """At a terminal (stdin a TTY), ask before submitting over --confirm-over ids."""
    if args.yes or not sys.stdin.isatty():
        return None

    def confirm(counts: IngestReport) -> bool:
        if counts.valid <= args.confirm_over:
            return True
        print(
            f"delete {counts.valid:,} media ids (more than --confirm-over"
            f" {args.confirm_over:,}), reason {args.reason!r}? [y/N] ",
            end="",
            file=sys.stderr,
            flush=True,
        )
        return sys.stdin.readline().strip().lower() in ("y", "yes")

    return confirm


def _jobs(args: argparse.Namespace, _rest: list[str]) -> int:
    store = store_for(get_settings())
    states = frozenset(args.state) if args.state else None
    found = store.list_jobs(states, limit=args.limit)
    now = time.time()
    if args.json:
        print(json.dumps([report.job_row(s, now) for s in found], indent=2))
    else:
        print(report.jobs_table(found, now) if found else "no jobs")
    return EXIT_OK


def _retry_failed(args: argparse.Namespace, _rest: list[str]) -> int:
    settings = get_settings()
    store = store_for(settings)
    job = retry_failed(args.job, settings=settings, client=store.redis, priority=args.priority)
    if job is None:
        print(f"job {args.job}: no failure is retryable; nothing submitted", file=sys.stderr)
    elif job.report is None:
        print(f"job {args.job} is already retried by job {job.id}", file=sys.stderr)
    else:
        print(f"retrying {job.report.valid:,} ids of job {args.job}", file=sys.stderr)
    job_id = job.id if job else None
    if args.json:
        print(json.dumps({"job_id": job_id, "retry_of": args.job}))
    elif job_id:
        print(job_id)
    return EXIT_OK


def _report(args: argparse.Namespace, _rest: list[str]) -> int:
    store = store_for(get_settings())
    store.status(args.job)  # an unknown job writes nothing, not even a header
    rows = store.iter_report(args.job)
    if args.failed:
        rows = (row for row in rows if row.outcome == "failed")
    report.write_report(rows, sys.stdout, args.format)
    return EXIT_OK


def _sweeps(args: argparse.Namespace, _rest: list[str]) -> int:
    settings = get_settings()
    if settings.sweeps_file is None:
        raise ConfigError("no sweeps: WICKSON_SWEEPS_FILE is not set")
    defined = sweeps.load_sweeps(settings.sweeps_file)
    rows = sweeps.overview(defined, store_for(settings), datetime.now(UTC))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(sweeps.table(rows) if rows else f"no sweeps in {settings.sweeps_file}")
    return EXIT_OK


def _worker(_args: argparse.Namespace, rest: list[str]) -> int:
    from worker.celery import app

    app.worker_main(["worker", *(rest or ["--loglevel=INFO"])])
    return EXIT_OK


def _serve(args: argparse.Namespace, _rest: list[str]) -> int:
    from service.serve import serve

    return serve(args.host, args.port)


def _fake_api(_args: argparse.Namespace, rest: list[str]) -> int:
    from ops.fake_api.__main__ import main as fake_api_main

    return fake_api_main(rest)


def _demo(args: argparse.Namespace, _rest: list[str]) -> int:
    from producers.demo import run_demo

    return run_demo(ids=args.ids, rate=args.rate, workers=args.workers, redis_url=args.redis_url)


if __name__ == "__main__":
    sys.exit(main())
