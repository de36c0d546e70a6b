"""Command line: ``python -m ops.fake_api --port 8080 --rate 50 --items 100000``.

Every `FakeApiConfig` field is a flag (``p_500_after`` -> ``--p-500-after``), generated
from the model so the two never drift; pydantic validates and converts the values.
Optional fields take ``none`` to mean None (``--rate none``: unlimited).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import types
from typing import Any, Literal, get_args, get_origin

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from ops.fake_api.config import FakeApiConfig
from ops.fake_api.server import serve

_NONE_WORDS = frozenset({"none", "null"})


def _none_or_text(value: str) -> str | None:
    """The flag value, with "none"/"null" meaning None."""
    return None if value.lower() in _NONE_WORDS else value


def _add_field_flag(parser: argparse.ArgumentParser, name: str, info: FieldInfo) -> None:
    """One flag for config field `name`; absent flags keep the model's default."""
    annotation = info.annotation
    optional = get_origin(annotation) is types.UnionType and type(None) in get_args(annotation)
    choices = get_args(annotation) if get_origin(annotation) is Literal else None
    parser.add_argument(
        f"--{name.replace('_', '-')}",
        dest=name,
        default=argparse.SUPPRESS,
        type=_none_or_text if optional else str,
        choices=choices,
        metavar=None if choices else name.upper(),
        help=f"{info.description or name} (default: {info.default})",
    )


def build_parser(prog: str = "python -m ops.fake_api") -> argparse.ArgumentParser:
    """The argument parser: --host, --port, and one flag per config field; `prog` is how
    the usage names the command (`wickson-purge fake-api` from the CLI)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="A local stand-in for the Wickson batch-delete API, with a ledger.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=8080, help="port to bind (0: any free)")
    for name, info in FakeApiConfig.model_fields.items():
        _add_field_flag(parser, name, info)
    return parser


def parse_argv(
    argv: list[str] | None = None, prog: str = "python -m ops.fake_api"
) -> tuple[FakeApiConfig, str, int]:
    """(config, host, port) from the command line; exits with a usage error if invalid."""
    parser = build_parser(prog)
    args: dict[str, Any] = vars(parser.parse_args(argv))
    host, port = args.pop("host"), args.pop("port")
    try:
        return FakeApiConfig.model_validate(args), host, port
    except ValidationError as error:
        parser.error(str(error))


def main(argv: list[str] | None = None, prog: str = "python -m ops.fake_api") -> int:
    """Serve the stand-in until interrupted (Ctrl+C: graceful stop, status 0)."""
    config, host, port = parse_argv(argv, prog)
    limit = "unlimited" if config.rate is None else f"{config.rate:g} req/s"

    def announce(url: str) -> None:
        print(
            f"fake Wickson API on {url} ({config.items} items, {limit}); "
            f"ledger at {url}/_admin/ledger",
            file=sys.stderr,
            flush=True,
        )

    # uvicorn shuts down gracefully, then re-raises the SIGINT it caught: for a server
    # meant to run until interrupted, that is the normal end, not an error.
    with contextlib.suppress(KeyboardInterrupt):
        serve(config, host=host, port=port, announce=announce)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
