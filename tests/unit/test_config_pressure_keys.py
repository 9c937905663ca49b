"""The back-pressure and health-check trunk keys: defaults, `[defaults]`, errors naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from workers.config.settings import ConfigError, parse_trunks


def trunk(**keys: Any) -> dict[str, Any]:
    return {"trunks": {"t": {"proxy": "127.0.0.1:5060", **keys}}}


def test_defaults_are_the_documented_ones() -> None:
    config = parse_trunks(trunk()).get("t")
    assert config.backpressure is True
    assert (config.backpressure_decrease, config.backpressure_increase,
            config.backpressure_interval, config.backpressure_min_factor,
            config.backpressure_max_hold, config.backpressure_guard) == (
                0.5, 0.1, 5.0, 0.05, 300.0, 1.0)
    assert config.health_check is False
    assert (config.health_interval, config.health_timeout, config.health_down_after,
            config.health_up_after, config.health_stale_after) == (30.0, 5.0, 3, 2, 300.0)


def test_defaults_table_applies_to_every_trunk() -> None:
    document = {"defaults": {"health_check": True, "backpressure_interval": 2},
                "trunks": {"a": {"proxy": "127.0.0.1:5060"},
                           "b": {"proxy": "127.0.0.1:5070", "health_check": False}}}
    trunks = parse_trunks(document)
    assert trunks.get("a").health_check and not trunks.get("b").health_check
    assert trunks.get("b").backpressure_interval == 2.0


@pytest.mark.parametrize(("keys", "message"), [
    ({"backpressure": "yes"}, "trunks.t.backpressure: must be true or false, got str"),
    ({"backpressure_decrease": 1}, "trunks.t.backpressure_decrease: must be above 0 and below "
                                   "1, got 1"),
    ({"backpressure_decrease": 0}, "trunks.t.backpressure_decrease: must be above 0"),
    ({"backpressure_increase": 1.5}, "trunks.t.backpressure_increase: must be above 0 and at "
                                     "most 1, got 1.5"),
    ({"backpressure_min_factor": -0.1}, "trunks.t.backpressure_min_factor: must be a number "
                                        ">= 0"),
    ({"backpressure_interval": 0}, "trunks.t.backpressure_interval: must be a number >= 0.001"),
    ({"backpressure_guard": "1"}, "trunks.t.backpressure_guard: must be a number, got str"),
    ({"health_down_after": 0}, "trunks.t.health_down_after: must be an integer >= 1, got 0"),
    ({"health_up_after": 1.5}, "trunks.t.health_up_after: must be an integer, got float"),
    ({"health_timeout": "5"}, "trunks.t.health_timeout: must be a number, got str"),
    ({"health_interval": 60, "health_stale_after": 61},
     "trunks.t.health_stale_after: must be above health_interval + health_timeout (65 s), "
     "got 61"),
])
def test_bad_values_are_refused_naming_the_key(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_trunks(trunk(**keys), source="trunks.toml")
    assert message in str(error.value)
