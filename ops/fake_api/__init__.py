"""A faithful local stand-in for the Wickson batch-delete API, with a ledger of the truth.

Rate limit, latency, 500s, timeouts, resets and lying 200s on demand (random or scripted);
the ledger says what was really deleted, whatever the answers claimed.

    with run_in_thread(FakeApiConfig(rate=50, seed=1)) as fake:
        httpx.request("DELETE", f"{fake.url}/v1/media/batch", ...)
        assert fake.api.ledger().deleted == ...
"""

from ops.fake_api.app import create_app
from ops.fake_api.config import FakeApiConfig
from ops.fake_api.ledger import Ledger, TimelineEntry
from ops.fake_api.server import RunningFakeApi, run_in_thread, serve
from ops.fake_api.state import FakeApi, Reply

__all__ = [
    "FakeApi",
    "FakeApiConfig",
    "Ledger",
    "Reply",
    "RunningFakeApi",
    "TimelineEntry",
    "create_app",
    "run_in_thread",
    "serve",
]
