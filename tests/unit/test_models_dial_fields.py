"""Dial request validation: every bad field is named, good requests round-trip through JSON."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.dial_fields import InvalidDialRequest, validate_dial_fields
from sipstack.dial import Scenario
from sipstack.headers.history import Diversion, HistoryInfoEntry
from sipstack.transport import Transport

GOOD: dict[str, Any] = {
    "correlation_id": "order-42",
    "trunk": "carrier-a",
    "request_uri": "sip:+15550002@carrier.test;user=phone",
}


def problems(**fields: Any) -> dict[str, str]:
    with pytest.raises(InvalidDialRequest) as caught:
        validate_dial_fields({**GOOD, **fields})
    return caught.value.errors


def test_minimal_request_gets_defaults() -> None:
    fields = validate_dial_fields(GOOD)
    assert fields.scenario is Scenario.CAMPAIGN
    assert fields.transport is None
    assert fields.codecs == ()
    assert fields.ring_timeout is None


def test_missing_required_fields_are_all_named() -> None:
    with pytest.raises(InvalidDialRequest) as caught:
        validate_dial_fields({"trunk": ""})
    assert caught.value.field == "correlation_id"
    assert set(caught.value.errors) == {"correlation_id", "trunk", "request_uri"}
    assert "correlation_id: missing" in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("request_uri", "mailto:bob@example.com", "unsupported scheme 'mailto'"),
        ("request_uri", "sip:bob@host:99999", "port 99999 out of range 1..65535"),
        ("request_uri", "sip:bob@host:0", "port 0 out of range"),
        ("request_uri", "sip:bob@bad host", "invalid host 'bad host'"),
        ("request_uri", "sip:bob@[::1", "malformed host or port"),
        ("request_uri", "sip:@carrier.test", "empty user"),
        ("request_uri", "sip:", "missing host"),
        ("request_uri", "not-a-uri", "missing scheme"),
        ("request_uri", "tel:", "missing number"),
        ("request_uri", "sip:bob@host;transport=sctp", "unsupported transport 'sctp'"),
        ("request_uri", "sips:bob@host;transport=udp", "cannot use transport=udp"),
        ("request_uri", "sip:bob@host\r\nX-Injected: 1", "control character"),
        ("request_uri", 42, "must be a string"),
        ("asserted_identity_uri", "sip:alice@:5060", "missing host"),
        ("trunk", "bad trunk", "trunk name"),
        ("caller_display_name", "Alice\nBob", "control character"),
        ("caller_user", "alice bob", "SIP user part"),
        ("transport", "sctp", "unknown SIP transport"),
        ("scenario", "robocall", "not one of"),
        ("signaling_addr", "proxy.test:70000", "port 70000 out of range 1..65535"),
        ("signaling_addr", "proxy test", "invalid host 'proxy test'"),
        ("signaling_addr", "proxy.test:", "bad port ''"),
        ("signaling_addr", "[2001:db8::1", "unclosed '['"),
        ("rtp_port", True, "must be an integer"),
        ("rtp_port", 70000, "outside 0-65535"),
        ("ring_timeout", -1, "0 < seconds"),
        ("ring_timeout", float("nan"), "0 < seconds"),
        ("ring_timeout", "30", "number of seconds"),
        ("session_expires", 60, "outside 90-"),
        ("offer_srtp", "yes", "true or false"),
        ("codecs", ["PCMA", "GSM"], "unknown codec 'GSM'"),
        ("codecs", "PCMA", "must be a list"),
        ("privacy_tokens", ["id", "bad token"], "Privacy token"),
        ("call_id", "has space@host", "Call-ID"),
        ("history_info", [{"uri": "sip:a@b"}], "lacks index"),
        ("history_info", [{"uri": "sip:a@b:99999", "index": "1"}], "port 99999 out of range"),
        ("history_info", [{"uri": "sip:a@b", "index": "1", "colour": "red"}], "unknown keys"),
        ("diversion", [{"uri": "sip:a@b", "counter": -1}], "outside 0-1000"),
        ("correlation_id", "x" * 300, "longer than 255"),
    ],
)
def test_malformed_field_is_named(field: str, value: Any, message: str) -> None:
    errors = problems(**{field: value})
    assert list(errors) == [field]
    assert message in errors[field]


@pytest.mark.parametrize("uri", [
    "sip:+15550002@carrier.test;user=phone",
    "sips:bob@carrier.test:5061;transport=tcp",
    "sip:bob@[2001:db8::1]:5070",
    "sip:carrier.test",
    "tel:+15550002",
    "SIP:Bob@Carrier.Test",
])
def test_request_uris_sipstack_parses_are_accepted(uri: str) -> None:
    assert validate_dial_fields({**GOOD, "request_uri": uri}).request_uri == uri


def test_unknown_field_is_rejected() -> None:
    assert problems(ring_timout=30) == {"ring_timout": "unknown field"}


def test_credentials_are_not_accepted_in_a_request() -> None:
    assert "password" not in str(problems(credentials={"username": "u", "password": "p"}))


def test_not_a_mapping() -> None:
    with pytest.raises(InvalidDialRequest, match="must be an object"):
        validate_dial_fields(["correlation_id"])  # type: ignore[arg-type]


def test_full_request_converts_to_a_sipstack_request() -> None:
    fields = validate_dial_fields(
        {
            **GOOD,
            "signaling_addr": "[2001:db8::1]:5061",
            "transport": "TLS",
            "scenario": "transfer_agent",
            "caller_user": "+15550001",
            "caller_display_name": "Zoë ünïcode",
            "asserted_identity_uri": "tel:+15550001",
            "privacy_tokens": ["id"],
            "history_info": [{"uri": "sip:a@b", "index": "1", "reason": "SIP;cause=302"}],
            "diversion": [{"uri": "sip:c@d", "reason": "no-answer", "counter": 1}],
            "codecs": ["opus", "pcma"],
            "offer_srtp": True,
            "ring_timeout": 25,
            "max_duration": 3600,
            "session_expires": 1800,
        }
    )
    request = fields.to_dial_request(signaling_addr="ignored.test")
    assert request.target.signaling_addr == "[2001:db8::1]:5061"
    assert request.target.transport is Transport.TLS
    assert request.scenario is Scenario.TRANSFER_AGENT
    assert [codec.name for codec in request.codecs] == ["opus", "PCMA"]
    assert request.history_info == (
        HistoryInfoEntry(uri="sip:a@b", index="1", reason="SIP;cause=302"),
    )
    assert request.diversion == (Diversion(uri="sip:c@d", reason="no-answer", counter=1),)
    assert request.ring_timeout == 25.0
    assert request.credentials is None
    assert validate_dial_fields(fields.to_json()) == fields


def test_trunk_proxy_fills_a_missing_signaling_address() -> None:
    request = validate_dial_fields(GOOD).to_dial_request(signaling_addr="proxy.carrier.test:5060")
    assert request.target.signaling_addr == "proxy.carrier.test:5060"


@given(
    correlation_id=st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"),
        min_size=1,
        max_size=40,
    ).filter(str.strip),
    user=st.from_regex(r"\A\+?[0-9]{3,15}\Z"),
    ring_timeout=st.none() | st.floats(min_value=0.5, max_value=600),
    srtp=st.booleans(),
)
def test_json_round_trip(
    correlation_id: str, user: str, ring_timeout: float | None, srtp: bool
) -> None:
    fields = validate_dial_fields(
        {
            **GOOD,
            "correlation_id": correlation_id,
            "caller_user": user,
            "ring_timeout": ring_timeout,
            "offer_srtp": srtp,
        }
    )
    assert validate_dial_fields(fields.to_json()) == fields
