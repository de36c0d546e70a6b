"""The real tier's fixtures live in tests/services.py (shared with tests/integration)."""

import pytest

from tests.services import *  # noqa: F403
from tests.services import parametrize_brokers


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Fault tests marked `both_brokers` run once on Redis and once on RabbitMQ."""
    if metafunc.definition.get_closest_marker("both_brokers"):
        parametrize_brokers(metafunc)
