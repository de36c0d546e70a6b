"""The `wickson-purge` command line.

Exit codes (`EPILOG`, also in `--help` and the README): 0 success; 1 Redis did not
answer, or refused (a wrong REDIS_URL database); 2 bad usage or input (unknown job,
ambiguous job prefix, bad file, bad setting, refused input); `wait` and `submit --wait`:
3 the job completed with failures, 4 it failed or was cancelled, 5 `--timeout` passed
first. A reader that stops reading (`report J | head`) ends the command quietly, exit 0.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from typing import BinaryIO, TextIO, get_args

import redis

from producers import control, jobref, report, sweeps
from producers.progress import ProgressPrinter, fleet_pause, summary
from producers.retry import retry_failed
from producers.submit import IngestReport, Job, dry_run, store_for, submit, wait_for
from worker.errors import ConfigError, InputError, StoreUnavailable
from worker.ingest import ID_RULE
from worker.jobs import OUTAGE_S, check_alias
from worker.ratelimit import limiter_for
from worker.settings import get_settings
from worker.store import PRIORITIES, JobState, JobStatus, JobStore
from worker.sweeps import Sweep, load_sweeps, record_run, run_sweep, tick_label

EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, EXIT_FAILURES, EXIT_JOB_FAILED = 0, 1, 2, 3, 4
EXIT_TIMEOUT = 5
"""`wait --timeout` passed before the job ended (distinct from 1: Redis is fine)."""

EPILOG = """\
exit codes:
  0  success (and: nothing submitted after answering "n"; a reader closing the pipe)
  1  Redis did not answer, or refused (e.g. a REDIS_URL database that does not exist)
  2  bad usage or input: unknown job, ambiguous job prefix, unreadable or binary file,
     no valid id, bad setting, unknown key alias, idempotency key reused with other ids
  3  wait, submit --wait: the job completed, with failures
  4  wait, submit --wait: the job failed or was cancelled
  5  wait: --timeout passed before the job ended

environment:
  REDIS_URL               broker and results store (default redis://localhost:6379/0)
  WICKSON_KEY_PREFIX      prefix of every Redis key (default wp): the workers' own
  WICKSON_RATE_LIMIT      the fleet's API requests/s, or 'auto' (default 10)
  WICKSON_MAX_JOB_IDS     the largest job accepted (default 50,000,000)
  WICKSON_SWEEPS_FILE     the TOML file of retention sweeps (`sweeps`)
  WICKSON_API_KEY[_FILE], WICKSON_API_KEYS   the API keys (workers only)
  every setting: worker/settings.py; a bad value exits 2 naming the variable

JOB is a job id, or a unique prefix of one (at least 4 characters), as shown by
`jobs` or a progress bar ("job 7b9bdaec").
"""

JOB_HELP = "the job id, or a unique prefix of it (at least 4 characters)"
JSON_HELP = "print JSON instead of text"
FORMAT_HELP = "csv (the default, with a header line) or jsonl (one JSON object per line)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command not in ("worker", "fake-api"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        code = int(args.run(args, rest))
        sys.stdout.flush()  # here, where a closed pipe can still be handled
        return code
    except BrokenPipeError:
        return _reader_went_away()
    except (InputError, ConfigError) as exc:
        print(f"wickson-purge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StoreUnavailable, redis.ConnectionError, redis.TimeoutError) as exc:
        print(f"wickson-purge: {exc} (is Redis running at REDIS_URL?)", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except redis.RedisError as exc:
        # An error reply, not silence: a database index the server lacks, an ACL, OOM.
        print(f"wickson-purge: Redis refused: {exc} (check REDIS_URL)", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


def _reader_went_away() -> int:
    """stdout's reader closed the pipe (`report J | head`): it has what it wanted, so
    exit 0, quietly. stdout now points at /dev/null, or Python's flush at exit would
    print a second BrokenPipeError (the recipe of Python's `signal` documentation)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_OK


def _version() -> str:
    try:
        return metadata.version("wickson-purge")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


# -- argument types: refused at parse time, exit 2 with the usage ---------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


def _reason(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must say why (the API logs it), got an empty reason")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wickson-purge",
        description="Delete media from the Wickson API at scale, safely.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"wickson-purge {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("submit", help="enqueue a job: ids one per line from FILE or stdin")
    p.add_argument("file", nargs="?", default="-", help="file of ids, one per line ('-': stdin)")
    p.add_argument(
        "--reason", required=True, type=_reason, help="why (logged by the API; 1 to 1000 chars)"
    )
    p.add_argument(
        "--idempotency-key",
        help="submitting twice with the same key and ids makes one job (other ids: refused)",
    )
    p.add_argument(
        "--key-alias", default="default", help="which of the workers' API keys (WICKSON_API_KEYS)"
    )
    p.add_argument("--json", action="store_true", help="print a JSON object with job_id")
    p.add_argument(
        "--wait", action="store_true", help="wait for the job; summary and exit code as `wait`"
    )
    p.add_argument(
        "--priority", choices=PRIORITIES, default="normal", help="queue of the job (default normal)"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and count the ids, show the first invalid lines, estimate the duration;"
        " create and send nothing",
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
    p.add_argument("job", help=JOB_HELP)
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.add_argument(
        "--watch", action="store_true", help="show live progress until the job ends, then status"
    )
    p.set_defaults(run=_status)

    p = sub.add_parser(
        "wait", help="block until a job ends (exit 0 ok, 3 failures, 4 failed, 5 timeout)"
    )
    p.add_argument("job", help=JOB_HELP)
    p.add_argument(
        "--timeout", type=_seconds, default=None, help="seconds (default: forever); then exit 5"
    )
    p.add_argument("--json", action="store_true", help="print the final status as JSON")
    p.set_defaults(run=_wait)

    p = sub.add_parser("failures", help="every failed id with its reason, streamed")
    p.add_argument("job", help=JOB_HELP)
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv", help=FORMAT_HELP)
    p.set_defaults(run=_failures)

    p = sub.add_parser("rethrottle", help="change the fleet's rate, or one job's, now")
    p.add_argument("--rate", required=True, help="requests/s, 'auto' (fleet), 'none' (a job)")
    p.add_argument(
        "--job", help="throttle this job only, under the fleet's rate (" + JOB_HELP + ")"
    )
    p.add_argument("--key-alias", default="default", help="the fleet of this API key")
    p.set_defaults(run=_rethrottle)

    p = sub.add_parser("rate", help="the fleet's request rate now, and any 429 pause")
    p.add_argument("--key-alias", default="default", help="the fleet of this API key")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(run=_rate)

    for name, text in (
        ("pause", "pause a job: it keeps its place and sends nothing (paused: no-op)"),
        ("resume", "resume a paused job, or re-attempt what a stopped one did not attempt"),
        ("cancel", "cancel a job: no new requests; the rest ends not_attempted (cancelled: no-op)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("job", help=JOB_HELP)
        p.set_defaults(run=_control)

    p = sub.add_parser(
        "recover", help="wake the fleet now: what every worker's keeper does every 2 s"
    )
    p.add_argument("job", nargs="*", help="jobs to report on (default: every unfinished job)")
    p.set_defaults(run=_recover)

    p = sub.add_parser("jobs", help="a table of recent jobs: state, progress, ids/s, age")
    p.add_argument(
        "--state", action="append", choices=get_args(JobState), help="only jobs in this state"
    )
    p.add_argument("--limit", type=_positive_int, default=20, help="at most this many (default 20)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(run=_jobs)

    p = sub.add_parser(
        "retry-failed", help="a new job of the ids a finished job failed for retryable reasons"
    )
    p.add_argument("job", help=JOB_HELP)
    p.add_argument("--priority", choices=PRIORITIES, help="default: the original job's")
    p.add_argument("--json", action="store_true", help="print a JSON object with job_id")
    p.set_defaults(run=_retry_failed)

    p = sub.add_parser("report", help="a completion report: every id's outcome, streamed")
    p.add_argument("job", help=JOB_HELP)
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv", help=FORMAT_HELP)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every id (the default)")
    which.add_argument("--failed", action="store_true", help="only the failed ids")
    p.set_defaults(run=_report)

    p = sub.add_parser("sweeps", help="retention sweeps: last run, next run; `sweeps run NAME`")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(run=_sweeps, sweeps_command=None)
    sweep_sub = p.add_subparsers(dest="sweeps_command", metavar="{run}")
    q = sweep_sub.add_parser("run", help="run one sweep now, as beat would (recorded)")
    q.add_argument("name", help="the sweep's name in WICKSON_SWEEPS_FILE")
    q.add_argument("--dry-run", action="store_true", help="count and record; create no job")
    q.add_argument("--json", action="store_true", help=JSON_HELP)
    q.set_defaults(run=_sweep_run)

    p = sub.add_parser(
        "worker", help="run a Celery worker (extra args go to celery)", add_help=False
    )
    p.set_defaults(run=_worker)

    p = sub.add_parser("serve", help="the HTTP API and web console (needs the 'service' extra)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(run=_serve)

    p = sub.add_parser(
        "fake-api", help="run the local API stand-in (see --help; the 'demo' extra)", add_help=False
    )
    p.set_defaults(run=_fake_api)

    p = sub.add_parser(
        "demo",
        help="the whole pipeline in one process, no services needed (faults on purpose;"
        " the 'demo' extra)",
    )
    p.add_argument("--ids", type=_positive_int, default=20_000, help="ids in the demo job")
    p.add_argument("--rate", type=float, default=200.0, help="the API's limit, requests/s")
    p.add_argument("--workers", type=_positive_int, default=8, help="worker threads")
    p.add_argument("--redis-url", help="use this Redis instead of an in-memory one")
    p.set_defaults(run=_demo)
    return parser


# -- submit ------------------------------------------------------------------------------


class _Declined(Exception):
    """The operator answered no at the confirmation: nothing is submitted, not an error."""


def _submit(args: argparse.Namespace, _rest: list[str]) -> int:
    settings = get_settings()
    with _open_input(args.file) as source:
        if args.dry_run:
            return _dry_run(args, source)
        try:
            job = submit(
                source,
                reason=args.reason,
                idempotency_key=args.idempotency_key,
                settings=settings,
                key_alias=args.key_alias,
                priority=args.priority,
                confirm=_input_check(args),
            )
        except _Declined:
            print("nothing submitted", file=sys.stderr)
            return EXIT_OK
    _report_input(job)
    # The id at once (a watcher may want it before the end); with --wait, then the summary
    # (--json: JSON lines, the final status on one line).
    print(json.dumps({"job_id": job.id}) if args.json else job.id, flush=True)
    if args.wait:
        return _follow(job.store, job.id, as_json=args.json, one_line=True)
    return EXIT_OK


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
    counts = job.report
    if counts is None:
        print(f"job {job.id} already exists for this idempotency key", file=sys.stderr)
        return
    for line in counts.invalid_lines:
        print(
            f"{report.invalid_line(line)}; recorded as failed (invalid_id), never sent",
            file=sys.stderr,
        )
    if counts.invalid > len(counts.invalid_lines):
        print(f"... {counts.invalid - len(counts.invalid_lines):,} more invalid", file=sys.stderr)
    print(
        f"submitted {counts.submitted:,} ids: {counts.valid:,} to delete,"
        f" {counts.invalid:,} invalid, {counts.duplicates:,} duplicates dropped",
        file=sys.stderr,
    )


def _no_valid_id(counts: IngestReport) -> str:
    """Why an input without one valid id is refused, with its first invalid line."""
    first = counts.invalid_lines[0] if counts.invalid_lines else None
    example = f" ({report.invalid_line(first)})" if first else ""
    return (
        f"no valid media id in the input: all {counts.submitted:,} lines are invalid{example};"
        f" nothing submitted. An id is {ID_RULE}"
    )


def _input_check(args: argparse.Namespace) -> Callable[[IngestReport], bool]:
    """Refuse an input without one valid id (a job of only failures is a mistake); at a
    terminal, ask before submitting over --confirm-over ids."""

    def check(counts: IngestReport) -> bool:
        if counts.valid == 0:
            raise InputError(_no_valid_id(counts))
        if args.yes or counts.valid <= args.confirm_over:
            return True
        question = (
            f"delete {counts.valid:,} media ids (more than --confirm-over"
            f" {args.confirm_over:,}), reason {args.reason!r}? [y/N] "
        )
        with _terminal(ids_on_stdin=args.file == "-") as terminal:
            if terminal is None:
                return True  # a script, cron, CI: nobody to ask (README: use --confirm-over)
            answers, prompts = terminal
            prompts.write(question)
            prompts.flush()
            if answers.readline().strip().lower() not in ("y", "yes"):
                raise _Declined
        return True

    return check


@contextmanager
def _terminal(*, ids_on_stdin: bool) -> Iterator[tuple[TextIO, TextIO] | None]:
    """Where to ask the operator (answers, prompts): stdin and stderr when stdin is a
    terminal that is not the ids' source; else the terminal itself (/dev/tty) when stderr
    shows one, as when ids are piped in at a prompt; None when nobody is there."""
    if not ids_on_stdin and sys.stdin.isatty():
        yield sys.stdin, sys.stderr
        return
    if not sys.stderr.isatty():
        yield None
        return
    try:
        answers = open("/dev/tty", encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError:
        yield None
        return
    with answers, open("/dev/tty", "w", encoding="utf-8") as prompts:
        yield answers, prompts


def _dry_run(args: argparse.Namespace, source: BinaryIO) -> int:
    plan = dry_run(
        source,
        reason=args.reason,
        settings=get_settings(),
        key_alias=args.key_alias,
        priority=args.priority,
    )
    print(json.dumps(report.dry_run_data(plan)) if args.json else report.dry_run_text(plan))
    if plan.report.valid == 0:
        print(
            f"wickson-purge: submit would refuse this: {_no_valid_id(plan.report)}", file=sys.stderr
        )
        return EXIT_USAGE
    return EXIT_OK


# -- following a job ---------------------------------------------------------------------


def _status(args: argparse.Namespace, _rest: list[str]) -> int:
    store = store_for(get_settings())
    job_id = jobref.resolve(store, args.job)
    if args.watch:
        with _progress(store) as show:
            status = wait_for(store, job_id, on_progress=show, on_outage=_outage_notice())
    else:
        status = store.status(job_id)
    print(status_json(status) if args.json else summary(status))
    return EXIT_OK


def status_json(status: JobStatus, indent: int | None = 2) -> str:
    """The `status --json` object."""
    data = status.model_dump(mode="json")
    data["done"] = status.done
    return json.dumps(data, indent=indent)


def _wait(args: argparse.Namespace, _rest: list[str]) -> int:
    store = store_for(get_settings())
    return _follow(store, jobref.resolve(store, args.job), as_json=args.json, timeout=args.timeout)


def _follow(
    store: JobStore,
    job_id: str,
    *,
    as_json: bool,
    timeout: float | None = None,
    one_line: bool = False,
) -> int:
    """Show the job's progress until it ends, then its summary (or status JSON, on
    `one_line`); the exit code says how it ended (EXIT_TIMEOUT: `timeout` passed first)."""
    try:
        with _progress(store) as show:
            final = wait_for(
                store, job_id, timeout=timeout, on_progress=show, on_outage=_outage_notice()
            )
    except TimeoutError as exc:
        print(f"wickson-purge: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    print(status_json(final, indent=None if one_line else 2) if as_json else summary(final))
    return _exit_code(final)


def _outage_notice() -> Callable[[StoreUnavailable], None]:
    """`on_outage` for wait_for: say once per outage that Redis is away and we keep trying."""
    last = [-math.inf]

    def notice(exc: StoreUnavailable) -> None:
        now = time.monotonic()
        if now - last[0] > OUTAGE_S:
            print(f"wickson-purge: {exc}; still trying for up to {OUTAGE_S:g} s", file=sys.stderr)
        last[0] = now

    return notice


def _progress(store: JobStore) -> ProgressPrinter:
    """The live display of a watched job, on stderr (a bar on a terminal, lines elsewhere)."""
    return ProgressPrinter(throttle=fleet_pause(store, get_settings()))


def _exit_code(status: JobStatus) -> int:
    if status.state != "completed":
        return EXIT_JOB_FAILED
    return EXIT_FAILURES if status.failed else EXIT_OK


# -- reading results ---------------------------------------------------------------------


def _failures(args: argparse.Namespace, _rest: list[str]) -> int:
    store = store_for(get_settings())
    job_id = jobref.resolve(store, args.job)  # an unknown job writes nothing, not a header
    rows = store.iter_failures(job_id)
    out = sys.stdout
    if args.format == "jsonl":
        for media_id, reason in rows:
            out.write(json.dumps({"media_id": media_id, "reason": reason}) + "\n")
    else:
        writer = csv.writer(out)
        writer.writerow(["media_id", "reason"])
        writer.writerows(rows)
    return EXIT_OK


def _report(args: argparse.Namespace, _rest: list[str]) -> int:
    store = store_for(get_settings())
    job_id = jobref.resolve(store, args.job)  # an unknown job writes nothing, not a header
    rows = store.iter_report(job_id)
    if args.failed:
        rows = (row for row in rows if row.outcome == "failed")
    report.write_report(rows, sys.stdout, args.format)
    return EXIT_OK


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


# -- controls ----------------------------------------------------------------------------


def _control(args: argparse.Namespace, _rest: list[str]) -> int:
    store = store_for(get_settings())
    job_id = jobref.resolve(store, args.job)
    already = _already(store.status(job_id), args.command)
    if already:
        # Idempotent: the job is where the operator wants it (a retried script is fine).
        print(f"job {job_id}: {already}")
        return EXIT_OK
    if args.command == "pause":
        done = control.pause(store, job_id)
    elif args.command == "cancel":
        done = control.cancel(store, job_id)
    else:
        done = control.resume(store, job_id)
    state = store.status(job_id).state
    if not done:
        print(f"wickson-purge: job {job_id} is {state}: cannot {args.command} it", file=sys.stderr)
        return EXIT_USAGE
    print(f"job {job_id}: {state}")
    return EXIT_OK


def _already(status: JobStatus, command: str) -> str | None:
    """'already paused' (or cancelled, running) if `command` has nothing left to do."""
    if command == "pause" and status.state == "paused":
        return "already paused"
    cancelling = status.state == "stopping" and (status.last_error or "").startswith("CANCELLED")
    if command == "cancel" and (status.state == "cancelled" or cancelling):
        return f"already cancelled ({status.state})"
    if command == "resume" and status.state in ("queued", "running"):
        return f"already {status.state}: not paused"
    return None


def _rethrottle(args: argparse.Namespace, _rest: list[str]) -> int:
    settings = get_settings()
    store = store_for(settings)
    rate = None if args.rate == "none" else args.rate
    job_id = None if args.job is None else jobref.resolve(store, args.job)
    if job_id is None:
        check_alias(store, args.key_alias)  # else a typo throttles a fleet that is not there
    print(
        control.rethrottle(store, rate, job_id=job_id, key_alias=args.key_alias, settings=settings)
    )
    return EXIT_OK


def _rate(args: argparse.Namespace, _rest: list[str]) -> int:
    settings = get_settings()
    store = store_for(settings)
    check_alias(store, args.key_alias)
    limiter = limiter_for(store, settings, args.key_alias)
    rate, paused_s = limiter.rate, limiter.paused_for()
    set_to = store.redis.hget(limiter.key, "rate")
    if isinstance(set_to, bytes):
        set_to = set_to.decode()
    configured = set_to if set_to is not None else str(settings.rate_limit)
    source = "rethrottle" if set_to is not None else "WICKSON_RATE_LIMIT"
    data = {
        "key_alias": args.key_alias,
        "rate_per_s": round(rate, 3),
        "configured": "auto" if configured == "auto" else float(configured),
        "set_by": source,
        "paused_s": round(paused_s, 3),
    }
    if args.json:
        print(json.dumps(data))
        return EXIT_OK
    how = "auto: found from the API's 429s" if configured == "auto" else f"set by {source}"
    line = f"fleet ({args.key_alias}): {rate:g} requests/s ({how})"
    print(line + (f"; paused by a 429 for {paused_s:.1f} s more" if paused_s > 0 else ""))
    return EXIT_OK


def _recover(args: argparse.Namespace, _rest: list[str]) -> int:
    settings = get_settings()
    store = store_for(settings)
    job_ids = [jobref.resolve(store, ref) for ref in args.job]  # unknown ids: an error
    sent = control.recover(store, margin=settings.lost_writes_margin)
    for job_id in job_ids or store.active_jobs():
        status = store.status(job_id)
        print(f"job {job_id}: {status.state}, {status.done:,}/{status.total:,} ids")
    print(f"{sent} drain messages published for drain runs the fleet missed")
    return EXIT_OK


def _retry_failed(args: argparse.Namespace, _rest: list[str]) -> int:
    settings = get_settings()
    store = store_for(settings)
    original = jobref.resolve(store, args.job)
    job = retry_failed(original, settings=settings, client=store.redis, priority=args.priority)
    if job is None:
        print(f"job {original}: no failure is retryable; nothing submitted", file=sys.stderr)
    elif job.report is None:
        print(f"job {original} is already retried by job {job.id}", file=sys.stderr)
    else:
        print(f"retrying {job.report.valid:,} ids of job {original}", file=sys.stderr)
    job_id = job.id if job else None
    if args.json:
        print(json.dumps({"job_id": job_id, "retry_of": original}))
    elif job_id:
        print(job_id)
    return EXIT_OK


# -- sweeps ------------------------------------------------------------------------------


def _load_sweeps() -> list[Sweep]:
    settings = get_settings()
    if settings.sweeps_file is None:
        raise ConfigError("no sweeps: WICKSON_SWEEPS_FILE is not set")
    return load_sweeps(settings.sweeps_file)


def _sweeps(args: argparse.Namespace, _rest: list[str]) -> int:
    settings = get_settings()
    defined = _load_sweeps()
    rows = sweeps.overview(defined, store_for(settings), datetime.now(UTC))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(sweeps.table(rows) if rows else f"no sweeps in {settings.sweeps_file}")
    return EXIT_OK


def _sweep_run(args: argparse.Namespace, _rest: list[str]) -> int:
    settings = get_settings()
    by_name = {s.name: s for s in _load_sweeps()}
    sweep = by_name.get(args.name)
    if sweep is None:
        known = ", ".join(sorted(by_name)) or "none"
        raise InputError(f"no sweep {args.name!r} in {settings.sweeps_file} (defined: {known})")
    if args.dry_run:
        sweep = sweep.model_copy(update={"dry_run": True})
    store = store_for(settings)
    # Its own tick: a manual run neither takes nor blocks the scheduled minute's.
    tick = f"manual-{tick_label(datetime.now(UTC))}"
    run = run_sweep(sweep, tick, settings=settings, client=store.redis)
    record_run(store.redis, store.keys, run)
    if args.json:
        print(json.dumps(dataclasses.asdict(run)))
    else:
        job = f"; job {run.job_id}" if run.job_id else ""
        print(f"sweep {run.sweep}: {run.outcome}: {run.detail}{job}")
    return EXIT_USAGE if run.outcome in ("refused", "failed") else EXIT_OK


# -- processes ---------------------------------------------------------------------------


def _worker(_args: argparse.Namespace, rest: list[str]) -> int:
    from worker.celery import app

    app.worker_main(["worker", *(rest or ["--loglevel=INFO"])])
    return EXIT_OK


SERVICE_APP = "service.app:create_app"
"""The HTTP service's app factory, by its ASGI path: the service is the layer above the
producers, started here by name as `uvicorn --factory` would, never imported."""
EXTRAS = {
    "demo": ("starlette", "uvicorn", "fakeredis", "lupa"),
    "service": ("fastapi", "jinja2", "uvicorn"),
}
"""The modules each optional extra of the package installs (pyproject.toml)."""


def _require_extra(extra: str, command: str) -> None:
    """ConfigError (exit 2, one line) naming the extra to install if a module it brings
    is missing: `demo` and `fake-api` need the stand-in's web stack, `serve` FastAPI."""
    missing = [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"`wickson-purge {command}` needs the {extra!r} extra ({', '.join(missing)} not"
            f" installed): pip install 'wickson-purge[{extra}]'"
        )


def _serve(args: argparse.Namespace, _rest: list[str]) -> int:
    _require_extra("service", "serve")
    import uvicorn

    from worker.logs import configure_logging

    configure_logging()
    # log_config None: uvicorn's lines go through our structlog processors. A ConfigError
    # of create_app (the settings, the tokens) comes out of run: exit 2.
    uvicorn.run(SERVICE_APP, factory=True, host=args.host, port=args.port, log_config=None,
                proxy_headers=False)  # fmt: skip
    return EXIT_OK


def _fake_api(_args: argparse.Namespace, rest: list[str]) -> int:
    _require_extra("demo", "fake-api")
    from ops.fake_api.__main__ import main as fake_api_main

    return fake_api_main(rest, prog="wickson-purge fake-api")


def _demo(args: argparse.Namespace, _rest: list[str]) -> int:
    _require_extra("demo", "demo")
    from producers.demo import run_demo

    return run_demo(ids=args.ids, rate=args.rate, workers=args.workers, redis_url=args.redis_url)


if __name__ == "__main__":
    sys.exit(main())
