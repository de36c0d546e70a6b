"""The stand-in's settings, catalogue, token bucket and command line."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ops.fake_api import FakeApiConfig
from ops.fake_api.__main__ import build_parser, parse_argv
from ops.fake_api.bucket import TokenBucket
from ops.fake_api.catalogue import Catalogue, foreign_id, owned_id


def test_defaults_are_a_well_behaved_server():
    """The default config: 100,000 items, no limit, no latency, no faults."""
    config = FakeApiConfig()
    assert (config.items, config.foreign_items, config.max_batch) == (100_000, 1_000, 100)
    assert config.rate is None
    assert all(p == 0 for _, p in config.fault_probabilities())


@pytest.mark.parametrize(("rate", "burst"), [(None, 1.0), (5, 1.0), (50, 5.0), (500, 50.0)])
def test_default_burst_is_100_ms_of_rate_at_least_one(rate, burst):
    """Without an explicit burst the bucket holds max(1, rate/10) requests."""
    assert FakeApiConfig(rate=rate).effective_burst == burst


@pytest.mark.parametrize(
    "fields",
    [
        {"p_500_before": 0.6, "p_reset": 0.5},
        {"p_garbage": 1.5},
        {"rate": 0},
        {"burst": 0.5},
        {"invalid_id_pattern": "("},
        {"api_key": "same", "readonly_key": "same"},
        {"rate_headers": "sometimes"},
        {"no_such_field": 1},
    ],
)
def test_invalid_configs_are_refused(fields):
    """Inconsistent or unknown settings fail at configuration time."""
    with pytest.raises(ValidationError):
        FakeApiConfig(**fields)


def test_catalogue_knows_only_canonical_ids():
    """Owned and foreign ids exist only in their canonical spelling, within the counts."""
    catalogue = Catalogue(items=10, foreign_items=2)
    assert catalogue.owned_index(owned_id(9)) == 9
    for media_id in ["vec-9", "vec-00000009", owned_id(10), "vec-000000٣", foreign_id(1)]:
        assert catalogue.owned_index(media_id) is None
    assert catalogue.is_foreign(foreign_id(1))
    assert not catalogue.is_foreign(foreign_id(2))
    assert [Catalogue.vectors(i) for i in range(4)] == [(1, 1), (2, 1), (3, 1), (1, 1)]


def test_bucket_reconfigure_counts_the_past_at_the_old_rate():
    """Tokens accrued before a rate change are kept, capped by the new burst."""
    bucket = TokenBucket(rate=1, burst=5, now=0)
    for _ in range(5):
        assert bucket.try_take(0)
    bucket.reconfigure(rate=100, burst=2, now=3)  # 3 tokens accrued at 1/s, capped at 2
    assert [bucket.try_take(3) for _ in range(3)] == [True, True, False]


def test_cli_flags_build_the_config():
    """Every config field is a flag; values are validated by the model."""
    flags = "--port 9000 --rate 50 --items 10 --p-500-after 0.1 --rate-headers ietf"
    config, host, port = parse_argv([*flags.split(), "--invalid-id-pattern", "none"])
    assert (host, port) == ("127.0.0.1", 9000)
    assert config == FakeApiConfig(rate=50, items=10, p_500_after=0.1, rate_headers="ietf")


def test_cli_has_a_flag_for_every_config_field():
    """The parser is generated from the model, so no field lacks a flag."""
    flags = {option for action in build_parser()._actions for option in action.option_strings}
    for name in FakeApiConfig.model_fields:
        assert f"--{name.replace('_', '-')}" in flags


def test_cli_refuses_invalid_values(capsys):
    """A value the model refuses is a usage error (exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        parse_argv(["--rate", "-3"])
    assert exit_info.value.code == 2
    assert "rate" in capsys.readouterr().err
