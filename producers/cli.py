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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import BinaryIO

from producers import control
from producers.ingest import printable
from producers.progress import ProgressPrinter, summary
from producers.submit import Job, store_for, submit, wait_for
from worker.errors import ConfigError, InputError, StoreUnavailable
from worker.settings import get_settings
from worker.store import JobStatus

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
    p.set_defaults(run=_submit)

    p = sub.add_parser("status", help="a job's state and counters")
    p.add_argument("job")
    p.add_argument("--json", action="store_true")
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

    p = sub.add_parser(
        "worker", help="run a Celery worker (extra args go to celery)", add_help=False
    )
    p.set_defaults(run=_worker)

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
        job = submit(
            source,
            reason=args.reason,
            idempotency_key=args.idempotency_key,
            settings=settings,
            key_alias=args.key_alias,
        )
    _report_input(job)
    if args.json:
        print(json.dumps({"job_id": job.id}))
    else:
        print(job.id)
    if not args.wait:
        return EXIT_OK
    final = job.wait(on_progress=ProgressPrinter())
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
    status = store_for(get_settings()).status(args.job)
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
        final = wait_for(store, args.job, timeout=args.timeout, on_progress=ProgressPrinter())
    except TimeoutError as exc:
        print(f"wickson-purge: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(status_json(final) if args.json else summary(final))
    return _exit_code(final)


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


def _worker(_args: argparse.Namespace, rest: list[str]) -> int:
    from worker.celery import app

    app.worker_main(["worker", *(rest or ["--loglevel=INFO"])])
    return EXIT_OK


def _fake_api(_args: argparse.Namespace, rest: list[str]) -> int:
    from ops.fake_api.__main__ import main as fake_api_main

    return fake_api_main(rest)


def _demo(args: argparse.Namespace, _rest: list[str]) -> int:
    from producers.demo import run_demo

    return run_demo(ids=args.ids, rate=args.rate, workers=args.workers, redis_url=args.redis_url)


if __name__ == "__main__":
    sys.exit(main())
