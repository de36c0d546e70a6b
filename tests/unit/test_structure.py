"""The structure: imports run one way (checked by import-linter), configuration is read
when a process needs it (never at import), the stand-in's stack is an extra, and what
the package and the image install."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from setuptools import find_packages

from producers import cli
from tests.unit.conftest import unit_settings
from worker.beat import Scheduler, beat_schedule
from worker.celery import app
from worker.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "ops" / "sweeps.example.toml"
BROKEN_SWEEPS = "[[sweep]\n"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter (nothing imported yet), with only `env` set of
    our variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WICKSON_")}
    clean.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={**clean, **env},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def celery(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`celery -A worker ARGV` in `tmp_path`, with only `env` set of our variables."""
    code = f"import sys; from celery.__main__ import main; sys.argv = {['celery', *argv]!r}; main()"
    return python(code, tmp_path, **env)


# -- layers ------------------------------------------------------------------------------


def test_the_import_layers_hold() -> None:
    """lint-imports: service > producers > worker, the stand-in and the benchmarks apart."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout[-2_000:]
    assert re.search(r"Contracts: \d+ kept, 0 broken", done.stdout)


# -- configuration read when needed -----------------------------------------------------


def test_an_app_using_the_producer_api_never_reads_the_sweeps_file(tmp_path: Path) -> None:
    """A web app importing the producer API and the service, and reading the Celery
    configuration as its first publish does, with a broken WICKSON_SWEEPS_FILE: no error
    (only beat and the workers load sweeps)."""
    (tmp_path / "sweeps.toml").write_text(BROKEN_SWEEPS)
    done = python(
        "import producers.submit, producers.control, service.app\n"
        "from worker.celery import app\n"
        "print(app.conf.broker_url, sorted(app.conf.beat_schedule))",
        tmp_path,
        WICKSON_SWEEPS_FILE=str(tmp_path / "sweeps.toml"),
        REDIS_URL="redis://127.0.0.1:6379/11",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "redis://127.0.0.1:6379/11 []"


def test_a_bad_setting_is_raised_where_the_configuration_is_read_not_at_import(
    tmp_path: Path,
) -> None:
    """WICKSON_RATE_LIMIT=abc: importing is fine; each read of the app's configuration
    raises ConfigError (never Celery's defaults the second time); fixed, it is read."""
    done = python(
        "import os\n"
        "import producers.submit\n"
        "from worker.celery import app\n"
        "from worker.errors import ConfigError\n"
        "for _ in range(2):\n"
        "    try:\n"
        "        print(app.conf.broker_url)\n"
        "    except ConfigError as exc:\n"
        "        print('ConfigError', 'WICKSON_RATE_LIMIT' in str(exc))\n"
        "os.environ['WICKSON_RATE_LIMIT'] = '5'\n"
        "print(app.conf.broker_url)",
        tmp_path,
        WICKSON_RATE_LIMIT="abc",
        REDIS_URL="redis://127.0.0.1:6379/11",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "ConfigError True",
        "ConfigError True",
        "redis://127.0.0.1:6379/11",
    ]


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_celery_with_a_bad_setting_prints_one_line_and_exits_2(
    tmp_path: Path, command: str
) -> None:
    """`WICKSON_RATE_LIMIT=abc celery -A worker worker` (or beat): the variable named, no
    traceback."""
    done = celery(tmp_path, "-A", "worker", command, WICKSON_RATE_LIMIT="abc")
    assert done.returncode == 2
    assert "WICKSON_RATE_LIMIT" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 2  # "invalid configuration:", the variable


def test_beat_builds_its_schedule_when_its_scheduler_is_created(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The app's beat_scheduler fills beat_schedule (watchdog and sweeps) before Celery's
    scheduler reads it; the app's configuration alone holds no schedule."""
    assert app.conf.beat_scheduler == "worker.beat:Scheduler"
    monkeypatch.setitem(app.conf, "beat_schedule", {})
    monkeypatch.setenv("WICKSON_SWEEPS_FILE", str(EXAMPLE))
    get_settings.cache_clear()
    scheduler = Scheduler(app, lazy=True, schedule_filename=str(tmp_path / "schedule"))
    expected = beat_schedule(unit_settings(sweeps_file=EXAMPLE))
    assert set(app.conf.beat_schedule) == set(expected) == {
        "watchdog", "sweep:media-older-than-90-days", "sweep:takedown-lists"
    }  # fmt: skip
    assert scheduler.app is app


def test_beat_with_a_broken_sweeps_file_exits_2_naming_it(tmp_path: Path) -> None:
    """`celery -A worker beat` with a sweeps file that does not load: exit 2, the file
    and the problem named, no traceback, nothing scheduled."""
    (tmp_path / "sweeps.toml").write_text(BROKEN_SWEEPS)
    done = celery(
        tmp_path, "-A", "worker", "beat", WICKSON_SWEEPS_FILE=str(tmp_path / "sweeps.toml")
    )
    assert done.returncode == 2
    assert "WICKSON_SWEEPS_FILE" in done.stderr
    assert "not valid TOML" in done.stderr
    assert "Traceback" not in done.stderr


# -- extras and packaging -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "missing", "extra"),
    [
        (["demo"], "fakeredis", "demo"),
        (["fake-api", "--port", "1"], "starlette", "demo"),
        (["serve"], "fastapi", "service"),
    ],
    ids=["demo", "fake-api", "serve"],
)
def test_a_command_whose_extra_is_not_installed_names_it(
    capsys, monkeypatch: pytest.MonkeyPatch, argv: list[str], missing: str, extra: str
) -> None:
    """Without the stand-in's stack (or FastAPI): exit 2, one line naming the extra and
    the pip command; nothing started."""
    monkeypatch.setitem(sys.modules, missing, None)  # importlib.util.find_spec: not found
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert f"needs the {extra!r} extra ({missing} not installed)" in line
    assert f"pip install 'wickson-purge[{extra}]'" in line


def dependency_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_a_production_install_has_no_stand_in_stack() -> None:
    """starlette, uvicorn and fakeredis are the demo extra's; dev (the README's commands)
    and bench include it, the service extra has its own uvicorn."""
    extras: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
    production = dependency_names(PYPROJECT["project"]["dependencies"])
    assert not production & {"starlette", "uvicorn", "fakeredis", "fastapi"}
    assert dependency_names(extras["demo"]) == {"starlette", "uvicorn", "fakeredis"}
    assert "fakeredis[lua]>=2.23" in extras["demo"]
    assert "wickson-purge[demo]" in extras["dev"]
    assert "wickson-purge[demo]" in extras["bench"]
    assert "uvicorn" in dependency_names(extras["service"])
    assert {"import-linter"} <= dependency_names(extras["dev"])
    assert PYPROJECT["build-system"]["requires"] == ["setuptools>=77"]


def test_what_the_example_sweeps_file_names_is_packaged() -> None:
    """ops/sweeps.example.toml's callable module and the files it reads are in the wheel."""
    setuptools = PYPROJECT["tool"]["setuptools"]
    found = set(find_packages(str(ROOT), include=setuptools["packages"]["find"]["include"]))
    sweeps = tomllib.loads(EXAMPLE.read_text())["sweep"]
    modules = {s["callable"].partition(":")[0] for s in sweeps if "callable" in s}
    assert modules == {"ops.examples.retention"}
    assert "ops.examples" in found
    assert not {p for p in found if p.startswith(("tests", "ops.bench"))}
    data: dict[str, list[str]] = setuptools["package-data"]
    assert "sweeps.example.toml" in data["ops"]
    assert {"*.csv", "takedowns/*.txt"} <= set(data["ops.examples"])


def test_the_image_installs_the_pinned_versions() -> None:
    """ops/Dockerfile builds its wheels with -c ops/constraints.txt, which pins every
    dependency of the package and of the extras the image installs."""
    dockerfile = (ROOT / "ops" / "Dockerfile").read_text()
    assert "pip wheel --wheel-dir /wheels -c ops/constraints.txt '.[service,demo]'" in dockerfile
    pins = {}
    for line in (ROOT / "ops" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    extras: dict[str, Any] = PYPROJECT["project"]["optional-dependencies"]
    wanted = dependency_names(
        PYPROJECT["project"]["dependencies"] + extras["service"] + extras["demo"]
    )
    assert wanted <= set(pins)
    assert all(re.fullmatch(r"\d[\w.]*", v) for v in pins.values())
