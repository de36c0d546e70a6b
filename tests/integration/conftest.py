"""The real tier's fixtures live in tests/services.py (shared with tests/faults)."""

import pytest

from tests.services import *  # noqa: F403
from tests.services import parametrize_brokers


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test of this tier that starts workers runs on Redis and on RabbitMQ."""
    parametrize_brokers(metafunc)
