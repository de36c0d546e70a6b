"""The API fuzzed from its own OpenAPI document: whatever arrives, never a 500.

The document comes from `create_app` at import (schemathesis' lazy `from_fixture` does
not run under pytest 9); the requests go to the running service over HTTP."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app
from service.settings import load_service_settings
from tests.service.conftest import TOKENS, Service, token_table
from tests.services import REDIS_URL

pytestmark = pytest.mark.integration

# The test Redis: create_app points this process's Celery producer at its settings' Redis.
_settings = load_service_settings(redis_url=REDIS_URL, service_tokens=json.loads(token_table()))
_document = create_app(_settings).openapi()
schema = schemathesis.openapi.from_dict(_document)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
"""Not positive_data_acceptance: schema-valid requests may break rules only the store
knows (an alias no worker holds, an unknown job) and rightly get a 4xx."""


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(
    case: schemathesis.Case, service: Service, rclient: object
) -> None:
    """Generated requests (a valid token, fuzzed paths, queries and bodies) get an
    answer, never a 5xx."""
    headers = {"Authorization": f"Bearer {TOKENS['ops'][0]}"}
    case.call_and_validate(base_url=service.url, headers=headers, checks=CHECKS)
