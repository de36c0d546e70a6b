"""The real tier's fixtures live in tests/services.py (shared with tests/faults)."""

from tests.services import *  # noqa: F403
