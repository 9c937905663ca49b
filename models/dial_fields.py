"""Validate a scheduler's dial request fields before anything is stored (no database needed)."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sipstack.dial import Credentials, DialRequest, DialTarget, Scenario
from sipstack.errors import SipParseError
from sipstack.headers.history import Diversion, HistoryInfoEntry
from sipstack.sdp import DEFAULT_CODECS, Codec
from sipstack.target import parse_hostport, uri_transport
from sipstack.transport import Transport
from sipstack.uri import SipUri, parse_uri


class InvalidDialRequest(ValueError):
    """A dial request field is missing or malformed. `field` names the first one; `errors`
    maps every bad field to what is wrong with it."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        self.field = next(iter(self.errors))
        details = "; ".join(f"{name}: {problem}" for name, problem in self.errors.items())
        super().__init__(f"invalid dial request: {details}")


# Limits keep a single request from bloating a row or a SIP header.
MAX_ID_LENGTH = 255
MAX_TEXT_LENGTH = 512
MAX_URI_LENGTH = 2048
MAX_SDP_LENGTH = 65536
MAX_LIST_LENGTH = 32
MAX_TIMEOUT_SECONDS = 86400.0
MIN_SESSION_EXPIRES = 90  # RFC 4028 §5: Min-SE is never below 90 s

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TRUNK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# RFC 3261 §25.1: user = 1*( unreserved / escaped / user-unreserved )
_SIP_USER = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+$")
# RFC 3261 §25.1: Call-ID = word [ "@" word ]
_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
_CALL_ID = re.compile(rf"^{_WORD}(@{_WORD})?$")
_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")

KNOWN_CODECS: dict[str, Codec] = {codec.name.lower(): codec for codec in DEFAULT_CODECS}


@dataclass(frozen=True, slots=True, kw_only=True)
class DialFields:
    """A validated dial request, ready to store (`to_json`) and to dial (`to_dial_request`)."""

    correlation_id: str
    trunk: str
    request_uri: str
    signaling_addr: str = ""
    transport: Transport | None = None
    scenario: Scenario = Scenario.CAMPAIGN
    script_id: str = ""
    caller_user: str = ""
    caller_display_name: str = ""
    asserted_identity_uri: str = ""
    asserted_identity_display_name: str = ""
    privacy_tokens: tuple[str, ...] = ()
    history_info: tuple[HistoryInfoEntry, ...] = ()
    diversion: tuple[Diversion, ...] = ()
    rtp_port: int = 0
    codecs: tuple[str, ...] = ()
    offer_srtp: bool = False
    call_id: str = ""
    sdp_body: str = ""
    identity_header: str = ""
    ring_timeout: float | None = None
    max_duration: float | None = None
    session_expires: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values; `validate_dial_fields(fields.to_json()) == fields`."""
        data: dict[str, Any] = {}
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.name in ("history_info", "diversion"):
                value = [_entry_json(entry) for entry in value]
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Transport | Scenario):
                value = value.value
            data[spec.name] = value
        return data

    def to_dial_request(
        self, *, signaling_addr: str = "", credentials: Credentials | None = None
    ) -> DialRequest:
        """The sipstack request; `signaling_addr` (the trunk's proxy) applies when the request
        named none. Credentials come from trunk configuration, never from the stored request."""
        target = DialTarget(
            request_uri=self.request_uri,
            signaling_addr=self.signaling_addr or signaling_addr,
            caller_user=self.caller_user,
            caller_display_name=self.caller_display_name,
            transport=self.transport,
        )
        return DialRequest(
            target=target,
            scenario=self.scenario,
            correlation_id=self.correlation_id,
            script_id=self.script_id,
            trunk=self.trunk,
            caller_user=self.caller_user,
            caller_display_name=self.caller_display_name,
            asserted_identity_uri=self.asserted_identity_uri,
            asserted_identity_display_name=self.asserted_identity_display_name,
            privacy_tokens=self.privacy_tokens,
            history_info=self.history_info,
            diversion=self.diversion,
            rtp_port=self.rtp_port,
            codecs=tuple(KNOWN_CODECS[name.lower()] for name in self.codecs),
            offer_srtp=self.offer_srtp,
            call_id=self.call_id,
            sdp_body=self.sdp_body,
            identity_header=self.identity_header,
            ring_timeout=self.ring_timeout,
            max_duration=self.max_duration,
            session_expires=self.session_expires,
            credentials=credentials,
        )


def _entry_json(entry: HistoryInfoEntry | Diversion) -> dict[str, Any]:
    return {spec.name: getattr(entry, spec.name) for spec in dataclasses.fields(entry)}


class _Problem(Exception):
    """One field's problem, collected by validate_dial_fields."""


def _text(value: Any, *, max_length: int = MAX_TEXT_LENGTH, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise _Problem(f"must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise _Problem("must not be empty")
    if len(value) > max_length:
        raise _Problem(f"longer than {max_length} characters")
    if _CONTROL.search(value):
        # CR/LF in a value would inject SIP headers; no control character has a use here.
        raise _Problem("contains a control character (CR, LF, NUL, ...)")
    return value


def _pattern(value: str, pattern: re.Pattern[str], what: str) -> str:
    if value and not pattern.match(value):
        raise _Problem(f"{value!r} is not {what}")
    return value


def _correlation_id(value: Any) -> str:
    return _text(value, max_length=MAX_ID_LENGTH, required=True)


def _trunk(value: Any) -> str:
    text = _text(value, max_length=64, required=True)
    return _pattern(text, _TRUNK, "a trunk name (letters, digits, '_', '.', '-')")


def _uri(value: Any, *, required: bool = False) -> str:
    """A sip:, sips: or tel: URI as sipstack parses it, with a transport it can dial."""
    text = _text(value, max_length=MAX_URI_LENGTH, required=required)
    if not text:
        return text
    try:
        uri = parse_uri(text)
        if isinstance(uri, SipUri):
            uri_transport(uri)
    except SipParseError as error:
        raise _Problem(str(error)) from None
    return text


def _signaling_addr(value: Any) -> str:
    """host, host:port, [ipv6] or [ipv6]:port, as the UAC will parse it."""
    text = _text(value, max_length=300)
    if not text:
        return ""
    try:
        parse_hostport(text, 5060)
    except SipParseError as error:
        raise _Problem(str(error)) from None
    return text


def _transport(value: Any) -> Transport | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _Problem(f"must be a string, got {type(value).__name__}")
    try:
        return Transport.parse(value)
    except ValueError as error:
        raise _Problem(str(error)) from None


def _scenario(value: Any) -> Scenario:
    if value is None:
        return Scenario.CAMPAIGN
    try:
        return Scenario(value)
    except ValueError:
        allowed = ", ".join(scenario.value for scenario in Scenario)
        raise _Problem(f"{value!r} is not one of {allowed}") from None


def _caller_user(value: Any) -> str:
    return _pattern(_text(value, max_length=128), _SIP_USER, "a SIP user part")


def _call_id(value: Any) -> str:
    return _pattern(_text(value, max_length=MAX_ID_LENGTH), _CALL_ID, "a Call-ID (RFC 3261 word)")


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise _Problem(f"must be a list, got {type(value).__name__}")
    if len(value) > MAX_LIST_LENGTH:
        raise _Problem(f"more than {MAX_LIST_LENGTH} entries")
    return list(value)


def _privacy_tokens(value: Any) -> tuple[str, ...]:
    tokens = []
    for item in _list(value):
        token = _text(item, max_length=32, required=True)
        tokens.append(_pattern(token, _TOKEN, "a Privacy token (RFC 3323)"))
    return tuple(tokens)


def _entries(value: Any, cls: type[Any], required: tuple[str, ...]) -> tuple[Any, ...]:
    allowed = {spec.name: spec for spec in dataclasses.fields(cls)}
    entries = []
    for position, item in enumerate(_list(value)):
        if isinstance(item, cls):
            entries.append(item)
            continue
        if not isinstance(item, Mapping):
            raise _Problem(f"entry {position} must be an object, got {type(item).__name__}")
        unknown = sorted(set(item) - set(allowed))
        if unknown:
            raise _Problem(f"entry {position} has unknown keys {unknown}")
        values: dict[str, Any] = {}
        for key, raw in item.items():
            if key in ("counter", "limit"):
                values[key] = None if raw is None else _integer(raw, low=0, high=1000)
            elif key in ("uri",):
                values[key] = _uri(raw, required=True)
            else:
                values[key] = _text(raw, max_length=MAX_TEXT_LENGTH)
        missing = [key for key in required if not values.get(key)]
        if missing:
            raise _Problem(f"entry {position} lacks {', '.join(missing)}")
        entries.append(cls(**values))
    return tuple(entries)


def _history_info(value: Any) -> tuple[HistoryInfoEntry, ...]:
    return _entries(value, HistoryInfoEntry, ("uri", "index"))


def _diversion(value: Any) -> tuple[Diversion, ...]:
    return _entries(value, Diversion, ("uri",))


def _integer(value: Any, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Problem(f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise _Problem(f"{value} is outside {low}-{high}")
    return value


def _rtp_port(value: Any) -> int:
    return 0 if value is None else _integer(value, low=0, high=65535)


def _codecs(value: Any) -> tuple[str, ...]:
    names = []
    for item in _list(value):
        name = _text(item, max_length=32, required=True)
        if name.lower() not in KNOWN_CODECS:
            known = ", ".join(codec.name for codec in DEFAULT_CODECS)
            raise _Problem(f"unknown codec {name!r} (known: {known})")
        names.append(KNOWN_CODECS[name.lower()].name)
    return tuple(names)


def _flag(value: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _Problem(f"must be true or false, got {value!r}")
    return value


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Problem(f"must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or not 0 < value <= MAX_TIMEOUT_SECONDS:
        raise _Problem(f"{value} is not within 0 < seconds <= {MAX_TIMEOUT_SECONDS:.0f}")
    return float(value)


def _session_expires(value: Any) -> int | None:
    if value is None:
        return None
    return _integer(value, low=MIN_SESSION_EXPIRES, high=int(MAX_TIMEOUT_SECONDS))


def _sdp_body(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Problem(f"must be a string, got {type(value).__name__}")
    if len(value) > MAX_SDP_LENGTH:
        raise _Problem(f"longer than {MAX_SDP_LENGTH} characters")
    if "\x00" in value:
        raise _Problem("contains NUL")
    return value


_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "correlation_id": _correlation_id,
    "trunk": _trunk,
    "request_uri": lambda value: _uri(value, required=True),
    "signaling_addr": _signaling_addr,
    "transport": _transport,
    "scenario": _scenario,
    "script_id": lambda value: _text(value, max_length=MAX_ID_LENGTH),
    "caller_user": _caller_user,
    "caller_display_name": lambda value: _text(value, max_length=128),
    "asserted_identity_uri": _uri,
    "asserted_identity_display_name": lambda value: _text(value, max_length=128),
    "privacy_tokens": _privacy_tokens,
    "history_info": _history_info,
    "diversion": _diversion,
    "rtp_port": _rtp_port,
    "codecs": _codecs,
    "offer_srtp": _flag,
    "call_id": _call_id,
    "sdp_body": _sdp_body,
    "identity_header": lambda value: _text(value, max_length=MAX_SDP_LENGTH),
    "ring_timeout": _seconds,
    "max_duration": _seconds,
    "session_expires": _session_expires,
}
REQUIRED_FIELDS = ("correlation_id", "trunk", "request_uri")
ACCEPTED_FIELDS = tuple(_VALIDATORS)


def validate_dial_fields(fields: Mapping[str, Any] | DialFields) -> DialFields:
    """Check every field of a dial request; raise InvalidDialRequest naming each bad one.

    Unknown field names are errors too: a misspelt optional field would otherwise be dropped
    without a word. Credentials are not accepted here; they belong to the trunk configuration.
    """
    if isinstance(fields, DialFields):
        return fields
    if not isinstance(fields, Mapping):
        raise InvalidDialRequest({"request": f"must be an object, got {type(fields).__name__}"})
    errors: dict[str, str] = {}
    for name in REQUIRED_FIELDS:
        if fields.get(name) in (None, ""):
            errors[name] = "missing"
    for name in fields:
        if name not in _VALIDATORS:
            errors[str(name)] = "unknown field"
    values: dict[str, Any] = {}
    for name, validate in _VALIDATORS.items():
        if name in errors or name not in fields:
            continue
        try:
            values[name] = validate(fields[name])
        except _Problem as problem:
            errors[name] = str(problem)
    if errors:
        raise InvalidDialRequest(errors)
    return DialFields(**values)
