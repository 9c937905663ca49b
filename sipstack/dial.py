"""What a caller asks for when it dials: the target, the caller identity and the offer."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from sipstack.headers.history import Diversion, HistoryInfoEntry
from sipstack.sdp import Codec
from sipstack.transport import Transport


class Scenario(StrEnum):
    CAMPAIGN = "campaign"
    TRANSFER_AGENT = "transfer_agent"
    CALLBACK = "callback"
    MANUAL = "manual"


@dataclass(frozen=True, slots=True, kw_only=True)
class DialTarget:
    """The next SIP hop: the Request-URI and the proxy or UAS to send the INVITE to."""

    request_uri: str
    signaling_addr: str  # "host:port", "[v6]:port" or "host" (default port by transport)
    caller_user: str = ""
    caller_display_name: str = ""
    transport: Transport | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """Digest credentials for 401/407 challenges; realm None answers any realm."""

    username: str
    password: str = field(repr=False)
    realm: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DialRequest:
    target: DialTarget
    scenario: Scenario = Scenario.CAMPAIGN
    correlation_id: str = ""
    script_id: str = ""
    trunk: str = ""
    caller_user: str = ""
    caller_display_name: str = ""
    asserted_identity_uri: str = ""
    asserted_identity_display_name: str = ""
    privacy_tokens: tuple[str, ...] = ()
    history_info: tuple[HistoryInfoEntry, ...] = ()
    diversion: tuple[Diversion, ...] = ()
    rtp_port: int = 0  # 0: the core's configured default
    codecs: tuple[Codec, ...] = ()  # empty: sipstack.sdp.DEFAULT_CODECS
    offer_srtp: bool = False
    call_id: str = ""  # pre-allocated Call-ID; empty: generated at dial time
    sdp_body: str = ""  # verbatim offer, bypasses SDP generation
    identity_header: str = ""  # RFC 8224 Identity value, sent verbatim
    ring_timeout: float | None = None  # seconds until we CANCEL an unanswered INVITE
    max_duration: float | None = None  # seconds after answer until we BYE
    session_expires: int | None = None  # RFC 4028 interval to offer; None: core default
    credentials: Credentials | None = None
    udp_only: bool = False  # never move a large request to TCP (RFC 3261 §18.1.1)
