"""`wickson-purge serve`: the app under uvicorn, configured from the environment."""

from __future__ import annotations

import uvicorn

from service.app import create_app
from worker.logs import configure_logging


def serve(host: str, port: int) -> int:
    """Serve until SIGINT/SIGTERM; ConfigError (exit 2) if the settings are unusable."""
    configure_logging()
    app = create_app()
    # log_config None: uvicorn's lines go through our structlog processors.
    uvicorn.run(app, host=host, port=port, log_config=None, proxy_headers=False)
    return 0
