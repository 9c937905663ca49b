"""The dial message, version 1: the one definition of a dial request (pydantic v2).

A scheduler publishes this as a plain JSON body on `dial.<trunk>.json`
(`workers.contract.queues.dial_message_queue_name`); docs/dial-message.md shows the bytes and
docs/dial-message.schema.json is `DialMessage.model_json_schema()` (a unit test keeps the
published file equal to it). The Python client builds the same model.

Why the model lives here and not in sipstack: sipstack is the sans-IO core, mypy-strict and
free of third-party dependencies; its `DialRequest` dataclass stays the core's input and is
built from a message by one function, `DialMessage.to_dial_request`. The model's validators
reuse sipstack's own parsers (`parse_uri`, `uri_transport`, `parse_hostport`,
`Transport.parse`), so a request this model accepts is one the core can dial, and every error
names its field (`InvalidDialRequest.errors`: field -> problem). `models.dial_fields` only
re-exports these names for the repository code that stores a validated request.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from sipstack.dial import Credentials, DialRequest, DialTarget, Scenario
from sipstack.errors import SipParseError
from sipstack.headers.history import Diversion, HistoryInfoEntry
from sipstack.sdp import DEFAULT_CODECS, Codec
from sipstack.target import parse_hostport, uri_transport
from sipstack.transport import Transport
from sipstack.uri import SipUri, parse_uri

MESSAGE_VERSION = 1

# Limits keep a single request from bloating a row or a SIP header.
MAX_ID_LENGTH = 255
MAX_TEXT_LENGTH = 512
MAX_URI_LENGTH = 2048
MAX_SDP_LENGTH = 65536
MAX_LIST_LENGTH = 32
MAX_TIMEOUT_SECONDS = 86400.0
MIN_SESSION_EXPIRES = 90  # RFC 4028 §5: Min-SE is never below 90 s

TRUNK_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# RFC 3261 §25.1: user = 1*( unreserved / escaped / user-unreserved )
_SIP_USER = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+$")
# RFC 3261 §25.1: Call-ID = word [ "@" word ]
_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
_CALL_ID = re.compile(rf"^{_WORD}(@{_WORD})?$")
_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
# RFC 3966 visual separators, and the spaces people type between digit groups.
_VISUAL_SEPARATORS = re.compile(r"[\s\-.()]")
_PHONE_NUMBER = re.compile(r"\+?[0-9]{1,32}")

KNOWN_CODECS: dict[str, Codec] = {codec.name.lower(): codec for codec in DEFAULT_CODECS}


class InvalidDialRequest(ValueError):
    """A dial request field is missing or malformed. `field` names the first one; `errors`
    maps every bad field to what is wrong with it."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors) or {"request": "invalid"}
        self.field = next(iter(self.errors))
        details = "; ".join(f"{name}: {problem}" for name, problem in self.errors.items())
        super().__init__(f"invalid dial request: {details}")


# --- the checks, each one reusable as a pydantic validator -----------------------------------


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        # CR/LF in a value would inject SIP headers; no control character has a use here.
        raise ValueError("contains a control character (CR, LF, NUL, ...)")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _check_uri(value: str) -> str:
    """A sip:, sips: or tel: URI as sipstack parses it, with a transport it can dial."""
    if not value:
        return value
    try:
        uri = parse_uri(value)
        if isinstance(uri, SipUri):
            uri_transport(uri)
    except SipParseError as error:
        raise ValueError(str(error)) from None
    return value


def is_uri(value: str) -> bool:
    return value.strip().lower().startswith(("sip:", "sips:", "tel:"))


def phone_number(value: str) -> str | None:
    """The digits (and leading '+') of a typed phone number; None when it is not one."""
    number = _VISUAL_SEPARATORS.sub("", value.strip())
    return number if _PHONE_NUMBER.fullmatch(number) else None


def _check_target(value: str) -> str:
    if is_uri(value):
        return _check_uri(value.strip())
    if phone_number(value) is None:
        raise ValueError(
            f"{value[:80]!r} is neither a sip:, sips: or tel: URI nor a phone number "
            "(digits, an optional leading '+')"
        )
    return value.strip()


def _check_hostport(value: str) -> str:
    """host, host:port, [ipv6] or [ipv6]:port, as the UAC will parse it."""
    if value:
        try:
            parse_hostport(value, 5060)
        except SipParseError as error:
            raise ValueError(str(error)) from None
    return value


def _matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if value and not pattern.match(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


def _transport(value: Any) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return Transport.parse(value)  # ValueError names the bad value
    return value


def _codec(value: str) -> str:
    codec = KNOWN_CODECS.get(value.lower())
    if codec is None:
        known = ", ".join(codec.name for codec in DEFAULT_CODECS)
        raise ValueError(f"unknown codec {value!r} (known: {known})")
    return codec.name


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number of seconds")
    return value


def _none_is_empty(value: Any) -> Any:
    return "" if value is None else value


Text = Annotated[str, BeforeValidator(_none_is_empty), Field(strict=True,
                 max_length=MAX_TEXT_LENGTH), AfterValidator(_no_control)]
ShortText = Annotated[Text, Field(max_length=128)]
IdText = Annotated[Text, Field(max_length=MAX_ID_LENGTH)]
UriText = Annotated[Text, Field(max_length=MAX_URI_LENGTH), AfterValidator(_check_uri)]
Seconds = Annotated[float, Field(strict=True, gt=0, le=MAX_TIMEOUT_SECONDS,
                    description="seconds"), AfterValidator(_finite)]
StrictInt = Annotated[int, Field(strict=True)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HistoryInfo(_Entry):
    """One History-Info entry (RFC 7044)."""

    uri: Annotated[UriText, AfterValidator(_not_blank)]
    index: Annotated[Text, AfterValidator(_not_blank)]
    display_name: Text = ""
    reason: Text = ""
    rc: Text = ""
    mp: Text = ""
    np: Text = ""

    def to_sip(self) -> HistoryInfoEntry:
        return HistoryInfoEntry(**self.model_dump())


class DiversionEntry(_Entry):
    """One Diversion header (RFC 5806)."""

    uri: Annotated[UriText, AfterValidator(_not_blank)]
    display_name: Text = ""
    reason: Text = "unknown"
    counter: Annotated[StrictInt, Field(ge=0, le=1000)] | None = None
    limit: Annotated[StrictInt, Field(ge=0, le=1000)] | None = None
    privacy: Text = ""
    screen: Text = ""

    def to_sip(self) -> Diversion:
        return Diversion(**self.model_dump())


class DialMessage(BaseModel):
    """A dial request as a queue message (version 1). Only `correlation_id`, `trunk` and `to`
    are required; every other field has the default the trunk configuration fills in."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, title="outbound dial message",
        json_schema_extra={"$id": "https://outbound.example/dial-message.schema.json"},
    )

    version: Literal[1] = Field(
        1, description="message format version; absent means 1")
    correlation_id: Annotated[IdText, AfterValidator(_not_blank)] = Field(
        description="the scheduler's id: one leg, one CDR and one terminal event per value",
        json_schema_extra={"minLength": 1})
    trunk: Annotated[Text, Field(max_length=64, pattern=TRUNK_PATTERN)] = Field(
        description="the trunk (and worker queue) to dial through",
        json_schema_extra={"pattern": TRUNK_PATTERN})
    to: Annotated[Text, Field(max_length=MAX_URI_LENGTH), AfterValidator(_not_blank),
                  AfterValidator(_check_target)] = Field(
        validation_alias=AliasChoices("to", "request_uri"),
        description="a sip:, sips: or tel: URI, or a phone number the worker puts at the "
                    "trunk's domain",
        json_schema_extra={"minLength": 1})
    not_after: AwareDatetime | None = Field(
        None, description="ISO 8601 with an offset; a worker taking the message later ends "
                          "it as 'expired' without dialling")
    scenario: Scenario = Scenario.CAMPAIGN
    script_id: IdText = ""
    campaign_id: IdText = ""
    signaling_addr: Annotated[Text, Field(max_length=300), AfterValidator(_check_hostport)] = (
        Field("", description="host[:port] of the next hop; empty: the trunk's proxy"))
    transport: Annotated[Transport | None, BeforeValidator(_transport)] = None
    caller_user: Annotated[ShortText, _matching(_SIP_USER, "a SIP user part")] = ""
    caller_display_name: ShortText = ""
    asserted_identity_uri: UriText = Field("", description="P-Asserted-Identity URI")
    asserted_identity_display_name: ShortText = ""
    privacy_tokens: Annotated[
        tuple[Annotated[Text, Field(max_length=32), AfterValidator(_not_blank),
                        _matching(_TOKEN, "a Privacy token (RFC 3323)")], ...],
        Field(max_length=MAX_LIST_LENGTH),
    ] = ()
    history_info: Annotated[tuple[HistoryInfo, ...], Field(max_length=MAX_LIST_LENGTH)] = ()
    diversion: Annotated[tuple[DiversionEntry, ...], Field(max_length=MAX_LIST_LENGTH)] = ()
    identity_header: Annotated[Text, Field(max_length=MAX_SDP_LENGTH)] = Field(
        "", description="RFC 8224 Identity value, sent verbatim")
    stir_attest: Literal["", "A", "B", "C"] = Field(
        "", description="STIR/SHAKEN attestation of this call (RFC 8588); empty: the trunk's "
                        "stir_attest; ignored by a trunk that does not sign")
    codecs: Annotated[
        tuple[Annotated[Text, Field(max_length=32), AfterValidator(_codec)], ...],
        Field(max_length=MAX_LIST_LENGTH),
    ] = Field((), description="codec names in order of preference; empty: the trunk's")
    offer_srtp: Annotated[bool, Field(strict=True)] = False
    rtp_port: Annotated[StrictInt, Field(ge=0, le=65535)] = 0
    call_id: Annotated[IdText, _matching(_CALL_ID, "a Call-ID (RFC 3261 word)")] = ""
    sdp_body: Annotated[str, Field(strict=True, max_length=MAX_SDP_LENGTH)] = ""
    ring_timeout: Seconds | None = None
    max_duration: Seconds | None = Field(
        None, description="seconds after answer until BYE; the trunk's maximum is a ceiling")
    session_expires: Annotated[
        StrictInt, Field(ge=MIN_SESSION_EXPIRES, le=int(MAX_TIMEOUT_SECONDS))] | None = None
    # Trunk groups (docs/routing.md); optional, so version 1 messages without them still mean
    # what they meant: one attempt on `trunk`.
    route: Annotated[Text, Field(max_length=64), _matching(re.compile(TRUNK_PATTERN),
                                                           "a trunk group name")] = Field(
        "", description="a [groups.NAME] of the trunks file that holds `trunk`: after a "
                        "network or capacity failure the worker re-dials on the group's next "
                        "trunk; empty: `trunk` only")
    attempt: Annotated[StrictInt, Field(ge=1, le=MAX_LIST_LENGTH)] = Field(
        1, description="which attempt of this correlation_id this message is (set by the "
                       "worker when it hands a call to the next trunk)")
    tried: Annotated[
        tuple[Annotated[Text, Field(max_length=64), AfterValidator(_not_blank)], ...],
        Field(max_length=MAX_LIST_LENGTH),
    ] = Field((), description="trunks this correlation_id already tried (set by the worker)")

    @field_validator("sdp_body")
    @classmethod
    def _sdp_without_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("contains NUL")
        return value

    # --- what the rest of the code reads -------------------------------------------------

    @property
    def request_uri(self) -> str:
        """`to`, which is a URI once the worker resolved it (`with_request_uri`)."""
        return self.to

    def with_request_uri(self, uri: str) -> DialMessage:
        return self.model_copy(update={"to": _check_uri(uri)})

    def expired(self, now: float) -> bool:
        return self.not_after is not None and self.not_after.timestamp() < now

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values; `validate_dial_fields(message.to_json()) == message`."""
        return self.model_dump(mode="json")

    def to_dial_request(
        self, *, signaling_addr: str = "", credentials: Credentials | None = None
    ) -> DialRequest:
        """The sipstack request (the only place one is built from a message). `signaling_addr`
        (the trunk's proxy) applies when the message named none; credentials come from the
        trunk configuration, never from a message."""
        target = DialTarget(
            request_uri=self.to,
            signaling_addr=self.signaling_addr or signaling_addr,
            caller_user=self.caller_user,
            caller_display_name=self.caller_display_name,
            transport=self.transport,
        )
        return DialRequest(
            target=target, scenario=self.scenario, correlation_id=self.correlation_id,
            script_id=self.script_id, trunk=self.trunk, caller_user=self.caller_user,
            caller_display_name=self.caller_display_name,
            asserted_identity_uri=self.asserted_identity_uri,
            asserted_identity_display_name=self.asserted_identity_display_name,
            privacy_tokens=self.privacy_tokens,
            history_info=tuple(entry.to_sip() for entry in self.history_info),
            diversion=tuple(entry.to_sip() for entry in self.diversion),
            rtp_port=self.rtp_port,
            codecs=tuple(KNOWN_CODECS[name.lower()] for name in self.codecs),
            offer_srtp=self.offer_srtp, call_id=self.call_id, sdp_body=self.sdp_body,
            identity_header=self.identity_header, ring_timeout=self.ring_timeout,
            max_duration=self.max_duration, session_expires=self.session_expires,
            credentials=credentials,
        )


def _location(loc: tuple[int | str, ...]) -> str:
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "request"


def _problem(error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        return "missing"
    if kind == "extra_forbidden":
        return "unknown field"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def field_errors(error: ValidationError) -> dict[str, str]:
    """Each bad field (dotted, with list positions) -> what is wrong with it."""
    errors: dict[str, str] = {}
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if not str(part).startswith("function-"))
        errors.setdefault(_location(loc), _problem(item))
    return errors


def parse_dial_message(data: Mapping[str, Any] | DialMessage) -> DialMessage:
    """Validate a decoded message; InvalidDialRequest names every bad field."""
    if isinstance(data, DialMessage):
        return data
    if not isinstance(data, Mapping):
        raise InvalidDialRequest({"request": f"must be an object, got {type(data).__name__}"})
    try:
        return DialMessage.model_validate(dict(data))
    except ValidationError as error:
        raise InvalidDialRequest(field_errors(error)) from None


def parse_dial_json(raw: bytes | str) -> DialMessage:
    """Validate a message body as it came off the queue (JSON text)."""
    try:
        return DialMessage.model_validate_json(raw)
    except ValidationError as error:
        raise InvalidDialRequest(field_errors(error)) from None


def message_schema() -> dict[str, Any]:
    """The JSON Schema published at docs/dial-message.schema.json."""
    schema = DialMessage.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


__all__ = [
    "MESSAGE_VERSION", "DialMessage", "DiversionEntry", "HistoryInfo", "InvalidDialRequest",
    "field_errors", "message_leg_id", "message_schema", "parse_dial_json", "parse_dial_message",
]


_LEG_NAMESPACE = uuid.UUID("6f1f4d7e-0b7e-4c38-9a52-0d1a3c1e8b11")


def message_leg_id(trunk: str, correlation_id: str) -> uuid.UUID:
    """The leg id of a dial message: the same (trunk, correlation_id) always names the same
    leg row, so a repeated message can never store a second leg once the first has ended."""
    return uuid.uuid5(_LEG_NAMESPACE, f"{trunk}\x00{correlation_id}")
