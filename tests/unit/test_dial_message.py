"""The dial message (version 1): every bad field is named, the published JSON Schema is the
model's, example messages validate against it, good messages round-trip through JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.dial_fields import validate_dial_fields
from sipstack.dial import Scenario
from sipstack.headers.history import Diversion, HistoryInfoEntry
from sipstack.transport import Transport
from workers.contract.dial_message import (
    DialMessage,
    InvalidDialRequest,
    message_leg_id,
    message_schema,
    parse_dial_json,
    parse_dial_message,
)

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "dial-message.schema.json"
GOOD: dict[str, Any] = {
    "version": 1,
    "correlation_id": "order-42",
    "trunk": "carrier-a",
    "to": "sip:+15550002@carrier.test;user=phone",
}
FULL: dict[str, Any] = {
    **GOOD,
    "not_after": "2030-05-01T10:00:00Z",
    "signaling_addr": "[2001:db8::1]:5061",
    "transport": "tls",
    "scenario": "transfer_agent",
    "script_id": "script-7",
    "campaign_id": "spring",
    "caller_user": "+15550001",
    "caller_display_name": "Zoë ünïcode",
    "asserted_identity_uri": "tel:+15550001",
    "asserted_identity_display_name": "Acme",
    "privacy_tokens": ["id"],
    "history_info": [{"uri": "sip:a@b", "index": "1", "reason": "SIP;cause=302"}],
    "diversion": [{"uri": "sip:c@d", "reason": "no-answer", "counter": 1}],
    "identity_header": "eyJhbGciOiJFUzI1NiJ9.e30.sig;info=<https://cert.example/x.pem>",
    "codecs": ["opus", "pcma"],
    "offer_srtp": True,
    "ring_timeout": 25,
    "max_duration": 3600,
    "session_expires": 1800,
}


def problems(**fields: Any) -> dict[str, str]:
    with pytest.raises(InvalidDialRequest) as caught:
        parse_dial_message({**GOOD, **fields})
    return caught.value.errors


def test_published_schema_is_the_models_schema() -> None:
    published = json.loads(SCHEMA_FILE.read_text())
    assert published == message_schema(), (
        "docs/dial-message.schema.json is stale: regenerate it with "
        "python -m workers.contract.schema > docs/dial-message.schema.json"
    )


@pytest.mark.parametrize("example", [GOOD, FULL, {**GOOD, "to": "+1 (555) 000-2"}],
                         ids=["minimal", "full", "bare-number"])
def test_examples_validate_against_the_schema_and_the_model(example: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(message_schema()).validate(example)
    parse_dial_json(json.dumps(example))


@pytest.mark.parametrize("bad", [
    {**GOOD, "version": 2}, {**GOOD, "rtp_port": 70000}, {**GOOD, "colour": "red"},
    {key: value for key, value in GOOD.items() if key != "to"}, {**GOOD, "trunk": "bad trunk"},
    {**GOOD, "scenario": "robocall"}, {**GOOD, "offer_srtp": "yes"},
])
def test_the_schema_refuses_what_the_model_refuses(bad: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(message_schema()).validate(bad)
    with pytest.raises(InvalidDialRequest):
        parse_dial_message(bad)


def test_minimal_message_gets_defaults() -> None:
    message = parse_dial_message(GOOD)
    assert message.version == 1
    assert message.scenario is Scenario.CAMPAIGN
    assert message.transport is None
    assert message.codecs == ()
    assert message.not_after is None


def test_missing_required_fields_are_all_named() -> None:
    with pytest.raises(InvalidDialRequest) as caught:
        parse_dial_message({"trunk": "carrier-a"})
    assert caught.value.field == "correlation_id"
    assert caught.value.errors == {"correlation_id": "missing", "to": "missing"}
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("version", 2, "1"),
        ("to", "mailto:bob@example.com", "neither a sip:"),
        ("to", "sip:bob@host:99999", "port 99999 out of range 1..65535"),
        ("to", "sip:bob@bad host", "invalid host 'bad host'"),
        ("to", "sip:@carrier.test", "empty user"),
        ("to", "tel:", "missing number"),
        ("to", "sip:bob@host;transport=sctp", "unsupported transport 'sctp'"),
        ("to", "sips:bob@host;transport=udp", "cannot use transport=udp"),
        ("to", "sip:bob@host\r\nX-Injected: 1", "control character"),
        ("to", 42, "valid string"),
        ("to", "", "must not be empty"),
        ("not_after", "2030-01-01T00:00:00", "timezone"),
        ("not_after", "soon", "datetime"),
        ("asserted_identity_uri", "sip:alice@:5060", "missing host"),
        ("trunk", "bad trunk", "pattern"),
        ("caller_display_name", "Alice\nBob", "control character"),
        ("caller_user", "alice bob", "SIP user part"),
        ("transport", "sctp", "unknown SIP transport"),
        ("scenario", "robocall", "campaign"),
        ("signaling_addr", "proxy.test:70000", "port 70000 out of range 1..65535"),
        ("signaling_addr", "[2001:db8::1", "unclosed '['"),
        ("rtp_port", True, "valid integer"),
        ("rtp_port", 70000, "less than or equal to 65535"),
        ("ring_timeout", -1, "greater than 0"),
        ("ring_timeout", "30", "valid number"),
        ("max_duration", 10**6, "less than or equal to 86400"),
        ("session_expires", 60, "greater than or equal to 90"),
        ("offer_srtp", "yes", "valid boolean"),
        ("codecs", ["PCMA", "GSM"], "unknown codec 'GSM'"),
        ("codecs", "PCMA", "valid tuple"),
        ("privacy_tokens", ["id", "bad token"], "Privacy token"),
        ("call_id", "has space@host", "Call-ID"),
        ("sdp_body", "v=0\x00", "NUL"),
        ("identity_header", "a\nb", "control character"),
        ("script_id", "x" * 300, "at most 255"),
        ("campaign_id", 7, "valid string"),
        ("history_info", [{"uri": "sip:a@b"}], "missing"),
        ("history_info", [{"uri": "sip:a@b:99999", "index": "1"}], "port 99999 out of range"),
        ("history_info", [{"uri": "sip:a@b", "index": "1", "colour": "red"}], "unknown field"),
        ("diversion", [{"uri": "sip:c@d", "counter": -1}], "greater than or equal to 0"),
        ("correlation_id", "x" * 300, "at most 255"),
        ("correlation_id", "   ", "must not be empty"),
    ],
)
def test_malformed_field_is_named(field: str, value: Any, message: str) -> None:
    errors = problems(**{field: value})
    assert len(errors) == 1
    name, problem = next(iter(errors.items()))
    assert name == field or name.startswith((f"{field}[", f"{field}.")), errors
    assert message in problem, errors


def test_unknown_field_and_credentials_are_refused() -> None:
    assert problems(ring_timout=30) == {"ring_timout": "unknown field"}
    assert problems(credentials={"username": "u", "password": "p"}) == {
        "credentials": "unknown field"}


def test_not_an_object_and_not_json() -> None:
    with pytest.raises(InvalidDialRequest, match="must be an object"):
        parse_dial_message(["correlation_id"])  # type: ignore[arg-type]
    with pytest.raises(InvalidDialRequest, match="request"):
        parse_dial_json(b"{not json")


@pytest.mark.parametrize("uri", [
    "sip:+15550002@carrier.test;user=phone",
    "sips:bob@carrier.test:5061;transport=tcp",
    "sip:bob@[2001:db8::1]:5070",
    "sip:carrier.test",
    "tel:+15550002",
    "SIP:Bob@Carrier.Test",
])
def test_uris_sipstack_parses_are_accepted(uri: str) -> None:
    assert parse_dial_message({**GOOD, "to": uri}).request_uri == uri


def test_stored_requests_with_request_uri_still_load() -> None:
    old = {key: value for key, value in GOOD.items() if key not in ("to", "version")}
    assert validate_dial_fields({**old, "request_uri": GOOD["to"]}) == parse_dial_message(GOOD)


def test_full_message_converts_to_a_sipstack_request() -> None:
    message = parse_dial_message(FULL)
    request = message.to_dial_request(signaling_addr="ignored.test")
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
    assert parse_dial_message(message.to_json()) == message


def test_expiry_and_leg_id() -> None:
    message = parse_dial_message({**GOOD, "not_after": "2030-01-01T00:00:00+01:00"})
    deadline = message.not_after.timestamp() if message.not_after else 0.0
    assert not message.expired(deadline - 1)
    assert message.expired(deadline + 1)
    assert message_leg_id("a", "c-1") == message_leg_id("a", "c-1") != message_leg_id("a", "c-2")


def test_trunk_proxy_fills_a_missing_signaling_address() -> None:
    request = parse_dial_message(GOOD).to_dial_request(signaling_addr="proxy.carrier.test:5060")
    assert request.target.signaling_addr == "proxy.carrier.test:5060"


@given(
    correlation_id=st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"),
        min_size=1, max_size=40,
    ).filter(str.strip),
    user=st.from_regex(r"\A\+?[0-9]{3,15}\Z"),
    ring_timeout=st.none() | st.floats(min_value=0.5, max_value=600),
    srtp=st.booleans(),
)
def test_json_round_trip(
    correlation_id: str, user: str, ring_timeout: float | None, srtp: bool
) -> None:
    message = DialMessage.model_validate({
        **GOOD, "correlation_id": correlation_id, "caller_user": user,
        "ring_timeout": ring_timeout, "offer_srtp": srtp,
    })
    assert parse_dial_json(json.dumps(message.to_json())) == message
    jsonschema.Draft202012Validator(message_schema()).validate(message.to_json())
